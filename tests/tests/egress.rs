//! Containers reach the outside through the uplink, masqueraded by eBPF with its own
//! conntrack: no iptables, no nf_conntrack, no ip_forward.
use std::{
    io::{ErrorKind, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use netpath_tests::{OUTSIDE_ADDR, Topology, UPLINK_ADDR, in_netns, ip_of, netfilter, pattern};
use serde_json::Value;

fn outside(port: u16) -> SocketAddr {
    SocketAddr::from((OUTSIDE_ADDR.parse::<Ipv4Addr>().unwrap(), port))
}

/// The kernel's conntrack entries in the host namespace, asked over ctnetlink; a kernel
/// without connection tracking has none.
fn kernel_conntrack_entries(t: &Topology) -> Vec<String> {
    in_netns(&t.ns_path("host"), netfilter::conntrack_entries).expect("ctnetlink dump").unwrap_or_default()
}

#[test]
fn tcp_udp_and_ping_reach_the_outside_from_the_uplink_address() {
    let mut t = Topology::with_outside("egr");
    // What a new namespace starts with depends on the machine (`devconf_inherit_init_net`):
    // the test turns forwarding off itself, so that what follows works without it, and checks
    // that netpath turns it on for its bridge only.
    let forwarding = |t: &Topology, conf: &str| t.exec("host", &["sysctl", "-n", &format!("net.ipv4.{conf}")]);
    t.exec("host", &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
    t.network("web", &["--subnet", "10.60.0.0/24"]);
    let a = t.container("a", "web", &[]);
    assert_eq!(forwarding(&t, "ip_forward").trim(), "0", "netpath changed the host's ip_forward");
    assert_eq!(forwarding(&t, "conf.np-web.forwarding").trim(), "1", "the bridge does not forward");
    let uplink = format!("conf.{}.forwarding", netpath_tests::UPLINK);
    assert_eq!(forwarding(&t, &uplink).trim(), "0", "netpath turned forwarding on for the uplink");

    // TCP: the server sees the uplink address, and data comes back intact.
    let listener = in_netns(&t.ns_path("outside"), || TcpListener::bind(outside(7000)).unwrap());
    let server = std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        conn.read_exact(&mut buf).unwrap();
        conn.write_all(&buf).unwrap();
        peer
    });
    let mut client =
        in_netns(&t.ns_path("a"), || TcpStream::connect_timeout(&outside(7000), Duration::from_secs(5)).unwrap());
    let mut sent = vec![0u8; 1 << 20];
    pattern(7, &mut sent);
    client.write_all(&sent).unwrap();
    let mut back = vec![0u8; 1 << 20];
    client.read_exact(&mut back).unwrap();
    assert!(back == sent, "echoed data differs");
    let peer = server.join().unwrap();
    assert_eq!(peer.ip().to_string(), UPLINK_ADDR, "the outside saw the container's address");
    let local = client.local_addr().unwrap();
    assert_eq!(local.ip(), ip_of(&a), "the container keeps its own address");

    // UDP.
    let server = in_netns(&t.ns_path("outside"), || UdpSocket::bind(outside(7001)).unwrap());
    server.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let client = in_netns(&t.ns_path("a"), || UdpSocket::bind((ip_of(&a), 0)).unwrap());
    client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    client.send_to(b"hello", outside(7001)).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = server.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello");
    assert_eq!(from.ip().to_string(), UPLINK_ADDR);
    server.send_to(b"world", from).unwrap();
    let (n, from) = client.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"world"[..], outside(7001)));

    // ICMP echo.
    assert!(t.ping("a", OUTSIDE_ADDR, 3));

    let conns = t.np_json(&["conntrack", "ls"]);
    let protos: Vec<&str> = conns.as_array().unwrap().iter().map(|c| c["proto"].as_str().unwrap()).collect();
    for proto in ["tcp", "udp", "icmp"] {
        assert!(protos.contains(&proto), "no {proto} connection in {conns}");
    }
    assert!(
        conns.as_array().unwrap().iter().all(|c| c["translated_source"].as_str().unwrap().starts_with(UPLINK_ADDR))
    );
    assert_eq!(kernel_conntrack_entries(&t), Vec::<String>::new(), "the kernel's conntrack was used");
    t.assert_no_netfilter();
    t.teardown();
}

#[test]
fn two_hundred_simultaneous_connections_from_two_containers() {
    let mut t = Topology::with_outside("many");
    t.network("web", &["--subnet", "10.61.0.0/24"]);
    t.container("a", "web", &[]);
    t.container("b", "web", &[]);
    let listener = in_netns(&t.ns_path("outside"), || TcpListener::bind(outside(7100)).unwrap());
    let server = std::thread::spawn(move || {
        let mut handlers = Vec::new();
        for _ in 0..200 {
            let (mut conn, peer) = listener.accept().unwrap();
            assert_eq!(peer.ip().to_string(), UPLINK_ADDR);
            handlers.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                conn.read_exact(&mut buf).unwrap();
                conn.write_all(&buf).unwrap();
            }));
        }
        handlers.into_iter().for_each(|h| h.join().unwrap());
    });
    // Open all 200 first, so they are alive at the same time, then exchange data.
    let mut conns = Vec::new();
    for i in 0..200 {
        let ns = if i % 2 == 0 { "a" } else { "b" };
        conns.push(in_netns(&t.ns_path(ns), || {
            TcpStream::connect_timeout(&outside(7100), Duration::from_secs(5)).unwrap()
        }));
    }
    let clients: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut conn)| {
            std::thread::spawn(move || {
                let mut data = vec![0u8; 64 * 1024];
                pattern(i as u64 * 1_000_003, &mut data);
                conn.write_all(&data).unwrap();
                let mut back = vec![0u8; data.len()];
                conn.read_exact(&mut back).unwrap();
                assert!(back == data, "connection {i} got wrong data");
            })
        })
        .collect();
    clients.into_iter().for_each(|c| c.join().unwrap());
    server.join().unwrap();
    let tcp = t.np_json(&["conntrack", "ls"]).as_array().unwrap().iter().filter(|c| c["proto"] == "tcp").count();
    assert_eq!(tcp, 200);
    t.teardown();
}

#[test]
fn udp_to_a_closed_port_is_refused_through_the_translation() {
    let mut t = Topology::with_outside("refu");
    t.network("web", &["--subnet", "10.62.0.0/24"]);
    let a = t.container("a", "web", &[]);
    let sock = in_netns(&t.ns_path("a"), || UdpSocket::bind((ip_of(&a), 0)).unwrap());
    sock.connect(outside(9)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock.send(b"anyone?").unwrap();
    let err = sock.recv(&mut [0u8; 16]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "got {err:?}");
    t.teardown();
}

#[test]
fn conntrack_entries_are_listed_and_expire() {
    let mut t = Topology::with_outside("ctx");
    t.network("web", &["--subnet", "10.63.0.0/24"]);
    let a = t.container("a", "web", &[]);
    t.np(&["datapath", "configure", "--udp-timeout", "2"]);
    assert!(t.np(&["datapath", "show"]).contains("udp timeout              2s"));
    let server = in_netns(&t.ns_path("outside"), || UdpSocket::bind(outside(7200)).unwrap());
    let client = in_netns(&t.ns_path("a"), || UdpSocket::bind((ip_of(&a), 5555)).unwrap());
    client.send_to(b"x", outside(7200)).unwrap();
    server.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    server.recv_from(&mut [0u8; 8]).unwrap();

    let conns = t.np_json(&["conntrack", "ls", "--network", "web"]);
    let entry: &Value = &conns[0];
    assert_eq!(entry["proto"], "udp");
    assert_eq!(entry["endpoint"], "a");
    assert_eq!(entry["source"], format!("{}:5555", ip_of(&a)));
    assert_eq!(entry["destination"], format!("{OUTSIDE_ADDR}:7200"));
    assert!(entry["translated_source"].as_str().unwrap().starts_with(&format!("{UPLINK_ADDR}:")));
    // Nobody answered yet: the connection waits in the small table of unanswered opens.
    assert_eq!(t.map_entries("CT_NEW").len(), 2, "one entry per direction, not established yet");
    assert!(t.map_entries("CT").is_empty(), "an unanswered flow is not in the established table");

    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(t.np_json(&["conntrack", "ls"]), Value::Array(vec![]), "expired entries are not listed");
    assert!(t.np(&["conntrack", "gc"]).starts_with("1 ended"));
    assert!(t.map_entries("CT_NEW").is_empty(), "gc collected both directions");

    // Flush forgets live connections.
    client.send_to(b"y", outside(7200)).unwrap();
    server.recv_from(&mut [0u8; 8]).unwrap();
    assert_eq!(t.np_json(&["conntrack", "ls"]).as_array().unwrap().len(), 1);
    t.np(&["conntrack", "flush", "--network", "web"]);
    assert!(t.map_entries("CT").is_empty() && t.map_entries("CT_NEW").is_empty());
    t.teardown();
}

#[test]
fn internal_networks_have_no_egress() {
    let mut t = Topology::with_outside("intl");
    t.network("web", &["--subnet", "10.64.0.0/24", "--internal"]);
    t.container("a", "web", &[]);
    let b = t.container("b", "web", &[]);
    let before = t.drop_count("egress-denied");
    assert!(t.no_reply("a", OUTSIDE_ADDR, 2), "an internal network reached the outside");
    assert!(t.drop_count("egress-denied") >= before + 2);
    assert!(t.ping("a", &ip_of(&b).to_string(), 1), "endpoints of an internal network still talk");
    t.teardown();
}

#[test]
fn no_masquerade_networks_route_with_the_container_address() {
    let mut t = Topology::with_outside("nomq");
    t.network("web", &["--subnet", "10.65.0.0/24", "--no-masquerade"]);
    let a = t.container("a", "web", &[]);
    // The outside routes the subnet to the host, as a routed setup would.
    t.exec("outside", &["ip", "route", "add", "10.65.0.0/24", "via", UPLINK_ADDR]);
    let server = in_netns(&t.ns_path("outside"), || UdpSocket::bind(outside(7300)).unwrap());
    server.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let client = in_netns(&t.ns_path("a"), || UdpSocket::bind((ip_of(&a), 0)).unwrap());
    client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    client.send_to(b"direct", outside(7300)).unwrap();
    let (_, from) = server.recv_from(&mut [0u8; 16]).unwrap();
    assert_eq!(from.ip(), ip_of(&a), "the source was translated");
    server.send_to(b"back", from).unwrap();
    let n = client.recv(&mut [0u8; 16]).unwrap();
    assert_eq!(n, 4);
    assert!(t.ping("a", OUTSIDE_ADDR, 2));
    t.teardown();
}

/// Writing `net.ipv4.ip_forward` resets every interface's `forwarding`, netpath's bridges'
/// too, which the kernel's FIB helper needs. Egress, answers and published ports must go on
/// regardless: mid-stream, and for connections opened afterwards.
#[test]
fn writing_ip_forward_mid_traffic_breaks_nothing() {
    let mut t = Topology::with_outside("ipfw");
    t.network("web", &["--subnet", "10.66.0.0/24"]);
    t.container("a", "web", &["-p", "8080:80"]);
    let bridge_forwarding = |t: &Topology| t.exec("host", &["cat", "/proc/sys/net/ipv4/conf/np-web/forwarding"]);

    // One connection out, one in, each echoing a request at a time.
    let out_listener = in_netns(&t.ns_path("outside"), || TcpListener::bind(outside(7300)).unwrap());
    let in_listener = in_netns(&t.ns_path("a"), || TcpListener::bind((Ipv4Addr::UNSPECIFIED, 80)).unwrap());
    let echo = |listener: TcpListener, conns: usize| {
        std::thread::spawn(move || {
            for _ in 0..conns {
                let (mut conn, _) = listener.accept().unwrap();
                let mut buf = [0u8; 64];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        })
    };
    let out_server = echo(out_listener, 2);
    let in_server = echo(in_listener, 2);
    let connect = |ns: &str, to: SocketAddr| {
        let conn = in_netns(&t.ns_path(ns), || TcpStream::connect_timeout(&to, Duration::from_secs(5)))
            .unwrap_or_else(|e| panic!("{ns} -> {to}: {e}"));
        conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        conn
    };
    let published = SocketAddr::from((UPLINK_ADDR.parse::<Ipv4Addr>().unwrap(), 8080));
    let mut egress = connect("a", outside(7300));
    let mut inbound = connect("outside", published);
    let exchange = |conn: &mut TcpStream, what: &str, i: u32| {
        let msg = format!("{what} {i}");
        conn.write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0u8; msg.len()];
        conn.read_exact(&mut back).unwrap_or_else(|e| panic!("{what}, exchange {i}: {e}"));
        assert_eq!(back, msg.as_bytes());
    };

    for (i, value) in ["1", "0", "1", "0"].into_iter().enumerate() {
        t.exec("host", &["sysctl", "-qw", &format!("net.ipv4.ip_forward={value}")]);
        assert_eq!(bridge_forwarding(&t).trim(), value, "the write reset the bridge's forwarding");
        exchange(&mut egress, "egress", i as u32);
        exchange(&mut inbound, "inbound", i as u32);
    }
    // ip_forward is 0 now, and so is the bridge's forwarding: new connections work too (the
    // echo servers take one connection at a time).
    drop((egress, inbound));
    exchange(&mut connect("a", outside(7300)), "new egress", 0);
    exchange(&mut connect("outside", published), "new inbound", 0);
    out_server.join().unwrap();
    in_server.join().unwrap();
    t.teardown();
}
