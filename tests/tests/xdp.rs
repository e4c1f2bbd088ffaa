//! `xdp_uplink` on a veth uplink: attached in native mode (as the kernel reports it, not only
//! netpath), published TCP and UDP ports served through its devmap redirect, and what the
//! outside must not send dropped by XDP itself (the uplink's own XDP drop counter moves) under
//! the same reasons as the TC path.
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket},
    time::Duration,
};

use netpath_tests::{
    OUTSIDE_ADDR, Topology, UPLINK, UPLINK_ADDR,
    frames::{
        ETH_P_IP, IPPROTO_TCP, IPPROTO_UDP, Ipv4, RawSocket, TCP_SYN, Tcp, ethernet, mac_of, tcp_frame, udp_frame,
    },
    in_netns, ip_of, tcp_request,
};

fn uplink_ip() -> Ipv4Addr {
    UPLINK_ADDR.parse().unwrap()
}

fn outside_ip() -> Ipv4Addr {
    OUTSIDE_ADDR.parse().unwrap()
}

/// One of the uplink veth's own counters (`ethtool -S`), kept by the kernel's veth driver.
fn uplink_counter(t: &Topology, name: &str) -> u64 {
    let out = t.exec("host", &["ethtool", "-S", UPLINK]);
    out.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")).map(|v| v.parse().unwrap()))
        .unwrap_or_else(|| panic!("no {name} in ethtool -S {UPLINK}:\n{out}"))
}

/// A topology whose network `web` has `--xdp`; the outside sends whole checksums, as a NIC does.
fn xdp_topology(tag: &str, subnet: &str) -> Topology {
    let t = Topology::with_outside(tag);
    t.exec("outside", &["ethtool", "-K", "eth0", "tx", "off"]);
    t.network("web", &["--subnet", subnet, "--xdp"]);
    t
}

#[test]
fn xdp_runs_native_and_redirects_published_tcp_and_udp() {
    let mut t = xdp_topology("xnat", "10.76.0.0/24");
    t.container("srv", "web", &["-p", "8080:80", "-p", "5353:53/udp"]);

    // The kernel's word: a driver-mode program (`ip` says `xdp`, not `xdpgeneric`), and a BPF
    // link of type xdp on the uplink.
    let link = t.exec("host", &["ip", "-d", "link", "show", UPLINK]);
    assert!(link.contains("prog/xdp") && !link.contains("xdpgeneric"), "xdp_uplink is not native:\n{link}");
    let links = t.exec("host", &["bpftool", "link", "show"]);
    assert!(links.contains("type xdp") || links.contains(": xdp "), "no XDP link:\n{links}");
    assert_eq!(t.np_json(&["network", "inspect", "web"])["xdp_mode"], "native");
    // The container's end runs NAPI (GRO on), without which it would drop redirected frames.
    let features = t.exec("srv", &["ethtool", "-k", "eth0"]);
    assert!(features.contains("generic-receive-offload: on"), "GRO is off on the endpoint:\n{features}");

    let any = Ipv4Addr::UNSPECIFIED;
    let listener = in_netns(&t.ns_path("srv"), || TcpListener::bind((any, 80)).unwrap());
    let udp = in_netns(&t.ns_path("srv"), || UdpSocket::bind((any, 53)).unwrap());
    let tcp_server = std::thread::spawn(move || {
        for _ in 0..3 {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).unwrap();
            s.write_all(&buf[..n]).unwrap();
        }
    });
    let redirected_before = uplink_counter(&t, "rx_queue_0_xdp_redirect");
    for i in 0..3 {
        let msg = format!("tcp {i}");
        assert_eq!(tcp_request(&t, "outside", SocketAddr::from((uplink_ip(), 8080)), &msg).0, msg);
        let client = in_netns(&t.ns_path("outside"), || UdpSocket::bind("0.0.0.0:0").unwrap());
        client.send_to(format!("udp {i}").as_bytes(), (uplink_ip(), 5353)).unwrap();
        udp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = udp.recv_from(&mut buf).expect("a datagram to published UDP port 5353");
        assert_eq!(&buf[..n], format!("udp {i}").as_bytes());
        assert_eq!(from.ip(), outside_ip(), "the client's address reaches the endpoint untranslated");
    }
    tcp_server.join().unwrap();
    // Every TCP segment and datagram from the outside went through XDP_REDIRECT, by the
    // kernel's count: 3 datagrams + 3 connections of at least 4 segments each.
    let redirected = uplink_counter(&t, "rx_queue_0_xdp_redirect") - redirected_before;
    assert!(redirected >= 15, "the uplink redirected only {redirected} frames");
    let stats = t.np_json(&["stats"]);
    assert!(stats["xdp_redirected"]["packets"].as_u64().unwrap() >= 15, "{stats}");
    assert_eq!(t.exec("host", &["ip", "-d", "link", "show", UPLINK]).matches("xdpgeneric").count(), 0);
    t.assert_no_netfilter();
    t.np(&["network", "rm", "web", "--force"]);
    assert!(!t.exec("host", &["ip", "link", "show", UPLINK]).contains("prog/xdp"), "XDP left on the uplink");
    t.teardown();
}

/// Crafted frames from the outside's raw socket: each kind is dropped by XDP (the uplink's
/// `xdp_drops` counts it, so the stack and `from_uplink` never saw it) under the reason the TC
/// path gives it, and the published port keeps working.
#[test]
fn xdp_drops_unsolicited_spoofed_martian_and_malformed_frames() {
    let mut t = xdp_topology("xdrop", "10.76.1.0/24");
    let srv = t.container("srv", "web", &["-p", "8080:80"]);
    let endpoint = ip_of(&srv);
    let wire = RawSocket::open(&t.ns_path("outside"), "eth0");
    let (src_mac, dst_mac) = (mac_of(&t, "outside", "eth0"), mac_of(&t, "host", UPLINK));
    let syn = |sport| Tcp { sport, dport: 8080, seq: 1, ack: 0, flags: TCP_SYN };

    let udp_to = |dst: Ipv4Addr, src: Ipv4Addr| {
        udp_frame(dst_mac, src_mac, Ipv4::new(src, dst, IPPROTO_UDP), 40000, 9999, b"unasked")
    };
    // An IPv4 header claiming 200 bytes in a 60-byte frame.
    let mut malformed = Ipv4::new(outside_ip(), uplink_ip(), IPPROTO_UDP).packet(&[0u8; 26]);
    malformed[2..4].copy_from_slice(&200u16.to_be_bytes());
    let cases: [(&str, Vec<u8>); 5] = [
        ("unsolicited", udp_to(endpoint, outside_ip())),
        ("unsolicited", tcp_frame(dst_mac, src_mac, Ipv4::new(outside_ip(), endpoint, IPPROTO_TCP), syn(40001), b"")),
        // The endpoint's own address as the source, to its published port.
        (
            "source-mismatch",
            tcp_frame(dst_mac, src_mac, Ipv4::new(endpoint, uplink_ip(), IPPROTO_TCP), syn(40002), b""),
        ),
        ("martian", udp_to(Ipv4Addr::LOCALHOST, outside_ip())),
        ("malformed", ethernet(dst_mac, src_mac, None, ETH_P_IP, &malformed)),
    ];
    for (reason, frame) in &cases {
        let (before, xdp_before) = (t.drop_count(reason), uplink_counter(&t, "rx_queue_0_xdp_drops"));
        for _ in 0..5 {
            wire.send(frame);
        }
        std::thread::sleep(Duration::from_millis(200));
        let (dropped, by_xdp) =
            (t.drop_count(reason) - before, uplink_counter(&t, "rx_queue_0_xdp_drops") - xdp_before);
        assert_eq!(dropped, 5, "expected 5 more `{reason}` drops, got {dropped}");
        assert_eq!(by_xdp, 5, "`{reason}` frames were not dropped by XDP ({by_xdp} of 5)");
    }
    let listener = in_netns(&t.ns_path("srv"), || TcpListener::bind((Ipv4Addr::UNSPECIFIED, 80)).unwrap());
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap();
        s.write_all(&buf[..n]).unwrap();
    });
    assert_eq!(tcp_request(&t, "outside", SocketAddr::from((uplink_ip(), 8080)), "still").0, "still");
    server.join().unwrap();
    t.assert_no_netfilter();
    t.teardown();
}
