//! Every bad input fails with one line that names the problem, exits non-zero, and leaves no
//! link, namespace change or database row behind.
use netpath_tests::Topology;

/// What a failed command must not have changed: rows, interfaces, IPv4 addresses, routes.
/// (Not link states or IPv6 flags, which the kernel moves on its own.)
fn snapshot(t: &Topology, containers: &[&str]) -> String {
    let mut s = t.np(&["network", "ls", "--format", "json"]);
    s += &t.np(&["endpoint", "ls", "--format", "json"]);
    for ns in std::iter::once("host").chain(containers.iter().copied()) {
        s += &interfaces(t, ns);
        s += &t.exec(ns, &["ip", "-o", "-4", "addr", "show"]);
        s += &t.exec(ns, &["ip", "route", "show"]);
    }
    s
}

fn interfaces(t: &Topology, ns: &str) -> String {
    let links: serde_json::Value = serde_json::from_str(&t.exec(ns, &["ip", "-j", "link", "show"])).unwrap();
    let names = links.as_array().unwrap().iter().map(|l| format!("{} master {}\n", l["ifname"], l["master"]));
    names.collect()
}

#[test]
fn bad_input_fails_with_its_message_and_changes_nothing() {
    let mut t = Topology::new("bad");
    t.network("web", &["--subnet", "10.40.0.0/24"]);
    t.container("used", "web", &["--ip", "10.40.0.9"]);
    let free = t.netns("free");
    t.exec("free", &["ip", "link", "set", "lo", "up"]);
    // A FIFO passed as a namespace must be refused, not block the open.
    let fifo = t.run_dir.join("fifo");
    netpath_tests::run(std::process::Command::new("mkfifo").arg(&fifo));
    let fifo = fifo.to_str().unwrap().to_string();
    // A host process listening on a port that -p would shadow.
    let _listener =
        netpath_tests::in_netns(&t.ns_path("host"), || std::net::TcpListener::bind("0.0.0.0:18080").unwrap());
    let before = snapshot(&t, &["used", "free"]);

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["network", "create", "x", "--subnet", "10.1.0.0/33"], "invalid subnet '10.1.0.0/33'"),
        (vec!["network", "create", "x", "--subnet", "banana"], "invalid subnet 'banana'"),
        (vec!["network", "create", "x", "--subnet", "10.1.0.1/16"], "did you mean 10.1.0.0/16?"),
        (
            vec!["network", "create", "x", "--subnet", "10.1.0.0/16", "--gateway", "10.1.0.300"],
            "invalid --gateway '10.1.0.300'",
        ),
        (
            vec!["network", "create", "x", "--subnet", "10.1.0.0/16", "--gateway", "10.2.0.1"],
            "gateway 10.2.0.1 is not a host address of subnet 10.1.0.0/16",
        ),
        (
            vec!["network", "create", "x", "--subnet", "10.40.0.128/25"],
            "network 'web' already uses 10.40.0.0/24; pick another --subnet",
        ),
        (
            vec!["network", "create", "web", "--subnet", "10.41.0.0/24"],
            "network 'web' already exists; pick another name",
        ),
        (
            vec!["network", "create", "averyveryverylongname"],
            "bridge name 'np-averyveryverylongname' is 24 bytes; interface names are at most 15; pass --bridge",
        ),
        (vec!["network", "create", "x", "--bridge", "br-0123456789abc"], "bridge name 'br-0123456789abc' is 16 bytes"),
        (vec!["network", "create", "bad/name"], "invalid network name 'bad/name'"),
        (vec!["network", "create", "x", "--uplink", "nosuchif"], "uplink interface 'nosuchif' does not exist"),
        (
            vec!["network", "create", "x", "--xdp", "bogus"],
            "invalid --xdp 'bogus'; pass --xdp (filter) or --xdp redirect",
        ),
        (vec!["network", "create", "x", "--internal", "--xdp", "redirect"], "--xdp needs an uplink"),
        (vec!["network", "rm", "nosuch"], "network 'nosuch' does not exist"),
        (vec!["network", "rm", "../../x"], "network '../../x' does not exist"),
        (vec!["attach", "--network", "../x", "--netns", &free], "network '../x' does not exist"),
        (
            vec!["attach", "--network", "nosuch", "--netns", &free],
            "network 'nosuch' does not exist; see `netpath network ls`",
        ),
        (
            vec!["attach", "--network", "web", "--netns", "/run/netns/no-such-namespace"],
            "network namespace '/run/netns/no-such-namespace' does not exist",
        ),
        (vec!["attach", "--network", "web", "--netns", "/etc/hostname"], "'/etc/hostname' is not a network namespace"),
        (
            vec!["attach", "--network", "web", "--netns", "/proc/self/ns/mnt"],
            "'/proc/self/ns/mnt' is not a network namespace",
        ),
        (vec!["attach", "--network", "web", "--pid", "999999999"], "process 999999999 does not exist"),
        (
            vec!["attach", "--network", "web", "--netns", &free, "--ip", "10.99.0.5"],
            "address 10.99.0.5 is not a host address of subnet 10.40.0.0/24",
        ),
        (
            vec!["attach", "--network", "web", "--netns", &free, "--ip", "10.40.0.9"],
            "address 10.40.0.9 is already in use",
        ),
        (
            vec!["attach", "--network", "web", "--netns", &free, "--ip", "10.40.0.1"],
            "address 10.40.0.1 is the network's gateway",
        ),
        (vec!["attach", "--network", "web", "--netns", &free, "--ip", "nope"], "invalid --ip 'nope'"),
        (vec!["attach", "--network", "web", "--netns", &free, "--mac", "01:00:00:00:00:01"], "is a multicast address"),
        (
            vec!["attach", "--network", "web", "--netns", &free, "--ifname", "a-very-long-ifname"],
            "--ifname 'a-very-long-ifname' is 18 bytes; interface names are at most 15",
        ),
        (
            vec!["attach", "--network", "web", "--netns", &free, "--ifname", "lo"],
            "already has an interface named 'lo'; pass another --ifname",
        ),
        (vec!["attach", "--network", "web", "--netns", "/proc/self/ns/net"], "is the host network namespace"),
        (vec!["detach", "--id", "nosuch"], "endpoint 'nosuch' does not exist"),
        (vec!["attach", "--network", "web", "--netns", &fifo], "is not a network namespace"),
        (vec!["attach", "--network", "web", "--netns", &free, "--mac", "00:00:00:00:00:00"], "is all zeros"),
        (
            vec!["attach", "--network", "web", "--netns", &free, "--mac", "02:4e:0a:28:00:09"],
            "MAC address 02:4e:0a:28:00:09 is already used by endpoint 'used' on network 'web'; pick another --mac",
        ),
        (
            vec!["attach", "--network", "web", "--netns", &free, "-p", "10.123.0.1:8080:80"],
            "host address 10.123.0.1 of -p 10.123.0.1:8080->80/tcp is not an address of this host",
        ),
        (
            vec!["attach", "--network", "web", "--netns", &free, "-p", "18080:80"],
            "host port 18080/tcp is in use by a process of this host; pick another",
        ),
        (vec!["detach", "--netns", &free], "no endpoint is attached to network namespace"),
        (vec!["datapath", "configure", "--snat-quota", "0"], "SNAT quota 0 is out of range; pick 1 to 65535"),
        (vec!["datapath", "configure", "--snat-quota", "65536"], "SNAT quota 65536 is out of range; pick 1 to 65535"),
    ];
    for (args, expected) in &cases {
        let err = t.np_err(args);
        assert!(err.starts_with("netpath: ") && err.contains(expected), "{args:?}: got {err:?}, want {expected:?}");
        assert_eq!(snapshot(&t, &["used", "free"]), before, "{args:?} changed something");
    }
    t.teardown();
}

#[test]
fn running_without_capabilities_is_refused_at_once() {
    let t = Topology::new("caps");
    let out = std::process::Command::new("setpriv")
        .args(["--inh-caps=-all", "--bounding-set=-all", "--"])
        .arg(netpath_tests::netpath_bin())
        .arg("--state-dir")
        .arg(t.run_dir.join("nocaps"))
        .args(["network", "ls"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim(), "netpath: netpath needs CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF; run it as root");
    assert!(!t.run_dir.join("nocaps").exists(), "no state was created");
}

#[test]
fn each_error_class_has_its_exit_code() {
    let t = Topology::new("exit");
    t.network("web", &["--subnet", "10.41.0.0/24"]);
    let code = |args: &[&str]| t.netpath(args).status.code();
    assert_eq!(code(&["network", "create", "x", "--subnet", "banana"]), Some(2), "invalid input");
    assert_eq!(code(&["network", "rm", "nosuch"]), Some(3), "not found");
    assert_eq!(code(&["network", "create", "web"]), Some(4), "conflict");
    // 5 (run `netpath restore`) is checked by the reboot test; 1 is a system failure.
    t.teardown();
}
