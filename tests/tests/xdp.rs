//! `xdp_uplink` on a veth uplink: attached in native mode (as the kernel reports it, not only
//! netpath); with `--xdp redirect`, published TCP and UDP ports served through its devmap
//! redirect; with `--xdp` (filter), served by the TC path while XDP redirects nothing; in both,
//! what the outside must not send dropped by XDP itself (the uplink's own XDP drop counter
//! moves) under the same reasons as the TC path.
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

/// A topology whose network `web` has `--xdp` and `mode` after it (none: filter); the outside
/// sends whole checksums, as a NIC does.
fn xdp_topology(tag: &str, subnet: &str, mode: &[&str]) -> Topology {
    let t = Topology::with_outside(tag);
    t.exec("outside", &["ethtool", "-K", "eth0", "tx", "off"]);
    t.network("web", &[&["--subnet", subnet, "--xdp"], mode].concat());
    t
}

/// Whether GRO is on at the container's end of `ns`'s eth0.
fn endpoint_gro(t: &Topology, ns: &str) -> bool {
    let features = t.exec(ns, &["ethtool", "-k", "eth0"]);
    features.contains("generic-receive-offload: on")
}

/// Three TCP requests to published port 8080 (container port 80) and three datagrams to 5353
/// (53/udp) from the outside, each answered or received as sent.
fn serve_published_tcp_and_udp(t: &Topology, srv: &str) {
    let any = Ipv4Addr::UNSPECIFIED;
    let listener = in_netns(&t.ns_path(srv), || TcpListener::bind((any, 80)).unwrap());
    let udp = in_netns(&t.ns_path(srv), || UdpSocket::bind((any, 53)).unwrap());
    let tcp_server = std::thread::spawn(move || {
        for _ in 0..3 {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).unwrap();
            s.write_all(&buf[..n]).unwrap();
        }
    });
    for i in 0..3 {
        let msg = format!("tcp {i}");
        assert_eq!(tcp_request(t, "outside", SocketAddr::from((uplink_ip(), 8080)), &msg).0, msg);
        let client = in_netns(&t.ns_path("outside"), || UdpSocket::bind("0.0.0.0:0").unwrap());
        client.send_to(format!("udp {i}").as_bytes(), (uplink_ip(), 5353)).unwrap();
        udp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = udp.recv_from(&mut buf).expect("a datagram to published UDP port 5353");
        assert_eq!(&buf[..n], format!("udp {i}").as_bytes());
        assert_eq!(from.ip(), outside_ip(), "the client's address reaches the endpoint untranslated");
    }
    tcp_server.join().unwrap();
}

#[test]
fn xdp_runs_native_and_redirects_published_tcp_and_udp() {
    let mut t = xdp_topology("xnat", "10.76.0.0/24", &["redirect"]);
    t.container("srv", "web", &["-p", "8080:80", "-p", "5353:53/udp"]);

    // The kernel's word: a driver-mode program (`ip` says `xdp`, not `xdpgeneric`), and a BPF
    // link of type xdp on the uplink.
    let link = t.exec("host", &["ip", "-d", "link", "show", UPLINK]);
    assert!(link.contains("prog/xdp") && !link.contains("xdpgeneric"), "xdp_uplink is not native:\n{link}");
    // bpftool lists the links of the whole machine: look at this topology's own, pinned by
    // netpath, whose program (each topology loads its own) is the one `ip` reports on this
    // uplink. (bpftool does not show an XDP link's ifindex.)
    let pin = t.datapath_dir().join("links").join(format!("xdp-{UPLINK}"));
    let out = std::process::Command::new("bpftool").args(["-j", "link", "show", "pinned"]).arg(&pin).output().unwrap();
    assert!(out.status.success(), "no pinned XDP link at {}: {}", pin.display(), String::from_utf8_lossy(&out.stderr));
    let bpf_link: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let uplink: serde_json::Value = t.exec("host", &["ip", "-j", "-d", "link", "show", "dev", UPLINK]).parse().unwrap();
    let uplink = &uplink[0];
    assert_eq!(bpf_link["type"], "xdp", "{bpf_link}");
    assert_eq!(
        bpf_link["prog_id"], uplink["xdp"]["prog"]["id"],
        "the XDP link is not on this uplink: {bpf_link} / {uplink}"
    );
    let inspect = t.np_json(&["network", "inspect", "web"]);
    assert_eq!((&inspect["xdp"], &inspect["xdp_mode"]), (&"redirect".into(), &"native".into()), "{inspect}");
    // The container's end runs NAPI (GRO on), without which it would drop redirected frames.
    assert!(endpoint_gro(&t, "srv"), "GRO is off on the endpoint of a redirecting network");

    let redirected_before = uplink_counter(&t, "rx_queue_0_xdp_redirect");
    serve_published_tcp_and_udp(&t, "srv");
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

/// `--xdp` alone filters: the program runs native on the uplink, but published ports are served
/// by `from_uplink` (the veth driver redirected nothing, netpath counted no XDP redirect), and
/// the endpoint's interface is left as created (no GRO turned on for it).
#[test]
fn xdp_filter_serves_published_tcp_and_udp_through_tc() {
    let mut t = xdp_topology("xflt", "10.76.2.0/24", &[]);
    t.container("srv", "web", &["-p", "8080:80", "-p", "5353:53/udp"]);
    let inspect = t.np_json(&["network", "inspect", "web"]);
    assert_eq!((&inspect["xdp"], &inspect["xdp_mode"]), (&"filter".into(), &"native".into()), "{inspect}");
    assert_eq!(t.np_json(&["network", "ls"])[0]["xdp"], "filter");
    assert!(!endpoint_gro(&t, "srv"), "a filtering network turned GRO on at its endpoint");

    let redirected_before = uplink_counter(&t, "rx_queue_0_xdp_redirect");
    let passed_before = uplink_counter(&t, "rx_queue_0_xdp_packets");
    serve_published_tcp_and_udp(&t, "srv");
    assert_eq!(uplink_counter(&t, "rx_queue_0_xdp_redirect"), redirected_before, "XDP redirected in filter mode");
    // The frames did run through XDP (and were passed on): the program is not idle.
    let ran = uplink_counter(&t, "rx_queue_0_xdp_packets") - passed_before;
    assert!(ran >= 15, "only {ran} frames ran through xdp_uplink");
    let stats = t.np_json(&["stats"]);
    assert_eq!(stats["xdp_redirected"]["packets"], 0, "{stats}");
    t.assert_no_netfilter();
    t.teardown();
}

/// Two networks on one uplink, one filtering and one redirecting: each endpoint is served its
/// network's way, and the program stays on the uplink until the last network with XDP goes.
#[test]
fn networks_with_different_xdp_modes_share_the_uplink() {
    let mut t = xdp_topology("xmix", "10.76.3.0/24", &[]);
    t.network("fast", &["--subnet", "10.76.4.0/24", "--xdp", "redirect"]);
    t.network("plain", &["--subnet", "10.76.5.0/24"]);
    t.container("srv", "web", &["-p", "8080:80", "-p", "5353:53/udp"]);
    t.container("fsrv", "fast", &["-p", "8081:80", "-p", "5354:53/udp"]);
    assert!(!endpoint_gro(&t, "srv") && endpoint_gro(&t, "fsrv"), "GRO only at the redirecting network's endpoint");

    let redirected_before = uplink_counter(&t, "rx_queue_0_xdp_redirect");
    serve_published_tcp_and_udp(&t, "srv");
    assert_eq!(
        uplink_counter(&t, "rx_queue_0_xdp_redirect"),
        redirected_before,
        "the filter network's traffic was redirected"
    );
    let any = Ipv4Addr::UNSPECIFIED;
    let udp = in_netns(&t.ns_path("fsrv"), || UdpSocket::bind((any, 53)).unwrap());
    let client = in_netns(&t.ns_path("outside"), || UdpSocket::bind("0.0.0.0:0").unwrap());
    client.send_to(b"fast", (uplink_ip(), 5354)).unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 16];
    let n = udp.recv(&mut buf).expect("a datagram to the redirecting network's port 5354");
    assert_eq!(&buf[..n], b"fast");
    assert_eq!(uplink_counter(&t, "rx_queue_0_xdp_redirect") - redirected_before, 1, "not redirected by XDP");

    let on_uplink = |t: &Topology| t.exec("host", &["ip", "link", "show", UPLINK]).contains("prog/xdp");
    t.np(&["network", "rm", "fast", "--force"]);
    assert!(on_uplink(&t), "removing the redirecting network took XDP off the filtering network's uplink");
    t.np(&["network", "rm", "web", "--force"]);
    assert!(!on_uplink(&t), "XDP left on the uplink with no network using it");
    t.teardown();
}

/// Crafted frames from the outside's raw socket: each kind is dropped by XDP (the uplink's
/// `xdp_drops` counts it, so the stack and `from_uplink` never saw it) under the reason the TC
/// path gives it, and the published port keeps working.
#[test]
fn xdp_drops_unsolicited_spoofed_martian_and_malformed_frames() {
    drops_in_xdp("xdrop", "10.76.1.0/24", &[]);
}

#[test]
fn xdp_redirect_drops_unsolicited_spoofed_martian_and_malformed_frames() {
    drops_in_xdp("xrdrop", "10.76.6.0/24", &["redirect"]);
}

fn drops_in_xdp(tag: &str, subnet: &str, mode: &[&str]) {
    let mut t = xdp_topology(tag, subnet, mode);
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
