//! Lifecycle: a reboot simulated in a test host namespace, containers that restart in a new
//! namespace or die without a detach, objects left behind netpath's back, and re-attaching.
use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use netpath_tests::{
    OUTSIDE_ADDR, Topology, UPLINK_ADDR, fetch, in_netns, ip_of, is_mount_point, reboot_host, serve_once,
};
use serde_json::Value;

fn exit_code(t: &Topology, args: &[&str]) -> (i32, String) {
    let out = t.netpath(args);
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).trim().to_string())
}

#[test]
fn after_a_reboot_restore_brings_every_network_back() {
    let mut t = Topology::with_outside("rbt");
    t.network("web", &["--subnet", "10.81.0.0/24"]);
    t.network("db", &["--subnet", "10.82.0.0/24", "--internal"]);
    let a = t.container("a", "web", &["-p", "8080:80"]);
    let b = t.container("b", "web", &[]);
    let c = t.container("c", "db", &[]);
    let d = t.container("d", "db", &[]);
    assert!(t.ping("b", &ip_of(&a).to_string(), 1));

    reboot_host(&t);
    // Container b restarted: its old namespace is gone, a new one has its name.
    netpath_tests::run(Command::new("ip").args(["netns", "del", &format!("{}-b", t.prefix)]));
    netpath_tests::run(Command::new("ip").args(["netns", "add", &format!("{}-b", t.prefix)]));
    t.exec("b", &["ip", "link", "set", "lo", "up"]);

    // Before restore, commands say what to do instead of failing obscurely.
    let path_b = t.ns_path("b");
    let (code, err) = exit_code(&t, &["attach", "--network", "web", "--netns", &path_b, "--id", "b"]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("run `netpath restore`"), "{err}");
    let (code, err) = exit_code(&t, &["network", "create", "web", "--subnet", "10.81.0.0/24"]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("run `netpath restore`"), "{err}");
    let (code, err) = exit_code(&t, &["stats"]);
    assert_eq!(code, 5, "{err}");

    let report = t.np_json(&["restore"]);
    let action =
        |id: &str| report["endpoints"].as_array().unwrap().iter().find(|e| e["id"] == id).unwrap()["action"].clone();
    assert_eq!(action("a"), "rewired", "{report}");
    assert_eq!(action("c"), "rewired", "{report}");
    assert_eq!(action("d"), "rewired", "{report}");
    assert_eq!(action("b"), "released", "{report}");
    for net in report["networks"].as_array().unwrap() {
        assert!(net["created"].as_array().unwrap().iter().any(|c| c.as_str().unwrap().starts_with("created bridge")));
    }
    // The bridge forwards again (bpf_fib_lookup needs it), with the host's ip_forward off.
    assert_eq!(t.exec("host", &["cat", "/proc/sys/net/ipv4/conf/np-web/forwarding"]).trim(), "1");

    // The restarted container re-attaches by its id and gets its address back.
    let b2 = t.np_json(&["attach", "--network", "web", "--netns", &path_b, "--id", "b"]);
    assert_eq!(b2["ip"], b["ip"]);
    assert_eq!(t.np_json(&["endpoint", "inspect", "a"])["ip"], a["ip"]);

    // Container to container, egress, isolation, and a published port from the outside.
    assert!(t.ping("b", &ip_of(&a).to_string(), 2), "c2c after restore");
    assert!(t.ping("a", OUTSIDE_ADDR, 2), "egress after restore");
    // The internal network works (its endpoints talk to each other) and stays internal: what
    // it may not reach is refused by the datapath, counted under its reason.
    assert!(t.ping("c", &ip_of(&d).to_string(), 2), "c2c on the internal network after restore");
    assert!(t.ping("d", &ip_of(&c).to_string(), 2), "c2c on the internal network after restore");
    let (denied, policy) = (t.drop_count("egress-denied"), t.drop_count("policy"));
    assert!(t.no_reply("c", OUTSIDE_ADDR, 1), "an internal network stays internal");
    assert!(t.drop_count("egress-denied") > denied, "c's egress was not refused as egress-denied");
    assert!(t.no_reply("a", &ip_of(&c).to_string(), 1), "networks stay isolated");
    assert!(t.drop_count("policy") > policy, "a's ping to c was not refused as policy");
    let server = serve_once(&t, "a", 80);
    let to: SocketAddr = format!("{UPLINK_ADDR}:8080").parse().unwrap();
    assert_eq!(fetch(&t, "outside", to), "hello from a");
    server.join().unwrap();

    // Restore is idempotent: a second run finds everything in place.
    let again = t.np_json(&["restore"]);
    for ep in again["endpoints"].as_array().unwrap() {
        assert_eq!(ep["action"], "intact", "{again}");
    }
    for net in again["networks"].as_array().unwrap() {
        assert_eq!(net["created"], Value::Array(vec![]), "{again}");
    }
    assert!(t.ping("b", &ip_of(&a).to_string(), 1));
    t.teardown();
}

#[test]
fn reattach_is_honest_about_namespaces_veths_and_differences() {
    let mut t = Topology::new("reat");
    t.network("web", &["--subnet", "10.83.0.0/24"]);
    let a = t.container("a", "web", &["-p", "8090:80"]);
    t.container("peer", "web", &[]);
    let path = t.ns_path("a");
    let attach = |extra: &[&str]| {
        let mut args = vec!["attach", "--network", "web", "--netns", &path, "--id", "a"];
        args.extend(extra);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    fn args(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    // Same id, same live namespace, same request: the same endpoint.
    assert_eq!(t.np_json(&args(&attach(&["-p", "8090:80"]))), a);

    // A request that differs is refused, naming the difference, and changes nothing.
    for (extra, expected) in [
        (vec!["-p", "8090:80", "--ip", "10.83.0.50"], "is attached with --ip 10.83.0.2, not 10.83.0.50"),
        (vec!["-p", "8090:80", "--mac", "02:00:00:00:00:99"], "--mac 02:4e:0a:53:00:02, not 02:00:00:00:00:99"),
        (vec!["-p", "8091:80"], "-p 0.0.0.0:8090->80/tcp, not -p 0.0.0.0:8091->80/tcp"),
        (vec![], "-p 0.0.0.0:8090->80/tcp, not no -p"),
    ] {
        let err = t.np_err(&args(&attach(&extra)));
        assert!(err.contains(expected) && err.ends_with("detach it first to change it"), "{extra:?}: {err}");
    }
    t.network("other", &["--subnet", "10.84.0.0/24"]);
    let err = t.np_err(&["attach", "--network", "other", "--netns", &path, "--id", "a", "-p", "8090:80"]);
    assert!(err.contains("network 'web', not 'other'"), "{err}");
    assert_eq!(t.np_json(&["endpoint", "inspect", "a"]), a);

    // The veth deleted behind netpath's back: the same attach wires it again.
    let host_veth = a["host_veth"].as_str().unwrap();
    t.exec("host", &["ip", "link", "del", host_veth]);
    assert!(t.link("a", "eth0").is_none());
    assert_eq!(t.np_json(&args(&attach(&["-p", "8090:80"]))), a);
    assert!(t.ping("peer", &ip_of(&a).to_string(), 1), "rewired after the veth was deleted");

    // The container restarted in a new namespace: rebuilt there, with its address.
    let new_path = t.netns("a2");
    let moved = t.np_json(&["attach", "--network", "web", "--netns", &new_path, "--id", "a", "-p", "8090:80"]);
    assert_eq!(moved["ip"], a["ip"]);
    assert_eq!(moved["netns"], new_path.as_str());
    assert!(t.link("a", "eth0").is_none(), "the old namespace lost its interface");
    assert!(t.link("a2", "eth0").is_some());
    assert!(t.ping("peer", &ip_of(&a).to_string(), 1), "rewired in the new namespace");
    assert_eq!(t.map_entries("ENDPOINTS").len(), 2);
    t.teardown();
}

#[test]
fn dead_namespaces_and_orphans_are_collected() {
    let mut t = Topology::new("gc");
    t.network("web", &["--subnet", "10.85.0.0/24"]);
    let dead = t.container("dead", "web", &["-p", "8095:80"]);
    let live = t.container("live", "web", &[]);
    assert!(t.ping("dead", live["ip"].as_str().unwrap(), 3));
    assert!(t.endpoint_stat("dead", "tx_packets") >= 3);

    // The namespace dies without a detach: `gc` releases its address, port and entries,
    // though its veth (and so its ifindex) went first. The kernel hands the dead namespace's
    // inode number to the next namespace at once: the endpoint must not be taken for alive in
    // that stranger. A namespace of another test may take the number first: then the
    // container restarts (attached again, in a new namespace) and dies again, until one of
    // this test's strangers gets it.
    let inode = |path: &str| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).unwrap());
    let mut dead_ns = "dead".to_string();
    let mut reused = false;
    for attempt in 0..8 {
        let dead_inode = inode(&t.ns_path(&dead_ns));
        netpath_tests::run(Command::new("ip").args(["netns", "del", &format!("{}-{dead_ns}", t.prefix)]));
        reused = (0..20).any(|i| {
            std::thread::sleep(Duration::from_millis(100));
            inode(&t.netns(&format!("stranger{attempt}x{i}"))) == dead_inode
        });
        if reused {
            eprintln!("the dead namespace's inode number went to a stranger after {attempt} restart(s)");
            break;
        }
        dead_ns = format!("dead{attempt}");
        let path = t.netns(&dead_ns);
        let again = t.np_json(&["attach", "--network", "web", "--netns", &path, "--id", "dead", "-p", "8095:80"]);
        assert_eq!(again["ip"], dead["ip"], "the restarted container gets its address back");
    }
    assert!(reused, "in 8 tries no namespace of this test got the inode number of the dead one");
    // An orphan: an ENDPOINTS entry that no row owns (orphan links: see
    // `gc_removes_only_the_links_netpath_made`).
    let dir = t.datapath_dir();
    let out = Command::new("bpftool")
        .args(["map", "update", "pinned"])
        .arg(dir.join("ENDPOINTS"))
        .args(["key", "10", "85", "0", "99", "value"])
        .args(["1", "0", "0", "0", "1", "0", "0", "0", "2", "0", "0", "0", "0", "1", "0", "0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let report = t.np_json(&["gc"]);
    assert_eq!(report["released_endpoints"], serde_json::json!(["dead"]), "{report}");
    assert_eq!(report["map_entries"], serde_json::json!(["ENDPOINTS 10.85.0.99"]), "{report}");
    assert_eq!(t.np_json(&["port", "ls"]), Value::Array(vec![]));
    assert_eq!(t.map_entries("PORTMAP").len(), 0);
    assert_eq!(t.map_entries("ENDPOINTS").len(), 1);
    // The freed address and port are handed out again; a second gc finds nothing.
    let again = t.container("again", "web", &["-p", "8095:80"]);
    assert_eq!(again["ip"], dead["ip"]);
    // It takes the dead endpoint's counter slot too, and none of its counts.
    for field in ["tx_packets", "tx_bytes", "rx_packets", "rx_bytes"] {
        assert_eq!(t.endpoint_stat("again", field), 0, "{field}");
    }
    let second = t.np(&["gc"]);
    assert_eq!(second.trim(), "nothing to collect");

    // Without gc, an attach that needs nothing the dead endpoint holds leaves it for gc; the
    // one that asks for its port takes the port over (every kind of collision:
    // `a_dead_endpoint_gives_up_what_the_next_attach_needs`).
    kill_container(&t, "again", &again);
    t.container("third", "web", &[]);
    assert_eq!(endpoint_ids(&t), ["again", "live", "third"]);
    t.container("fourth", "web", &["-p", "8095:80"]);
    assert_eq!(endpoint_ids(&t), ["fourth", "live", "third"]);
    t.teardown();
}

/// The ids of every endpoint row, sorted.
fn endpoint_ids(t: &Topology) -> Vec<String> {
    let rows = t.np_json(&["endpoint", "ls"]);
    let ids: BTreeSet<String> = rows.as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().into()).collect();
    ids.into_iter().collect()
}

/// Deletes container `name`'s namespace without a detach. The kernel destroys a deleted
/// namespace (and the veth with it) in the background: this returns once it has.
fn kill_container(t: &Topology, name: &str, ep: &Value) {
    netpath_tests::run(Command::new("ip").args(["netns", "del", &format!("{}-{name}", t.prefix)]));
    let veth = ep["host_veth"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.link("host", veth).is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(t.link("host", veth).is_none(), "the veth of a deleted namespace outlived it by 10 s");
}

/// What an endpoint that died without a detach holds (its address, the last address of its
/// network, its name, a name asked for as an alias, its published port) goes to the first
/// attach that asks for it, without `gc`: no container fails for one that died. An attach
/// that needs none of it leaves the dead endpoint for `gc`: attaches do not look for the dead,
/// so that one costs the same whatever the number of endpoints.
#[test]
fn a_dead_endpoint_gives_up_what_the_next_attach_needs() {
    let mut t = Topology::new("take");
    t.network("web", &["--subnet", "10.38.0.0/24"]);
    // One address: the gateway takes .1.
    t.network("tiny", &["--subnet", "10.38.1.0/30"]);
    t.container("live", "web", &[]);

    let dead = t.container("dead", "web", &[]);
    kill_container(&t, "dead", &dead);
    t.container("bystander", "web", &[]);
    assert!(endpoint_ids(&t).contains(&"dead".to_string()), "an attach that collided with nothing reaped");
    let ip = dead["ip"].as_str().unwrap();
    assert_eq!(t.container("byip", "web", &["--ip", ip])["ip"], ip);
    assert!(!endpoint_ids(&t).contains(&"dead".to_string()));

    // Each kind of collision, each with a dead endpoint of its own: a reap releases every
    // dead endpoint at once.
    let cases: [(&str, &str, &[&str], &[&str]); 6] = [
        ("name", "web", &["--name", "db"], &["--name", "db"]),
        ("alias", "web", &["--name", "cache"], &["--alias", "cache"]),
        ("named", "web", &["--alias", "queue"], &["--name", "queue"]),
        ("port", "web", &["-p", "8096:80"], &["-p", "8096:80"]),
        ("mac", "web", &["--mac", "02:00:00:00:38:01"], &["--mac", "02:00:00:00:38:01"]),
        ("pool", "tiny", &[], &[]),
    ];
    for (tag, network, held, asked) in cases {
        let (dead_id, taker) = (format!("dead-{tag}"), format!("took-{tag}"));
        let dead = t.container(&dead_id, network, held);
        kill_container(&t, &dead_id, &dead);
        let took = t.container(&taker, network, asked);
        let ids = endpoint_ids(&t);
        assert!(ids.contains(&taker) && !ids.contains(&dead_id), "{tag}: {ids:?}");
        if network == "tiny" {
            assert_eq!(took["ip"], dead["ip"], "the pool's one address");
        }
    }
    let ports = t.np_json(&["port", "ls"]);
    assert_eq!(ports.as_array().unwrap().len(), 1, "{ports}");
    assert!(ports.to_string().contains("took-port"), "{ports}");
    t.teardown();
}

/// `gc` deletes a link only when netpath made it: named `np-*`/`npv*`, marked as netpath's
/// (`IFLA_IFALIAS`), of the kind its name claims, and for a veth on a netpath bridge or none.
/// Links an administrator made with those names, with a forged mark on another kind of link
/// or on another bridge, survive; a network and an endpoint whose rows were lost (made under
/// a state directory that is then removed) are still collected.
#[test]
fn gc_removes_only_the_links_netpath_made() {
    let mut t = Topology::new("gcmark");
    t.network("web", &["--subnet", "10.87.0.0/24"]);
    t.container("a", "web", &[]);
    let b = t.container("b", "web", &[]);
    let lost_state = t.run_dir.join("lost-state");
    let lost_ns = t.netns("lost");
    let in_lost = |args: &[&str]| {
        let out = Command::new(netpath_tests::netpath_bin())
            .arg("--state-dir")
            .arg(&lost_state)
            .arg("--bpffs")
            .arg(t.pin_root())
            .arg("--host-netns")
            .arg(t.ns_path("host"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    in_lost(&["network", "create", "gone", "--subnet", "10.87.1.0/24"]);
    let leaked = in_lost(&["attach", "--network", "gone", "--netns", &lost_ns, "--id", "leaked", "--format", "json"]);
    let leaked: Value = serde_json::from_slice(&leaked).unwrap();
    std::fs::remove_dir_all(&lost_state).unwrap();
    let leaked_veth = leaked["host_veth"].as_str().unwrap().to_string();

    let ip = |args: &[&str]| t.exec("host", &[&["ip", "link"][..], args].concat());
    ip(&["add", "np-admin", "type", "bridge"]);
    ip(&["add", "npvadmin0", "type", "veth", "peer", "name", "admpeer0"]);
    ip(&["add", "npvadmin1", "type", "veth", "peer", "name", "admpeer1"]);
    ip(&["set", "npvadmin1", "alias", "netpath:endpoint:forged", "master", "np-admin"]);
    ip(&["add", "npvdummy", "type", "ifb"]);
    ip(&["set", "npvdummy", "alias", "netpath:endpoint:forged"]);
    let lookalikes = ["np-admin", "npvadmin0", "npvadmin1", "npvdummy"];

    let report = t.np_json(&["gc"]);
    let removed: BTreeSet<&str> = report["links"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert_eq!(removed, BTreeSet::from(["np-gone", leaked_veth.as_str()]), "{report}");
    for name in lookalikes {
        assert!(t.link("host", name).is_some(), "gc deleted {name}, which netpath did not make");
    }
    assert!(t.ping("a", b["ip"].as_str().unwrap(), 2), "the network gc kept still carries traffic");

    // Links an older release made carry no mark: `restore` marks those its rows name.
    ip(&["set", "np-web", "alias", ""]);
    ip(&["set", b["host_veth"].as_str().unwrap(), "alias", ""]);
    t.np(&["restore"]);
    assert_eq!(t.link("host", "np-web").unwrap()["ifalias"], "netpath:network:web");
    assert_eq!(t.link("host", b["host_veth"].as_str().unwrap()).unwrap()["ifalias"], "netpath:endpoint:b");
    for name in lookalikes {
        ip(&["del", name]);
    }
    t.teardown();
}

/// netpath in the topology's host namespace and state, with another pin root.
fn with_pins(t: &Topology, pins: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(netpath_tests::netpath_bin())
        .arg("--state-dir")
        .arg(t.state_dir())
        .arg("--bpffs")
        .arg(pins)
        .arg("--host-netns")
        .arg(t.ns_path("host"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_dedicated_bpffs_mount_root_works_as_the_pin_root() {
    let mut t = Topology::new("bpfroot");
    let root = t.run_dir.join("mnt");
    std::fs::create_dir_all(&root).unwrap();
    let path = t.netns("a");
    // A bpffs mounted without a mode is world-writable (sticky, 1777): refused until only
    // root may write it.
    netpath_tests::run(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&root));
    let refused = with_pins(&t, &root, &["network", "create", "web", "--subnet", "10.86.0.0/24"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains(&format!("pin root {} is writable by group or others", root.display())), "{err}");
    netpath_tests::run(Command::new("chmod").arg("0700").arg(&root));
    let np = |args: &[&str]| {
        let out = with_pins(&t, &root, args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    np(&["network", "create", "web", "--subnet", "10.86.0.0/24"]);
    np(&["attach", "--network", "web", "--netns", &path, "--id", "a"]);
    np(&["detach", "--id", "a"]);
    np(&["network", "rm", "web"]);
    netpath_tests::run(Command::new("umount").arg(&root));

    // A pin root whose parent is not a bpffs gets a bpffs of its own, never the parent's.
    let parent = t.run_dir.join("plain");
    let pins = parent.join("pins");
    std::fs::create_dir_all(&parent).unwrap();
    std::fs::write(parent.join("keep"), "x").unwrap();
    let out = with_pins(&t, &pins, &["network", "create", "w2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(is_mount_point(&pins) && !is_mount_point(&parent));
    assert!(parent.join("keep").exists(), "the parent's content is still visible");
    let out = with_pins(&t, &pins, &["network", "rm", "w2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    netpath_tests::run(Command::new("umount").arg(&pins));
    t.teardown();
}

/// Whoever can write the pin root can swap the programs and maps every container's traffic
/// runs through: one that exists is used only when root owns it and nobody else can write it.
#[test]
fn a_pin_root_another_user_could_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let t = Topology::new("pinown");
    let pins = t.run_dir.join("open").join("pins");
    std::fs::create_dir_all(&pins).unwrap();
    let create = || with_pins(&t, &pins, &["network", "create", "web", "--subnet", "10.86.1.0/24"]);
    let refused = |why: &str| {
        let out = create();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(&format!("pin root {} {why}", pins.display())), "{err}");
        assert!(!is_mount_point(&pins), "nothing was mounted on a refused pin root");
    };
    std::fs::set_permissions(&pins, std::fs::Permissions::from_mode(0o777)).unwrap();
    refused("is writable by group or others (mode 777); run `chmod go-w");
    std::fs::set_permissions(&pins, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&pins, Some(65534), None).unwrap();
    refused("is owned by uid 65534, not root; run `chown root");
    std::os::unix::fs::chown(&pins, Some(0), None).unwrap();
    let out = create();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = with_pins(&t, &pins, &["network", "rm", "web"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    netpath_tests::run(Command::new("umount").arg(&pins));
    t.teardown();
}

/// Directories under the pin root (a bpffs mount root also has `maps.debug`, `progs.debug`).
fn datapath_dirs(t: &Topology) -> usize {
    std::fs::read_dir(t.pin_root()).unwrap().flatten().filter(|e| e.file_type().unwrap().is_dir()).count()
}

#[test]
fn reload_swaps_programs_without_a_gap_and_keeps_conntrack() {
    let mut t = Topology::with_outside("rld");
    t.network("web", &["--subnet", "10.89.0.0/24"]);
    let a = t.container("a", "web", &["-p", "8089:80"]);
    let block = t.tc_blocks()[a["host_veth"].as_str().unwrap()].clone();
    let prog_before = t.block_program(&block);

    // A masqueraded connection opened before the reload.
    let to: SocketAddr = format!("{OUTSIDE_ADDR}:7100").parse().unwrap();
    let listener = in_netns(&t.ns_path("outside"), || TcpListener::bind(to).unwrap());
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        for _ in 0..2 {
            conn.read_exact(&mut buf).unwrap();
            conn.write_all(&buf).unwrap();
        }
    });
    let mut conn = in_netns(&t.ns_path("a"), || TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap());
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 5];
    conn.write_all(b"first").unwrap();
    conn.read_exact(&mut buf).unwrap();
    let tx_before = t.endpoint_stat("a", "tx_packets");

    // A UDP request every 5 ms through the masquerade, from before the reload starts until
    // after it has returned: none may go unanswered.
    let echo_addr: SocketAddr = format!("{OUTSIDE_ADDR}:7101").parse().unwrap();
    let echo = in_netns(&t.ns_path("outside"), || UdpSocket::bind(echo_addr).unwrap());
    echo.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let client = in_netns(&t.ns_path("a"), || UdpSocket::bind("0.0.0.0:0").unwrap());
    client.connect(echo_addr).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let reloaded: Arc<Mutex<Option<Instant>>> = Arc::default();
    let (echoing, pinging) = (Arc::new(AtomicBool::new(true)), reloaded.clone());
    let echo_running = echoing.clone();
    let echoer = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while echo_running.load(Ordering::Relaxed) {
            if let Ok((n, from)) = echo.recv_from(&mut buf) {
                echo.send_to(&buf[..n], from).unwrap();
            }
        }
    });
    // Exchanges (answered or not) with their times; it goes on 200 ms past the reload's end.
    let pinger = std::thread::spawn(move || {
        let mut exchanges: Vec<(Instant, bool)> = Vec::new();
        for seq in 0u32.. {
            if pinging.lock().unwrap().is_some_and(|done| done.elapsed() > Duration::from_millis(200)) {
                break;
            }
            let sent = Instant::now();
            client.send(&seq.to_be_bytes()).unwrap();
            let mut buf = [0u8; 4];
            // A late answer to an earlier request is skipped, not taken for this one's.
            let answered = loop {
                match client.recv(&mut buf) {
                    Ok(4) if buf == seq.to_be_bytes() => break true,
                    Ok(_) => continue,
                    Err(_) => break false,
                }
            };
            exchanges.push((sent, answered));
            std::thread::sleep(Duration::from_millis(5));
        }
        exchanges
    });
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let report = t.np_json(&["datapath", "reload"]);
    *reloaded.lock().unwrap() = Some(Instant::now());
    let exchanges = pinger.join().unwrap();
    echoing.store(false, Ordering::Relaxed);
    echoer.join().unwrap();
    let done = reloaded.lock().unwrap().unwrap();
    let lost = exchanges.iter().filter(|(_, answered)| !answered).count();
    let during = exchanges.iter().filter(|(at, _)| *at >= started && *at <= done).count();
    eprintln!("{} exchanges, {during} while the reload ran ({:?}), {lost} unanswered", exchanges.len(), done - started);
    assert_eq!(lost, 0, "{lost} of {} requests went unanswered across the reload", exchanges.len());
    assert!(exchanges.first().is_some_and(|(at, _)| *at < started), "the requests began after the reload did");
    assert!(exchanges.last().is_some_and(|(at, _)| *at > done), "the requests stopped before the reload returned");
    assert!(during > 0, "no request was sent while the reload ran");

    assert!(report["kept_maps"].as_array().unwrap().iter().any(|m| m == "CT"), "{report}");
    // Every map but the tail-call table, which holds the programs of its own build.
    assert_eq!(report["new_maps"], serde_json::json!(["TAIL_CALLS"]), "the same build keeps the rest: {report}");
    assert_eq!(report["updated_links"].as_array().unwrap().len(), 6, "a's veth, the uplink, 4 cgroup links: {report}");
    assert_ne!(t.block_program(&block), prog_before, "the endpoint's block runs the new program");
    // The connection goes on (its conntrack entry survived) and the counters were kept.
    conn.write_all(b"again").unwrap();
    conn.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"again");
    server.join().unwrap();
    assert!(t.endpoint_stat("a", "tx_packets") > tx_before, "counters kept across the reload");
    assert_eq!(datapath_dirs(&t), 1, "only the new datapath is left");

    // A reload killed half-way leaves the running datapath serving; the next one finishes.
    let out = t.netpath_cmd(&["datapath", "reload"]).env("NETPATH_FAULT_AT", "reload:staged").output().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&out.status), Some(libc::SIGKILL));
    assert!(t.ping("a", OUTSIDE_ADDR, 1), "the old datapath still serves");
    assert_eq!(datapath_dirs(&t), 2, "the killed reload's staging directory");
    let gc = t.np_json(&["gc"]);
    assert_eq!(gc["datapath_dirs"].as_array().unwrap().len(), 1, "{gc}");
    assert_eq!(datapath_dirs(&t), 1);
    t.np(&["datapath", "reload"]);
    assert_eq!(datapath_dirs(&t), 1);
    assert!(t.ping("a", OUTSIDE_ADDR, 1));
    t.teardown();
}

#[test]
fn the_uplink_is_the_lowest_metric_default_route_of_the_main_table() {
    let t = Topology::new("upl");
    for (name, addr) in [("npupa", "10.97.1.1/24"), ("npupb", "10.97.2.1/24")] {
        t.exec("host", &["ip", "link", "add", name, "type", "veth", "peer", "name", &format!("{name}p")]);
        t.exec("host", &["ip", "addr", "add", addr, "dev", name]);
        t.exec("host", &["ip", "link", "set", name, "up"]);
    }
    t.exec("host", &["ip", "route", "add", "default", "dev", "npupa", "metric", "200"]);
    t.exec("host", &["ip", "route", "add", "default", "dev", "npupb", "metric", "100"]);
    // A better default route in another table is not the main table's.
    t.exec("host", &["ip", "route", "add", "default", "dev", "npupa", "metric", "1", "table", "100"]);
    let net = t.network("web", &["--subnet", "10.91.0.0/24"]);
    assert_eq!(net["uplink"], "npupb");
    t.np(&["network", "rm", "web"]);
    for name in ["npupa", "npupb"] {
        t.exec("host", &["ip", "link", "del", name]);
    }
    t.teardown();
}

#[test]
fn a_killed_network_create_is_repaired_by_gc_or_by_creating_it_again() {
    let mut t = Topology::new("netk");
    let path = t.netns("a");
    let create = |step: &str| {
        let out = t
            .netpath_cmd(&["network", "create", "web", "--subnet", "10.92.0.0/24"])
            .env("NETPATH_FAULT_AT", step)
            .output()
            .unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&out.status), Some(libc::SIGKILL), "{step}");
    };
    // Killed with the bridge and the datapath entry made, the row still `creating`.
    create("network:built");
    assert!(t.link("host", "np-web").is_some());
    assert_eq!(t.np_json(&["network", "ls"])[0]["state"], "creating");
    let err = t.np_err(&["attach", "--network", "web", "--netns", &path]);
    assert!(err.contains("is not ready"), "{err}");
    let gc = t.np_json(&["gc"]);
    assert_eq!(gc["abandoned_networks"], serde_json::json!(["web"]), "{gc}");
    assert!(t.link("host", "np-web").is_none());
    assert_eq!(t.map_entries("NETWORKS").len(), 0);

    // Killed again; this time creating it again repairs it without gc.
    create("network:built");
    let net = t.network("web", &["--subnet", "10.92.0.0/24"]);
    assert_eq!(net["state"], "ready");
    assert_eq!(t.map_entries("NETWORKS").len(), 1);
    t.teardown();
}

#[test]
fn restore_turns_bridge_forwarding_back_on_after_ip_forward_is_written() {
    let mut t = Topology::with_outside("fwd");
    t.network("web", &["--subnet", "10.93.0.0/24"]);
    t.container("a", "web", &[]);
    assert!(t.ping("a", OUTSIDE_ADDR, 1));
    // A change of ip_forward sets every interface's forwarding to it (in the test's own
    // namespace): on and off again leaves the bridge not forwarding.
    t.exec("host", &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    t.exec("host", &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
    assert_eq!(t.exec("host", &["cat", "/proc/sys/net/ipv4/conf/np-web/forwarding"]).trim(), "0");
    let report = t.np_json(&["restore"]);
    assert_eq!(report["networks"][0]["created"], serde_json::json!(["turned forwarding on for np-web"]), "{report}");
    assert_eq!(t.exec("host", &["cat", "/proc/sys/net/ipv4/conf/np-web/forwarding"]).trim(), "1");
    assert!(t.ping("a", OUTSIDE_ADDR, 1), "egress after restore");
    t.teardown();
}

/// A bridge whose MAC nobody set takes the lowest of its ports' and changes it when that port
/// comes or goes; the containers would keep sending to the old one, which the bridge no longer
/// takes as its own. netpath's bridges keep theirs: after each detach the bridge has the MAC
/// it was made with, and every container left still reaches the gateway.
#[test]
fn the_gateway_keeps_its_mac_while_containers_come_and_go() {
    let mut t = Topology::new("gwmac");
    t.network("web", &["--subnet", "10.93.9.0/24"]);
    let mac = |t: &Topology| t.link("host", "np-web").expect("bridge")["address"].clone();
    let made_with = mac(&t);
    let names = ["a", "b", "c", "d"];
    for name in names {
        t.container(name, "web", &[]);
        assert_eq!(mac(&t), made_with, "the bridge's MAC after {name} joined");
    }
    for name in names {
        assert!(t.ping(name, "10.93.9.1", 1), "{name} reaches the gateway");
    }
    for (i, gone) in names.iter().enumerate() {
        t.np(&["detach", "--id", gone]);
        assert_eq!(mac(&t), made_with, "the bridge's MAC after {gone} left");
        for left in &names[i + 1..] {
            assert!(t.ping(left, "10.93.9.1", 1), "{left} reaches the gateway after {gone} left");
        }
    }
    t.teardown();
}
