//! Published ports (`-p`), reached from every direction with no iptables and no proxy: from
//! the outside (DNAT on the uplink), from the host (cgroup socket programs), and from
//! containers through the host address (hairpin), including the published container itself.
use std::{
    io::{ErrorKind, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use netpath_tests::{Topology, UPLINK_ADDR, in_netns, tcp_request};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(5);

fn host(port: u16) -> SocketAddr {
    SocketAddr::from((UPLINK_ADDR.parse::<Ipv4Addr>().unwrap(), port))
}

/// Echoes `conns` TCP connections, prefixing each reply with the server's port.
fn tcp_echo(listener: TcpListener, conns: usize) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let port = listener.local_addr().unwrap().port();
        for _ in 0..conns {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 256];
            let n = conn.read(&mut buf).unwrap();
            conn.write_all(format!("{port}:").as_bytes()).unwrap();
            conn.write_all(&buf[..n]).unwrap();
        }
    })
}

/// Echoes `datagrams` UDP datagrams, prefixed with the server's port.
fn udp_echo(sock: UdpSocket, datagrams: usize) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let port = sock.local_addr().unwrap().port();
        let mut buf = [0u8; 256];
        for _ in 0..datagrams {
            let (n, from) = sock.recv_from(&mut buf).unwrap();
            let mut reply = format!("{port}:").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            sock.send_to(&reply, from).unwrap();
        }
    })
}

fn udp_request(t: &Topology, ns: &str, to: SocketAddr, msg: &str) -> (String, SocketAddr) {
    let sock = in_netns(&t.ns_path(ns), || UdpSocket::bind("0.0.0.0:0").unwrap());
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    sock.send_to(msg.as_bytes(), to).unwrap();
    let mut buf = [0u8; 256];
    let (n, from) = sock.recv_from(&mut buf).unwrap_or_else(|e| panic!("{ns} -> {to} udp: {e}"));
    (String::from_utf8_lossy(&buf[..n]).into_owned(), from)
}

#[test]
fn published_ports_answer_from_every_direction() {
    let mut t = Topology::with_outside("pub");
    t.network("web", &["--subnet", "10.70.0.0/24"]);
    let srv = t.container("srv", "web", &["-p", "8080:80", "-p", "5353:53/udp"]);
    t.container("cli", "web", &[]);
    assert_eq!(srv["ports"].as_array().unwrap().len(), 2);
    let any = Ipv4Addr::UNSPECIFIED;
    let listener = in_netns(&t.ns_path("srv"), || TcpListener::bind((any, 80)).unwrap());
    let udp = in_netns(&t.ns_path("srv"), || UdpSocket::bind((any, 53)).unwrap());
    let paths = [
        ("outside", host(8080), host(5353)),
        ("host", "127.0.0.1:8080".parse().unwrap(), "127.0.0.1:5353".parse().unwrap()),
        ("host", host(8080), host(5353)),
        ("cli", host(8080), host(5353)),
        ("srv", host(8080), host(5353)),
    ];
    let tcp_server = tcp_echo(listener, paths.len());
    let udp_server = udp_echo(udp, paths.len());
    for (ns, tcp_to, udp_to) in paths {
        let msg = format!("hello from {ns} to {tcp_to}");
        let (reply, peer) = tcp_request(&t, ns, tcp_to, &msg);
        assert_eq!(reply, format!("80:{msg}"), "tcp {ns} -> {tcp_to}");
        assert_eq!(peer, tcp_to, "the client sees the address it dialled");
        let (reply, from) = udp_request(&t, ns, udp_to, &msg);
        assert_eq!(reply, format!("53:{msg}"), "udp {ns} -> {udp_to}");
        assert_eq!(from, udp_to, "the reply comes from the address the client sent to");
    }
    tcp_server.join().unwrap();
    udp_server.join().unwrap();

    let ports = t.np_json(&["port", "ls"]);
    let listed: Vec<String> = ports
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}:{}->{}", p["proto"].as_str().unwrap(), p["host_port"], p["container_port"]))
        .collect();
    assert_eq!(listed, ["tcp:8080->80", "udp:5353->53"]);
    assert_eq!(t.map_entries("PORTMAP").len(), 2);
    t.teardown();
}

#[test]
fn a_port_range_works_end_to_end() {
    let mut t = Topology::with_outside("rng");
    t.network("web", &["--subnet", "10.71.0.0/24"]);
    t.container("srv", "web", &["-p", "9000-9009:80-89"]);
    let servers: Vec<_> = (80..90)
        .map(|port| {
            tcp_echo(in_netns(&t.ns_path("srv"), || TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).unwrap()), 1)
        })
        .collect();
    for i in 0..10u16 {
        let (reply, _) = tcp_request(&t, "outside", host(9000 + i), "ping");
        assert_eq!(reply, format!("{}:ping", 80 + i));
    }
    servers.into_iter().for_each(|s| s.join().unwrap());
    assert_eq!(t.np_json(&["port", "ls"]).as_array().unwrap().len(), 10);
    t.teardown();
}

#[test]
fn publishing_a_taken_port_fails_and_changes_nothing() {
    let mut t = Topology::with_outside("tkn");
    t.network("web", &["--subnet", "10.72.0.0/24"]);
    t.container("srv", "web", &["-p", "8080:80", "-p", "127.0.0.1:7000:70"]);
    let before = (t.np(&["port", "ls", "--format", "json"]), t.np(&["endpoint", "ls", "--format", "json"]));
    let other = t.netns("other");
    for (spec, msg) in [
        ("8080:81", "host port 8080/tcp is already published by endpoint 'srv'; pick another"),
        ("10.99.0.1:8080:81", "host port 8080/tcp is already published by endpoint 'srv'"),
        ("7000:70", "host port 7000/tcp is already published by endpoint 'srv'"),
        ("8081-8082:80", "differ in length"),
    ] {
        let err = t.np_err(&["attach", "--network", "web", "--netns", &other, "--id", "other", "-p", spec]);
        assert!(err.contains(msg), "{spec}: {err}");
        assert_eq!((t.np(&["port", "ls", "--format", "json"]), t.np(&["endpoint", "ls", "--format", "json"])), before);
        assert!(t.link("other", "eth0").is_none(), "{spec} left an interface behind");
    }
    // The same port over another protocol, or on another address than a specific one, is free.
    t.np(&[
        "attach",
        "--network",
        "web",
        "--netns",
        &other,
        "--id",
        "other",
        "-p",
        "8080:80/udp",
        "-p",
        "10.99.0.1:7000:70",
    ]);
    t.teardown();
}

/// Answers to masqueraded connections arrive on the uplink's address at ports of the SNAT range:
/// a publication on one of those ports would take them. Such a `-p` is refused, naming the
/// range, and leaves nothing behind; a port outside the range is published and answers; and
/// the SNAT range cannot be moved onto a published port afterwards.
#[test]
fn a_host_port_in_the_snat_range_is_not_published() {
    let mut t = Topology::with_outside("snp");
    t.network("web", &["--subnet", "10.74.0.0/24"]);
    let settings = t.np_json(&["datapath", "show"]);
    let [min, max] = ["snat_port_min", "snat_port_max"].map(|k| settings[k].as_u64().expect(k) as u16);
    let before = (t.np(&["port", "ls", "--format", "json"]), t.np(&["endpoint", "ls", "--format", "json"]));
    let srv = t.netns("srv");
    for (spec, port) in [
        (format!("{min}:80"), format!("{min}/tcp")),
        (format!("{max}:53/udp"), format!("{max}/udp")),
        (format!("127.0.0.1:{}:80", min + 1), format!("{}/tcp", min + 1)),
        (format!("{}-{min}:80-81", min - 1), format!("{min}/tcp")),
    ] {
        let err = t.np_err(&["attach", "--network", "web", "--netns", &srv, "--id", "srv", "-p", &spec]);
        let expected = format!("host port {port} of -p ");
        assert!(
            err.contains(&expected) && err.contains(&format!("is in the SNAT port range {min}-{max}")),
            "-p {spec}: {err}"
        );
        assert_eq!((t.np(&["port", "ls", "--format", "json"]), t.np(&["endpoint", "ls", "--format", "json"])), before);
        assert!(t.link("srv", "eth0").is_none(), "-p {spec} left an interface behind");
        let links = t.exec("host", &["ip", "-o", "link", "show"]);
        assert!(!links.contains(": npv"), "-p {spec} left a veth behind: {links}");
    }

    t.np(&["attach", "--network", "web", "--netns", &srv, "--id", "srv", "-p", "8080:80"]);
    let server = tcp_echo(in_netns(&t.ns_path("srv"), || TcpListener::bind((Ipv4Addr::UNSPECIFIED, 80)).unwrap()), 1);
    assert_eq!(tcp_request(&t, "outside", host(8080), "outside the range").0, "80:outside the range");
    server.join().unwrap();

    let err = t.np_err(&["datapath", "configure", "--snat-ports", "8000-8999"]);
    assert!(err.contains("SNAT ports 8000-8999 include host port 8080/tcp that endpoint 'srv' publishes"), "{err}");
    assert_eq!(t.np_json(&["datapath", "show"]), settings, "a refused configure changed the settings");
    t.teardown();
}

/// After detach the published port no longer leads to the container, though its server still
/// runs: it is the host's port again, answered by a host process listening on it (which the
/// publication overrode while it existed), from the outside and from the host alike.
#[test]
fn after_detach_the_port_leads_to_the_host_not_the_container() {
    let mut t = Topology::with_outside("gone");
    t.network("web", &["--subnet", "10.73.0.0/24"]);
    t.container("srv", "web", &["-p", "8080:80"]);
    let _srv =
        EchoServer::start(in_netns(&t.ns_path("srv"), || TcpListener::bind((Ipv4Addr::UNSPECIFIED, 80)).unwrap()));
    // A host process on the published port: the publication wins while it exists.
    let _host =
        EchoServer::start(in_netns(&t.ns_path("host"), || TcpListener::bind((Ipv4Addr::UNSPECIFIED, 8080)).unwrap()));
    for ns in ["outside", "host"] {
        assert_eq!(tcp_request(&t, ns, host(8080), "x").0, "80:x", "{ns} -> the published port");
    }
    // No process but this test's own is in any of the topology's namespaces: netpath is
    // one-shot and there is no proxy carrying the traffic.
    for ns in ["host", "srv", "outside"] {
        assert_eq!(processes_in(&t.ns_path(ns)), Vec::<u32>::new(), "processes in {ns}");
    }
    // Nor any netfilter rule or kernel conntrack entry in any of them.
    t.assert_no_netfilter();

    t.np(&["detach", "--id", "srv"]);
    // The container's server still runs (its namespace reaches it over loopback) ...
    assert_eq!(tcp_request(&t, "srv", SocketAddr::from((Ipv4Addr::LOCALHOST, 80)), "y").0, "80:y");
    // ... but the port leads to the host's listener now, from the wire and from the host.
    for ns in ["outside", "host"] {
        let reply = in_netns(&t.ns_path(ns), || request(host(8080), "z"));
        assert_eq!(reply.as_deref().map_err(|e| e.to_string()), Ok("8080:z"), "{ns} -> port 8080 after detach");
    }
    assert_eq!(t.np_json(&["port", "ls"]), Value::Array(vec![]));
    assert!(t.map_entries("PORTMAP").is_empty());
    let version = t.datapath_dir();
    let cgroup_links = std::fs::read_dir(version.join("links"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("cgroup-"))
        .count();
    assert_eq!(cgroup_links, 0, "the socket programs stay attached with no port published");
    t.teardown();
}

/// One TCP request and its whole reply.
fn request(to: SocketAddr, msg: &str) -> std::io::Result<String> {
    let mut conn = TcpStream::connect_timeout(&to, TIMEOUT)?;
    conn.set_read_timeout(Some(TIMEOUT))?;
    conn.write_all(msg.as_bytes())?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply)?;
    Ok(reply)
}

/// Answers every TCP connection with its port and what it read first, until dropped.
struct EchoServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    fn start(listener: TcpListener) -> Self {
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let port = listener.local_addr().unwrap().port();
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        conn.set_nonblocking(false).unwrap();
                        conn.set_read_timeout(Some(TIMEOUT)).unwrap();
                        let mut buf = [0u8; 256];
                        let n = conn.read(&mut buf).unwrap_or(0);
                        let _ = conn.write_all(&[format!("{port}:").as_bytes(), &buf[..n]].concat());
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(10)),
                    Err(e) => panic!("accept on port {port}: {e}"),
                }
            }
        });
        Self { stop, thread: Some(thread) }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Pids of the processes, other than this one, whose network namespace is `ns_path`.
fn processes_in(ns_path: &str) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let target = std::fs::metadata(ns_path).unwrap().ino();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == target))
        .collect()
}

#[test]
fn the_xdp_filter_variant_serves_published_ports_from_outside() {
    xdp_variant("xdpf", "10.74.1.0/24", &[]);
}

#[test]
fn the_xdp_redirect_variant_serves_published_ports_from_outside() {
    xdp_variant("xdp", "10.74.0.0/24", &["redirect"]);
}

/// `--xdp` followed by `mode`: the same published ports answer; only `redirect` has XDP carry
/// them.
fn xdp_variant(tag: &str, subnet: &str, mode: &[&str]) {
    let mut t = Topology::with_outside(tag);
    // XDP updates checksums by hand: the outside sends fully checksummed frames, as a NIC does.
    t.exec("outside", &["ethtool", "-K", "eth0", "tx", "off"]);
    t.network("web", &[&["--subnet", subnet, "--xdp"], mode].concat());
    t.container("srv", "web", &["-p", "8080:80", "-p", "5353:53/udp"]);
    // veth has XDP in its driver: the kernel must say so, not only netpath.
    let link = t.exec("host", &["ip", "-d", "link", "show", netpath_tests::UPLINK]);
    assert!(link.contains(" xdp ") && !link.contains("xdpgeneric"), "xdp_uplink is not native: {link}");
    assert_eq!(t.np_json(&["network", "inspect", "web"])["xdp_mode"], "native");
    let any = Ipv4Addr::UNSPECIFIED;
    let tcp_server = tcp_echo(in_netns(&t.ns_path("srv"), || TcpListener::bind((any, 80)).unwrap()), 3);
    let udp_server = udp_echo(in_netns(&t.ns_path("srv"), || UdpSocket::bind((any, 53)).unwrap()), 3);
    for i in 0..3 {
        let msg = format!("request {i} {}", "x".repeat(100));
        assert_eq!(tcp_request(&t, "outside", host(8080), &msg).0, format!("80:{msg}"));
        assert_eq!(udp_request(&t, "outside", host(5353), &msg).0, format!("53:{msg}"));
    }
    tcp_server.join().unwrap();
    udp_server.join().unwrap();
    let stats = t.np_json(&["stats"]);
    let redirected = stats["xdp_redirected"]["packets"].as_u64().unwrap();
    if mode == ["redirect"] {
        assert!(redirected >= 9, "XDP did not carry the traffic: {stats}");
    } else {
        assert_eq!(redirected, 0, "XDP redirected in filter mode: {stats}");
    }
    t.np(&["network", "rm", "web", "--force"]);
    assert!(
        !t.exec("host", &["ip", "link", "show", netpath_tests::UPLINK]).contains("prog/xdp"),
        "XDP left on the uplink"
    );
    t.teardown();
}

/// A TCP connection from a chosen local port, as a client reconnecting from the same port.
fn connect_from(t: &Topology, ns: &str, local_port: u16, to: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(to) = to else { unreachable!("IPv4 only") };
    in_netns(&t.ns_path(ns), move || unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        let stream = TcpStream::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, (&one as *const libc::c_int).cast(), 4);
        let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(ip.octets()) },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        let local = sockaddr(Ipv4Addr::UNSPECIFIED, local_port);
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let remote = sockaddr(*to.ip(), to.port());
        if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    })
}

#[test]
fn a_client_reconnects_from_the_same_port_and_detach_ends_connections() {
    let mut t = Topology::with_outside("reco");
    t.network("web", &["--subnet", "10.75.0.0/24"]);
    t.container("srv", "web", &["-p", "8080:80"]);
    let server = tcp_echo(in_netns(&t.ns_path("srv"), || TcpListener::bind((Ipv4Addr::UNSPECIFIED, 80)).unwrap()), 3);
    // The server closes first, so the client's port is free again at once; the connection's
    // conntrack entries are still there (closing) when the same 4-tuple comes back.
    for i in 0..3 {
        // Under load the client may still wait for the final ACK of its FIN (LAST_ACK) when
        // the next connection starts: its port is busy for that moment (EADDRNOTAVAIL).
        // A lost final ACK costs the client a FIN retransmission or two (200 ms, 400 ms, ...).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut conn = loop {
            match connect_from(&t, "outside", 40000, host(8080)) {
                Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                other => break other.unwrap_or_else(|e| panic!("connection {i}: {e}; {}", closing_evidence(&t))),
            }
        };
        conn.set_read_timeout(Some(TIMEOUT)).unwrap();
        conn.write_all(b"again").unwrap();
        let mut reply = String::new();
        conn.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, "80:again", "connection {i}");
    }
    server.join().unwrap();
    assert!(!t.map_entries("CT").is_empty());
    t.np(&["detach", "--id", "srv"]);
    assert_eq!(t.np_json(&["conntrack", "ls"]), Value::Array(vec![]), "the endpoint's connections outlived it");
    t.teardown();
}

/// What keeps the client's port busy, for a failure to show: the client's sockets on it,
/// the connection as netpath tracks it, and the drops that could have eaten the closing
/// segments.
fn closing_evidence(t: &Topology) -> String {
    let sockets = t.exec("outside", &["ss", "-tanoi", "sport", "=", ":40000"]);
    let tracked = t.np_json(&["conntrack", "ls"]);
    let drops: Vec<String> = ["out-of-window", "not-syn", "unsolicited"]
        .iter()
        .map(|reason| format!("{reason} {}", t.drop_count(reason)))
        .collect();
    format!("client sockets: {sockets}; conntrack: {tracked}; drops: {}", drops.join(", "))
}

/// Receives one datagram within a second, or `None`.
fn recv_within_a_second(sock: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = [0u8; 64];
    match sock.recv_from(&mut buf) {
        Ok((n, from)) => Some((buf[..n].to_vec(), from)),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(e) => panic!("recv: {e}"),
    }
}

/// A detach ends its endpoint's connections without walking the conntrack tables (their
/// entries name its host veth, which is gone): an endpoint that takes over the address gets
/// nothing of them, neither what the outside sends to the old published port nor answers to
/// the old masqueraded flow, and opens the same tuple afresh.
#[test]
fn a_successor_at_a_detached_endpoints_address_inherits_none_of_its_connections() {
    let mut t = Topology::with_outside("succ");
    t.network("web", &["--subnet", "10.76.0.0/24"]);
    let addr: Ipv4Addr = "10.76.0.9".parse().unwrap();
    let outside = |port: u16| SocketAddr::from((netpath_tests::OUTSIDE_ADDR.parse::<Ipv4Addr>().unwrap(), port));
    t.container("old", "web", &["--ip", &addr.to_string(), "-p", "8080:80/udp"]);

    // Inbound: outside:41000 → host:8080 → old:80, answered.
    let server = in_netns(&t.ns_path("old"), || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 80)).unwrap());
    let client = in_netns(&t.ns_path("outside"), || UdpSocket::bind(outside(41000)).unwrap());
    client.send_to(b"in", host(8080)).unwrap();
    let (_, peer) = recv_within_a_second(&server).expect("the published port delivers");
    server.send_to(b"back", peer).unwrap();
    assert_eq!(recv_within_a_second(&client).expect("the answer comes back").0, b"back");
    // Outbound: old:5555 → outside:7300, masqueraded, answered.
    let remote = in_netns(&t.ns_path("outside"), || UdpSocket::bind(outside(7300)).unwrap());
    let opener = in_netns(&t.ns_path("old"), || UdpSocket::bind((addr, 5555)).unwrap());
    opener.send_to(b"out", outside(7300)).unwrap();
    let (_, masqueraded) = recv_within_a_second(&remote).expect("egress is masqueraded");
    remote.send_to(b"reply", masqueraded).unwrap();
    assert_eq!(recv_within_a_second(&opener).expect("the reply comes back").0, b"reply");
    assert_eq!(t.np_json(&["conntrack", "ls"]).as_array().unwrap().len(), 2);
    drop((server, opener));

    t.np(&["detach", "--id", "old"]);
    assert_eq!(t.np_json(&["conntrack", "ls"]), Value::Array(vec![]), "a detached endpoint's connections live on");
    let held = t.map_entries("CT").len() + t.map_entries("CT_NEW").len();
    assert_eq!(held, 4, "a detach walks no table: the two connections' entries stay until reused or collected");

    // The successor publishes nothing and listens where the old endpoint did.
    t.container("new", "web", &["--ip", &addr.to_string()]);
    let server = in_netns(&t.ns_path("new"), || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 80)).unwrap());
    let opener = in_netns(&t.ns_path("new"), || UdpSocket::bind((addr, 5555)).unwrap());
    client.send_to(b"stale-in", host(8080)).unwrap();
    remote.send_to(b"stale-out", masqueraded).unwrap();
    assert_eq!(recv_within_a_second(&server), None, "the old published connection reached the successor");
    assert_eq!(recv_within_a_second(&opener), None, "an answer to the old masqueraded flow reached the successor");

    // Its own flow on the same tuple is translated afresh and answered.
    opener.send_to(b"fresh", outside(7300)).unwrap();
    let (data, from) = recv_within_a_second(&remote).expect("the successor's own flow leaves");
    assert_eq!(data, b"fresh");
    remote.send_to(b"ok", from).unwrap();
    assert_eq!(recv_within_a_second(&opener).expect("its answer comes back").0, b"ok");
    let conns = t.np_json(&["conntrack", "ls"]);
    let conns = conns.as_array().unwrap();
    assert!(conns.len() == 1 && conns[0]["endpoint"] == "new", "{conns:?}");
    // `conntrack gc` gives the ended connection's room back at once (the old egress flow's
    // original entry was taken over by the fresh one on its tuple).
    let gc = t.np(&["conntrack", "gc"]);
    assert!(gc.starts_with("1 ended"), "{gc}");
    assert_eq!(t.map_entries("CT").len() + t.map_entries("CT_NEW").len(), 2, "only the fresh flow's entries are left");
    t.teardown();
}
