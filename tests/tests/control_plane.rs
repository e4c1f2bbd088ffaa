//! Networks and endpoints: real bridges, veths and addresses in throwaway namespaces.
use netpath_tests::{Topology, ip_of};

#[test]
fn containers_ping_each_other_and_the_gateway() {
    let mut t = Topology::new("ping");
    let net = t.network("web", &["--subnet", "10.31.0.0/24"]);
    assert_eq!(net["gateway"], "10.31.0.1");
    let a = t.container("a", "web", &[]);
    let b = t.container("b", "web", &[]);
    assert_eq!(a["ip"], "10.31.0.2");
    assert_eq!(b["ip"], "10.31.0.3");

    // The container side is eth0 with the address, the derived MAC and a default route.
    let eth0 = t.link("a", "eth0").expect("eth0 in a");
    assert_eq!(eth0["address"], "02:4e:0a:1f:00:02");
    assert_eq!(eth0["address"], a["mac"]);
    let addrs = t.exec("a", &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains("inet 10.31.0.2/24"), "{addrs}");
    let routes = t.exec("a", &["ip", "route", "show", "default"]);
    assert!(routes.contains("default via 10.31.0.1 dev eth0"), "{routes}");
    assert!(t.exec("a", &["ip", "-o", "link", "show", "lo"]).contains("UP"));

    assert!(t.ping("a", &ip_of(&b).to_string(), 3));
    assert!(t.ping("b", &ip_of(&a).to_string(), 3));
    assert!(t.ping("a", "10.31.0.1", 2));
    t.teardown();
}

#[test]
fn detach_removes_the_veth_and_frees_the_address() {
    let mut t = Topology::new("det");
    t.network("web", &["--subnet", "10.32.0.0/24"]);
    let a = t.container("a", "web", &[]);
    t.container("b", "web", &[]);
    let host_veth = a["host_veth"].as_str().unwrap().to_string();
    assert!(t.link("host", &host_veth).is_some());

    t.np(&["detach", "--id", "a"]);
    assert!(t.link("host", &host_veth).is_none(), "host veth left after detach");
    assert!(t.link("a", "eth0").is_none(), "eth0 left in the container after detach");

    let path = t.netns("c");
    let c = t.np_json(&["attach", "--network", "web", "--netns", &path, "--id", "c"]);
    assert_eq!(c["ip"], a["ip"], "the freed address is handed out again");

    // Detaching by namespace works too.
    t.np(&["detach", "--netns", &path]);
    assert!(t.link("c", "eth0").is_none());
    t.teardown();
}

#[test]
fn attaching_the_same_id_again_returns_the_same_endpoint() {
    let mut t = Topology::new("idem");
    t.network("web", &[]);
    let first = t.container("a", "web", &[]);
    let path = t.ns_path("a");
    let again = t.np_json(&["attach", "--network", "web", "--netns", &path, "--id", "a"]);
    assert_eq!(first, again);
    assert_eq!(t.np_json(&["endpoint", "ls"]).as_array().unwrap().len(), 1);
    let inspected = t.np_json(&["endpoint", "inspect", "a"]);
    assert_eq!(inspected, first);
    t.teardown();
}

#[test]
fn attach_by_pid_and_with_explicit_address_mac_and_ifname() {
    let mut t = Topology::new("pid");
    t.network("web", &["--subnet", "10.33.0.0/24"]);
    let path = t.netns("a");
    let mut sleeper = std::process::Command::new("ip")
        .args(["netns", "exec", path.rsplit('/').next().unwrap(), "sleep", "30"])
        .spawn()
        .unwrap();
    // `ip netns exec` execs sleep in the namespace: wait until it is there.
    let pid = sleeper.id();
    let target = format!("net:[{}]", std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap()));
    let in_target = || std::fs::read_link(format!("/proc/{pid}/ns/net")).is_ok_and(|l| l.to_string_lossy() == target);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !in_target() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(in_target(), "pid {pid} did not enter {path} within 5 s");
    let ep = t.np_json(&[
        "attach",
        "--network",
        "web",
        "--pid",
        &pid.to_string(),
        "--ip",
        "10.33.0.77",
        "--mac",
        "02:42:00:00:00:77",
        "--ifname",
        "net1",
    ]);
    assert_eq!(ep["ip"], "10.33.0.77");
    let link = t.link("a", "net1").expect("net1 in the process's namespace");
    assert_eq!(link["address"], "02:42:00:00:00:77");
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    t.teardown();
}

#[test]
fn network_rm_removes_the_bridge_and_refuses_while_in_use() {
    let mut t = Topology::new("rm");
    let net = t.network("web", &[]);
    let bridge = net["bridge"].as_str().unwrap().to_string();
    assert!(t.link("host", &bridge).is_some());
    t.container("a", "web", &[]);

    let err = t.np_err(&["network", "rm", "web"]);
    assert_eq!(err, "netpath: network 'web' has 1 endpoint(s) attached; detach them or pass --force");
    assert!(t.link("host", &bridge).is_some());

    t.np(&["network", "rm", "web", "--force"]);
    assert!(t.link("host", &bridge).is_none(), "bridge left after network rm");
    assert!(t.link("a", "eth0").is_none(), "--force detached the endpoint");
    t.teardown();
}

#[test]
fn automatic_subnets_never_overlap_networks_or_host_routes() {
    let t = Topology::new("auto");
    // A route in the host namespace that covers the pool's first subnet.
    t.exec("host", &["ip", "link", "add", "npdummy0", "type", "veth", "peer", "name", "npdummy1"]);
    t.exec("host", &["ip", "addr", "add", "10.200.1.1/24", "dev", "npdummy0"]);
    t.exec("host", &["ip", "link", "set", "npdummy0", "up"]);
    t.exec("host", &["ip", "link", "set", "npdummy1", "up"]);
    let explicit = t.network("fixed", &["--subnet", "10.200.4.0/22"]);
    let mut subnets = vec![explicit["subnet"].as_str().unwrap().to_string()];
    for i in 0..5 {
        let net = t.network(&format!("n{i}"), &[]);
        subnets.push(net["subnet"].as_str().unwrap().to_string());
    }
    assert_eq!(subnets[1], "10.200.8.0/22", "skips the route and the explicit network");
    let parsed: Vec<(u32, u32)> = subnets
        .iter()
        .map(|s| {
            let (a, p) = s.split_once('/').unwrap();
            let a = u32::from(a.parse::<std::net::Ipv4Addr>().unwrap());
            (a, a + (1u32 << (32 - p.parse::<u32>().unwrap())) - 1)
        })
        .collect();
    for (i, x) in parsed.iter().enumerate() {
        assert!(!(x.0 <= 0x0ac801ff && 0x0ac80100 <= x.1), "{} overlaps the host route", subnets[i]);
        for y in &parsed[i + 1..] {
            assert!(x.1 < y.0 || y.1 < x.0, "{subnets:?} overlap");
        }
    }
    t.exec("host", &["ip", "link", "del", "npdummy0"]);
    t.teardown();
}

#[test]
fn fifty_concurrent_attaches_get_fifty_distinct_addresses() {
    let mut t = Topology::new("par");
    t.network("web", &["--subnet", "10.34.0.0/24"]);
    let paths: Vec<String> = (0..50).map(|i| t.netns(&format!("c{i}"))).collect();
    let children: Vec<_> = paths
        .iter()
        .enumerate()
        .map(|(i, path)| {
            t.netpath_cmd(&[
                "attach",
                "--network",
                "web",
                "--netns",
                path,
                "--id",
                &format!("c{i}"),
                "--format",
                "json",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let mut ips = std::collections::BTreeSet::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "attach failed: {}", String::from_utf8_lossy(&out.stderr));
        let ep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        ips.insert(ep["ip"].as_str().unwrap().to_string());
    }
    assert_eq!(ips.len(), 50, "addresses: {ips:?}");
    let listed = t.np_json(&["endpoint", "ls"]);
    assert_eq!(listed.as_array().unwrap().len(), 50);
    assert_eq!(t.map_entries("ENDPOINTS").len(), 50);
    // Every one of them is really wired: each reaches another.
    t.assert_ring_reachable(listed.as_array().unwrap());
    t.teardown();
}
