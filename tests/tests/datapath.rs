//! Container-to-container traffic is forwarded by eBPF (`bpf_redirect_peer`), not by the
//! bridge: proven with netpath's own counters and the bridge port's counters.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use netpath_common::names;
use netpath_tests::{OUTSIDE_ADDR, Topology, in_netns, ip_of, pattern};
use serde_json::Value;

const MB: u64 = 1 << 20;

fn tx_bytes(t: &Topology, ns: &str, ifname: &str) -> u64 {
    t.link(ns, ifname).expect("link")["stats64"]["tx"]["bytes"].as_u64().unwrap()
}

fn endpoint_stats<'a>(stats: &'a Value, id: &str) -> &'a Value {
    stats["endpoints"].as_array().unwrap().iter().find(|e| e["id"] == id).expect("endpoint in stats")
}

fn drops(stats: &Value, reason: &str) -> u64 {
    let drop = stats["drops"].as_array().unwrap().iter().find(|d| d["reason"] == reason);
    drop.unwrap_or_else(|| panic!("no drop reason `{reason}` in {stats}"))["packets"].as_u64().unwrap()
}

#[test]
fn tcp_transfer_is_carried_by_ebpf_not_the_bridge() {
    let mut t = Topology::new("tcp");
    t.network("web", &["--subnet", "10.50.0.0/24"]);
    t.container("a", "web", &[]);
    let b = t.container("b", "web", &[]);
    let b_veth = b["host_veth"].as_str().unwrap().to_string();
    let server_addr = SocketAddr::from((ip_of(&b), 5001));
    let listener = in_netns(&t.ns_path("b"), || TcpListener::bind(server_addr).unwrap());
    let client =
        in_netns(&t.ns_path("a"), || TcpStream::connect_timeout(&server_addr, Duration::from_secs(5)).unwrap());
    let bridge_port_before = tx_bytes(&t, "host", &b_veth);

    let total = 50 * MB;
    let receiver = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let (mut got, mut buf, mut want) = (0u64, vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
        loop {
            let n = conn.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            pattern(got, &mut want[..n]);
            assert!(buf[..n] == want[..n], "corrupted data at offset {got}");
            got += n as u64;
        }
        got
    });
    let mut client = client;
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    while sent < total {
        let n = buf.len().min((total - sent) as usize);
        pattern(sent, &mut buf[..n]);
        client.write_all(&buf[..n]).unwrap();
        sent += n as u64;
    }
    drop(client);
    assert_eq!(receiver.join().unwrap(), total, "every byte arrived, in order");

    // The bridge would transmit to b through b's host veth; eBPF hands frames to b's eth0
    // directly, so that port must not have seen the transfer.
    let through_bridge = tx_bytes(&t, "host", &b_veth) - bridge_port_before;
    assert!(through_bridge < MB, "{through_bridge} bytes went through the bridge port");
    let stats = t.np_json(&["stats"]);
    assert!(endpoint_stats(&stats, "a")["tx_bytes"].as_u64().unwrap() >= total);
    assert!(endpoint_stats(&stats, "b")["rx_bytes"].as_u64().unwrap() >= total);
    t.teardown();
}

#[test]
fn udp_and_ping_between_containers() {
    let mut t = Topology::new("udp");
    t.network("web", &["--subnet", "10.51.0.0/24"]);
    let a = t.container("a", "web", &[]);
    let b = t.container("b", "web", &[]);
    let server = in_netns(&t.ns_path("b"), || UdpSocket::bind((ip_of(&b), 5002)).unwrap());
    let client = in_netns(&t.ns_path("a"), || UdpSocket::bind((ip_of(&a), 0)).unwrap());
    server.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        for _ in 0..100 {
            let (n, from) = server.recv_from(&mut buf).unwrap();
            server.send_to(&buf[..n], from).unwrap();
        }
    });
    let mut buf = [0u8; 2048];
    for i in 0..100u32 {
        let msg = format!("datagram {i} {}", "x".repeat(i as usize * 10));
        client.send_to(msg.as_bytes(), (ip_of(&b), 5002)).unwrap();
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], msg.as_bytes());
    }
    echo.join().unwrap();
    assert!(t.ping("a", &ip_of(&b).to_string(), 3));
    let stats = t.np_json(&["stats"]);
    assert!(endpoint_stats(&stats, "b")["rx_packets"].as_u64().unwrap() >= 103);
    assert!(endpoint_stats(&stats, "a")["rx_packets"].as_u64().unwrap() >= 103);

    // The fast path keeps a frame's destination MAC when it is the peer's; one addressed
    // after a stale neighbour entry is readdressed, not lost.
    let stale = ["ip", "neigh", "replace", &ip_of(&b).to_string(), "lladdr", "02:00:00:00:00:99", "dev", "eth0"];
    t.exec("a", &[&stale[..], &["nud", "permanent"]].concat());
    assert!(t.ping("a", &ip_of(&b).to_string(), 2), "a stale neighbour entry broke the path");
    assert_eq!(t.drop_count("mac-spoof"), 0);
    t.teardown();
}

#[test]
fn networks_are_isolated_and_the_drop_is_counted() {
    let mut t = Topology::new("iso");
    t.network("web", &["--subnet", "10.52.0.0/24"]);
    t.network("db", &["--subnet", "10.53.0.0/24"]);
    let a = t.container("a", "web", &[]);
    let c = t.container("c", "db", &[]);
    let before = drops(&t.np_json(&["stats"]), "policy");
    let monitor = t
        .netpath_cmd(&["monitor", "--seconds", "3", "--format", "json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(t.no_reply("a", &ip_of(&c).to_string(), 2), "a reached another network");
    let after = drops(&t.np_json(&["stats"]), "policy");
    assert!(after >= before + 2, "policy drops went from {before} to {after}");
    // `netpath monitor` reports each drop with its reason and addresses.
    let out = String::from_utf8(monitor.wait_with_output().unwrap().stdout).unwrap();
    let events: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(
        events.iter().any(|e| e["reason"] == "policy" && e["source"] == a["ip"] && e["destination"] == c["ip"]),
        "no policy drop event in {out}"
    );
    t.teardown();
}

/// The tc blocks the host namespace's `clsact` qdiscs are bound to, one per qdisc.
fn bound_blocks(t: &Topology) -> Vec<String> {
    t.tc_blocks().into_values().collect()
}

/// What `tc monitor` in the host namespace reports while `f` runs.
fn tc_events_during(t: &Topology, f: impl FnOnce()) -> String {
    let mut monitor = std::process::Command::new("nsenter")
        .arg(format!("--net={}", t.ns_path("host")))
        .args(["tc", "monitor"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    f();
    std::thread::sleep(Duration::from_millis(300));
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(monitor.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let mut events = String::new();
    monitor.stdout.take().unwrap().read_to_string(&mut events).unwrap();
    monitor.wait().unwrap();
    events
}

/// The id of the pinned `from_container`.
fn pinned_prog(t: &Topology) -> String {
    let pin = t.datapath_dir().join("from_container");
    let out = t.exec("host", &["bpftool", "-j", "prog", "show", "pinned", pin.to_str().unwrap()]);
    serde_json::from_str::<Value>(&out).unwrap()["id"].to_string()
}

#[test]
fn maps_are_shared_by_processes_and_follow_attach_and_detach() {
    let mut t = Topology::new("maps");
    t.network("web", &["--subnet", "10.54.0.0/24"]);
    t.container("a", "web", &[]);
    let b = t.container("b", "web", &[]);
    // Every attach ran in its own process: one ENDPOINTS map holds both, both veths are bound
    // to the network's tc block, which carries from_container once.
    assert_eq!(t.map_entries("ENDPOINTS").len(), 2);
    assert_eq!(t.map_entries("NETWORKS").len(), 1);
    let version = t.datapath_dir();
    for reference in ["redirect_peer_ref", "REFERENCE_PEERS"] {
        assert!(!version.join(reference).exists(), "the bench's reference {reference} is not part of the datapath");
    }
    let bound = bound_blocks(&t);
    assert!(bound.len() == 2 && bound[0] == bound[1], "two veths on one block: {bound:?}");
    let block = bound[0].clone();
    assert_eq!(t.block_program(&block), pinned_prog(&t));
    // A restore finds the veths bound and the block serving them: it unbinds nothing and makes
    // no block or filter anew (each would leave the veths a moment without their program).
    // Asking for a qdisc shows in `tc monitor` too, as the qdisc: only deletions and filters
    // are changes.
    let events = tc_events_during(&t, || {
        t.np(&["restore"]);
    });
    assert!(!events.contains("deleted") && !events.contains("filter"), "restore changed tc objects: {events}");

    // Traffic after the attaching processes exited is still forwarded and counted, and a
    // later process reads the counters.
    assert!(t.ping("a", &ip_of(&b).to_string(), 3));
    let stats = t.np_json(&["stats"]);
    assert!(endpoint_stats(&stats, "a")["tx_packets"].as_u64().unwrap() >= 3);
    assert!(t.np(&["status"]).contains("2 endpoint(s) in the database and in ENDPOINTS"));

    t.np(&["detach", "--id", "a"]);
    assert_eq!(t.map_entries("ENDPOINTS").len(), 1);
    assert_eq!(bound_blocks(&t), vec![block.clone()], "a's veth went, and its binding with it");
    assert!(t.np(&["status"]).contains("1 endpoint(s) in the database and in ENDPOINTS"));

    // Reloading rebuilds the datapath from the database and forwarding keeps working.
    t.container("c", "web", &[]);
    let before = t.block_program(&block);
    t.np(&["datapath", "reload"]);
    assert_eq!(t.map_entries("ENDPOINTS").len(), 2);
    assert_ne!(t.block_program(&block), before, "the reload left the block on the old program");
    assert_eq!(t.block_program(&block), pinned_prog(&t), "the block runs the reloaded program");
    assert!(t.ping("c", &ip_of(&b).to_string(), 2));
    let stats = t.np_json(&["stats"]);
    assert!(endpoint_stats(&stats, "c")["tx_packets"].as_u64().unwrap() >= 2, "{stats}");
    t.teardown();
}

#[test]
fn a_datapath_pinned_by_another_build_is_reported_and_replaced_on_reload() {
    let t = Topology::new("ver");
    // Another netpath build's pins: a version directory that is not ours.
    let bpffs = t.run_dir.join("bpffs");
    std::fs::create_dir_all(&bpffs).unwrap();
    netpath_tests::run(std::process::Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&bpffs));
    std::fs::create_dir_all(t.pin_root().join("0123456789abcdef")).unwrap();

    let err = t.np_err(&["network", "create", "web"]);
    assert!(err.contains("was loaded by another netpath build; run `netpath datapath reload`"), "{err}");
    assert_eq!(t.np_json(&["network", "ls"]), Value::Array(vec![]), "nothing was created");
    t.np(&["datapath", "reload"]);
    assert!(!t.pin_root().join("0123456789abcdef").exists());
    t.network("web", &[]);
    t.teardown();
}

/// Sends one raw Ethernet frame out of `ifname` in the namespace at `ns_path`.
fn send_raw_frame(ns_path: &str, ifname: &str, frame: &[u8]) {
    let ifname = std::ffi::CString::new(ifname).unwrap();
    let frame = frame.to_vec();
    in_netns(ns_path, move || unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = libc::if_nametoindex(ifname.as_ptr()) as i32;
        addr.sll_halen = 6;
        let sent = libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        assert_eq!(sent, frame.len() as isize, "sendto: {}", std::io::Error::last_os_error());
        libc::close(fd);
    });
}

fn mac_bytes(endpoint: &Value) -> Vec<u8> {
    endpoint["mac"].as_str().unwrap().split(':').map(|b| u8::from_str_radix(b, 16).unwrap()).collect()
}

#[test]
fn truncated_packets_are_dropped_and_counted_not_forwarded() {
    let mut t = Topology::new("mal");
    t.network("web", &["--subnet", "10.56.0.0/24"]);
    let a = t.container("a", "web", &[]);
    let b = t.container("b", "web", &[]);
    // IPv4 packets b's stack saw, whatever it made of them (ARP and IPv6 noise left out).
    let rx = |t: &Topology| {
        let snmp = t.exec("b", &["cat", "/proc/net/snmp"]);
        let mut ip = snmp.lines().filter(|l| l.starts_with("Ip:"));
        let (names, values) = (ip.next().unwrap(), ip.next().unwrap());
        let at = names.split_whitespace().position(|n| n == "InReceives").unwrap();
        values.split_whitespace().nth(at).unwrap().parse::<u64>().unwrap()
    };
    let (before, b_rx) = (drops(&t.np_json(&["stats"]), "malformed"), rx(&t));

    // From a to b, an IPv4 header that claims 1000 bytes in a 60-byte frame.
    let mut frame = mac_bytes(&b);
    frame.extend(mac_bytes(&a));
    frame.extend([0x08, 0x00, 0x45, 0, 0x03, 0xe8, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    frame.extend(ip_of(&a).octets());
    frame.extend(ip_of(&b).octets());
    frame.resize(60, 0);
    for _ in 0..3 {
        send_raw_frame(&t.ns_path("a"), "eth0", &frame);
    }

    let after = drops(&t.np_json(&["stats"]), "malformed");
    assert_eq!(after, before + 3, "malformed drops went from {before} to {after}");
    assert_eq!(rx(&t), b_rx, "a truncated packet reached b");
    t.teardown();
}

/// `netpath stats --programs --for N` measures each program's cost over a window, turning the
/// kernel's run-time statistics on for that window only. The kernel counts only the programs
/// hooks run, never the stages they tail-call: those count their own runs, and the report says
/// so.
#[test]
fn program_costs_are_measured_over_a_window() {
    let mut t = Topology::with_outside("cost");
    t.network("web", &["--subnet", "10.57.0.0/24"]);
    let a = t.container("a", "web", &[]);
    let b = t.container("b", "web", &[]);
    let sysctl = || std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap();
    let before = sysctl();

    let measuring = t
        .netpath_cmd(&["stats", "--programs", "--for", "3", "--format", "json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        t.exec_output("a", &["ping", "-c", "100", "-i", "0.01", "-W", "1", &ip_of(&b).to_string()]).status.success()
    );
    let out = measuring.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["window_seconds"], 3.0);
    let cost = |program: &str| {
        report["programs"].as_array().unwrap().iter().find(|p| p["program"] == program).cloned().unwrap()
    };
    let fc = cost("from_container");
    // Each echo request and reply passes one host veth's from_container (plus ARP).
    assert!(fc["runs"].as_u64().unwrap() >= 200, "{fc}");
    assert_eq!(fc["counted_by"], "kernel", "{fc}");
    let per_run = fc["ns_per_run"].as_f64().unwrap();
    assert!(per_run > 0.0 && per_run < 1_000_000.0, "{fc}");
    // Container to container never leaves from_container: no stage ran. The stages count
    // their runs themselves, so this 0 is a count (the kernel's would be 0 whatever ran).
    for stage in names::TAIL_CALLED {
        let c = cost(stage);
        assert_eq!((&c["runs"], &c["counted_by"]), (&0.into(), &"netpath".into()), "{stage}: {report}");
        assert!(c["run_ns"].is_null() && c["ns_per_run"].is_null(), "{stage}'s time is not measured: {c}");
    }
    assert_eq!(sysctl(), before, "kernel.bpf_stats_enabled is as it was");

    // Egress: the first packet of each new connection goes through the translating stages
    // (tracked? no; opening: to the outside; egress: SNAT and send), the next ones only
    // through the first. 20 flows, one datagram each, all arriving.
    let stage_runs = || -> Vec<u64> {
        let report = t.np_json(&["stats", "--programs"]);
        let runs = |stage: &str| {
            let p = report["programs"].as_array().unwrap().iter().find(|p| p["program"] == stage).unwrap();
            p["runs"].as_u64().unwrap()
        };
        names::TAIL_CALLED.iter().map(|s| runs(s)).collect()
    };
    let before = stage_runs();
    let to = SocketAddr::from((OUTSIDE_ADDR.parse::<std::net::Ipv4Addr>().unwrap(), 7400));
    let server = in_netns(&t.ns_path("outside"), || UdpSocket::bind(to).unwrap());
    server.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    for i in 0..20 {
        let client = in_netns(&t.ns_path("a"), || UdpSocket::bind((ip_of(&a), 0)).unwrap());
        client.send_to(format!("flow {i}").as_bytes(), to).unwrap();
        server.recv_from(&mut [0u8; 16]).unwrap_or_else(|e| panic!("flow {i} did not arrive: {e}"));
    }
    let after = stage_runs();
    let ran: Vec<(&str, u64)> =
        names::TAIL_CALLED.iter().zip(after.iter().zip(&before)).map(|(s, (a, b))| (*s, a - b)).collect();
    for (stage, runs) in &ran {
        match *stage {
            names::FROM_UPLINK_OPEN => assert_eq!(*runs, 0, "nothing is published, yet {stage} ran: {ran:?}"),
            _ => assert!(*runs >= 20, "{stage} ran {runs} times for 20 new egress flows: {ran:?}"),
        }
    }
    let text = t.np(&["stats", "--programs"]);
    let row = text.lines().find(|l| l.starts_with("from_container_egress ")).unwrap_or_else(|| panic!("{text}"));
    assert!(row.contains("not measured"), "{text}");
    t.teardown();
}

/// `--endpoint-hook tcx` gives endpoints TCX links of their own instead of their network's tc
/// block; a restore moves the endpoints attached before to the hook configured now; traffic
/// passes through either, and one of each on the same network.
#[test]
fn the_endpoint_hook_is_a_setting_and_restore_moves_endpoints_to_it() {
    let mut t = Topology::new("hook");
    t.network("web", &["--subnet", "10.57.0.0/24"]);
    let a = t.container("a", "web", &[]);
    t.np(&["datapath", "configure", "--endpoint-hook", "tcx"]);
    assert!(t.np(&["datapath", "show"]).contains("endpoint hook            tcx"));
    let b = t.container("b", "web", &[]);
    let (va, vb) = (a["host_veth"].as_str().unwrap(), b["host_veth"].as_str().unwrap());
    let links = t.datapath_dir().join("links");
    let on_tcx = |veth: &str| links.join(veth).exists();
    assert!(on_tcx(vb) && !t.tc_blocks().contains_key(vb), "b has a TCX link and no block binding");
    assert!(!on_tcx(va) && t.tc_blocks().contains_key(va), "a keeps its block until a restore");
    let reach = |t: &Topology| {
        assert!(t.ping("a", &ip_of(&b).to_string(), 2), "a cannot reach b");
        assert!(t.ping("b", &ip_of(&a).to_string(), 2), "b cannot reach a");
    };
    reach(&t);

    t.np(&["restore"]);
    assert!(on_tcx(va) && !t.tc_blocks().contains_key(va), "restore moved a to TCX");
    reach(&t);

    t.np(&["datapath", "configure", "--endpoint-hook", "tc-block"]);
    t.np(&["restore"]);
    assert!(!on_tcx(va) && !on_tcx(vb), "TCX links left after moving back to the block");
    let blocks = t.tc_blocks();
    assert!(blocks.contains_key(va) && blocks.get(va) == blocks.get(vb), "{blocks:?}");
    reach(&t);

    let err = t.np_err(&["datapath", "configure", "--endpoint-hook", "xdp"]);
    assert!(err.contains("pick tc-block or tcx"), "{err}");
    t.teardown();
}
