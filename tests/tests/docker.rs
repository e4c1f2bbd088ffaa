//! `netpath daemon` and its Docker plugin API. The protocol test speaks HTTP to the socket
//! itself, plays Docker's part (moving the handed veth end into the sandbox, addressing it)
//! and abuses the server. The sockets of these tests live in the topology's run directory,
//! never in `/run/docker/plugins`.
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use netpath_tests::{OUTSIDE_ADDR, Topology, UPLINK_ADDR, in_netns};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(5);

/// A running `netpath daemon`, stopped by its PID.
struct Daemon {
    child: Option<Child>,
    socket: PathBuf,
}

impl Daemon {
    fn start(t: &Topology, socket: &Path) -> Self {
        let mut cmd = t.netpath_cmd(&["daemon", "--docker-socket", socket.to_str().unwrap(), "--gc-interval", "2"]);
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().expect("spawn daemon");
        let daemon = Self { child: Some(child), socket: socket.to_path_buf() };
        daemon.wait_ready();
        daemon
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&self.socket).is_err() {
            assert!(Instant::now() < deadline, "daemon did not listen on {}", self.socket.display());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// SIGTERM, and the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
            .unwrap();
        child.wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends raw bytes, half-closes, and returns whatever came back.
fn raw(socket: &Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(bytes).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// One plugin call: the HTTP status and the JSON answer.
fn call(socket: &Path, method: &str, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let req = format!(
        "POST /{method} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/vnd.docker.plugins.v1.2+json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    parse_response(&raw(socket, req.as_bytes()))
}

fn parse_response(text: &str) -> (u16, Value) {
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status: {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or_else(|e| panic!("answer {body:?}: {e}")))
}

/// A call that must succeed.
fn ok(socket: &Path, method: &str, body: Value) -> Value {
    let (status, answer) = call(socket, method, &body);
    assert_eq!(status, 200, "{method} {body}: {answer}");
    assert!(answer.get("Err").is_none(), "{method}: {answer}");
    answer
}

const NET_ID: &str = "5f1e7d0c3b2a19087766554433221100ffeeddccbbaa99887766554433221100";

/// What dockerd does for `docker run`: address from IPAM, CreateEndpoint, Join, and then
/// its own part: move the handed end into the sandbox as eth0 and configure it.
fn docker_run(t: &mut Topology, socket: &Path, name: &str) -> (String, Ipv4Addr) {
    let sandbox = t.netns(name);
    t.exec(name, &["ip", "link", "set", "lo", "up"]);
    let endpoint = format!("{name}0000000000000000000000000000000000000000000000000000000000000000")[..64].to_string();
    let addr = ok(socket, "IpamDriver.RequestAddress", json!({"PoolID": "10.71.0.0/24", "Address": "", "Options": {}}));
    let cidr = addr["Address"].as_str().unwrap().to_string();
    let created = ok(
        socket,
        "NetworkDriver.CreateEndpoint",
        json!({"NetworkID": NET_ID, "EndpointID": endpoint, "Interface": {"Address": cidr, "AddressIPv6": "", "MacAddress": ""}, "Options": {}}),
    );
    assert!(created["Interface"]["MacAddress"].as_str().unwrap().starts_with("02:4e:"), "{created}");
    let joined = ok(
        socket,
        "NetworkDriver.Join",
        json!({"NetworkID": NET_ID, "EndpointID": endpoint, "SandboxKey": sandbox, "Options": {}}),
    );
    assert_eq!(joined["InterfaceName"]["DstPrefix"], "eth");
    assert_eq!(joined["Gateway"], "10.71.0.1");
    let src = joined["InterfaceName"]["SrcName"].as_str().unwrap();
    // The host end carries the datapath before the container end is up.
    let host_veth = format!("npv{}", &src[3..]);
    let link = t.datapath_dir().unwrap().join("links").join(&host_veth);
    assert!(link.exists(), "no TCX link pinned for {host_veth}");
    let state = t.exec("host", &["ip", "-o", "link", "show", src]);
    assert!(state.contains("state DOWN"), "the container end is not up yet: {state}");
    t.exec("host", &["ip", "link", "set", src, "netns", &format!("{}-{name}", t.prefix)]);
    t.exec(name, &["ip", "link", "set", src, "name", "eth0"]);
    t.exec(name, &["ip", "addr", "add", &cidr, "dev", "eth0"]);
    t.exec(name, &["ip", "link", "set", "eth0", "up"]);
    t.exec(name, &["ip", "route", "add", "default", "via", "10.71.0.1"]);
    (endpoint, cidr.split('/').next().unwrap().parse().unwrap())
}

fn docker_rm(socket: &Path, endpoint: &str, ip: Ipv4Addr) {
    let ids = json!({"NetworkID": NET_ID, "EndpointID": endpoint});
    ok(socket, "NetworkDriver.RevokeExternalConnectivity", ids.clone());
    ok(socket, "NetworkDriver.Leave", ids.clone());
    ok(socket, "NetworkDriver.DeleteEndpoint", ids);
    ok(socket, "IpamDriver.ReleaseAddress", json!({"PoolID": "10.71.0.0/24", "Address": ip.to_string()}));
}

fn tcp_echo_once(t: &Topology, ns: &str, port: u16) -> std::thread::JoinHandle<()> {
    let listener = in_netns(&t.ns_path(ns), || TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).unwrap());
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 64];
        let n = conn.read(&mut buf).unwrap();
        conn.write_all(&buf[..n]).unwrap();
    })
}

fn tcp_roundtrip(t: &Topology, ns: &str, to: SocketAddr, msg: &str) -> String {
    let mut conn = in_netns(&t.ns_path(ns), || TcpStream::connect_timeout(&to, TIMEOUT))
        .unwrap_or_else(|e| panic!("{ns} -> {to}: {e}"));
    conn.set_read_timeout(Some(TIMEOUT)).unwrap();
    conn.write_all(msg.as_bytes()).unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    reply
}

fn endpoint_stat(t: &Topology, id: &str, field: &str) -> u64 {
    let stats = t.np_json(&["stats"]);
    let ep = stats["endpoints"].as_array().unwrap().iter().find(|e| e["id"] == id).cloned();
    ep.unwrap_or_else(|| panic!("{id} not in {stats}"))[field].as_u64().unwrap()
}

#[test]
fn the_plugin_api_wires_containers_and_survives_abuse_and_restarts() {
    let mut t = Topology::with_outside("dk");
    let socket = t.run_dir.join("plugins/netpath.sock");
    let daemon = Daemon::start(&t, &socket);
    let mode = std::fs::metadata(&socket).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions())).unwrap();
    assert_eq!(mode & 0o777, 0o660);

    assert_eq!(ok(&socket, "Plugin.Activate", json!({}))["Implements"], json!(["NetworkDriver", "IpamDriver"]));
    assert_eq!(
        ok(&socket, "NetworkDriver.GetCapabilities", json!({})),
        json!({"Scope": "local", "ConnectivityScope": "local"})
    );
    // A second daemon on a live socket refuses to start and leaves the first serving.
    let second = t.netpath(&["daemon", "--docker-socket", socket.to_str().unwrap()]);
    assert_eq!(second.status.code(), Some(4), "{}", String::from_utf8_lossy(&second.stderr));
    assert!(String::from_utf8_lossy(&second.stderr).contains("served by a running daemon"));

    // Abuse: each gets an error answer or a closed connection, and the next call works.
    let (status, answer) = parse_response(&raw(&socket, b"\x00\x01garbage\r\n\r\n"));
    assert_eq!(status, 400, "{answer}");
    assert!(answer["Err"].is_string());
    let (status, answer) = call(&socket, "NetworkDriver.Teleport", &json!({}));
    assert_eq!((status, answer["Err"].as_str().unwrap()), (404, "unknown method 'NetworkDriver.Teleport'"));
    let (status, answer) = parse_response(&raw(
        &socket,
        b"POST /NetworkDriver.Join HTTP/1.1\r\nContent-Length: 9\r\n\r\n{\"Endpo\"}",
    ));
    assert_eq!(status, 400, "{answer}");
    let half = raw(&socket, b"POST /NetworkDriver.CreateNetwork HTTP/1.1\r\nContent-Length: 500\r\n\r\n{\"NetworkID\":");
    assert_eq!(half, "", "a half-sent request gets no answer");
    // A client that says nothing holds no one up, and many at once are each answered.
    let mut silent = UnixStream::connect(&socket).unwrap();
    let callers: Vec<_> = (0..16)
        .map(|i| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let method = if i % 2 == 0 { "Plugin.Activate" } else { "IpamDriver.GetDefaultAddressSpaces" };
                call(&socket, method, &json!({})).0
            })
        })
        .collect();
    for c in callers {
        assert_eq!(c.join().unwrap(), 200);
    }
    // ... and is dropped after its time.
    silent.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut late = String::new();
    let _ = silent.read_to_string(&mut late);
    assert!(late.contains(" 408 "), "a silent client is timed out: {late:?}");

    // docker network create -d netpath --ipam-driver netpath --subnet 10.71.0.0/24 web
    let pool = ok(&socket, "IpamDriver.RequestPool", json!({"AddressSpace": "netpath-local", "Pool": "10.71.0.0/24", "SubPool": "", "Options": {}, "V6": false}));
    assert_eq!(pool["PoolID"], "10.71.0.0/24");
    let overlap = call(&socket, "IpamDriver.RequestPool", &json!({"Pool": "10.71.0.128/25"}));
    assert_eq!(overlap.0, 500, "{}", overlap.1);
    let gw = ok(&socket, "IpamDriver.RequestAddress", json!({"PoolID": "10.71.0.0/24", "Address": "", "Options": {"RequestAddressType": "com.docker.network.gateway"}}));
    assert_eq!(gw["Address"], "10.71.0.1/24");
    ok(
        &socket,
        "NetworkDriver.CreateNetwork",
        json!({"NetworkID": NET_ID, "Options": {"com.docker.network.enable_ipv6": false, "com.docker.network.generic": {}},
               "IPv4Data": [{"AddressSpace": "netpath-local", "Pool": "10.71.0.0/24", "Gateway": "10.71.0.1/24"}], "IPv6Data": []}),
    );
    let nets = t.np_json(&["network", "ls"]);
    assert_eq!(nets[0]["external_id"], NET_ID, "{nets}");
    assert_eq!(nets[0]["subnet"], "10.71.0.0/24");

    let (a, a_ip) = docker_run(&mut t, &socket, "a");
    let (b, b_ip) = docker_run(&mut t, &socket, "b");
    assert_eq!((a_ip.to_string(), b_ip.to_string()), ("10.71.0.2".to_string(), "10.71.0.3".to_string()));
    // netpath's own attach takes an address that Docker's IPAM has not handed out.
    let eps = t.np_json(&["endpoint", "ls"]);
    assert_eq!(eps.as_array().unwrap().len(), 2, "{eps}");
    assert!(eps[0]["handed"].as_bool().unwrap(), "{eps}");

    assert!(t.ping("a", &b_ip.to_string(), 3), "a cannot ping b");
    let server = tcp_echo_once(&t, "b", 7000);
    assert_eq!(tcp_roundtrip(&t, "a", SocketAddr::from((b_ip, 7000)), "over netpath"), "over netpath");
    server.join().unwrap();
    assert!(endpoint_stat(&t, &a, "tx_packets") >= 5, "a's traffic went through from_container");
    assert!(endpoint_stat(&t, &b, "rx_packets") >= 5);
    assert!(t.ping("a", OUTSIDE_ADDR, 2), "a cannot reach the outside");

    // -p 8080:80 and -P (host port 0: netpath picks one), as ProgramExternalConnectivity brings them.
    ok(
        &socket,
        "NetworkDriver.ProgramExternalConnectivity",
        json!({"NetworkID": NET_ID, "EndpointID": b, "Options": {"com.docker.network.portmap": [
            {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080},
            {"Proto": 6, "IP": "", "Port": 81, "HostIP": "", "HostPort": 0, "HostPortEnd": 0}]}}),
    );
    let info = ok(&socket, "NetworkDriver.EndpointOperInfo", json!({"NetworkID": NET_ID, "EndpointID": b}));
    let bindings = info["Value"]["com.docker.network.portmap"].as_array().unwrap().clone();
    let picked = bindings.iter().find(|p| p["Port"] == 81).unwrap()["HostPort"].as_u64().unwrap() as u16;
    assert!(picked >= 20000, "{info}");
    for (host_port, port) in [(8080, 80), (picked, 81)] {
        let server = tcp_echo_once(&t, "b", port);
        let to = SocketAddr::from((UPLINK_ADDR.parse::<Ipv4Addr>().unwrap(), host_port));
        assert_eq!(tcp_roundtrip(&t, "outside", to, "published"), "published");
        server.join().unwrap();
    }

    // The daemon stops on SIGTERM; the datapath stays up without it.
    let pid = daemon.pid();
    assert!(daemon.stop().success(), "daemon {pid} did not exit cleanly");
    assert!(!socket.exists(), "the daemon removes the socket it bound");
    assert!(t.ping("a", &b_ip.to_string(), 2), "traffic needs no daemon");
    let server = tcp_echo_once(&t, "b", 80);
    let to = SocketAddr::from((UPLINK_ADDR.parse::<Ipv4Addr>().unwrap(), 8080));
    assert_eq!(tcp_roundtrip(&t, "outside", to, "no daemon"), "no daemon");
    server.join().unwrap();

    // Killed outright, its socket file stays; a new daemon replaces it and answers for
    // what was created before, from the database.
    let daemon = Daemon::start(&t, &socket);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(daemon.pid()), nix::sys::signal::Signal::SIGKILL).unwrap();
    drop(daemon);
    assert!(socket.exists());
    let daemon = Daemon::start(&t, &socket);
    let info = ok(&socket, "NetworkDriver.EndpointOperInfo", json!({"NetworkID": NET_ID, "EndpointID": b}));
    assert_eq!(info["Value"]["com.docker.network.portmap"].as_array().unwrap().len(), 2, "{info}");

    // A sandbox that died without Leave (dockerd restarted) is released by the daemon's gc.
    let (c, _) = docker_run(&mut t, &socket, "c");
    let _ = c;
    std::process::Command::new("ip").args(["netns", "del", &format!("{}-c", t.prefix)]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while t.np_json(&["endpoint", "ls"]).as_array().unwrap().len() != 2 {
        assert!(Instant::now() < deadline, "the daemon's gc did not release the dead endpoint");
        std::thread::sleep(Duration::from_millis(200));
    }

    // docker rm -f; docker network rm.
    docker_rm(&socket, &a, a_ip);
    docker_rm(&socket, &b, b_ip);
    assert!(t.np_json(&["port", "ls"]).as_array().unwrap().is_empty());
    ok(&socket, "NetworkDriver.DeleteNetwork", json!({"NetworkID": NET_ID}));
    ok(&socket, "IpamDriver.ReleaseAddress", json!({"PoolID": "10.71.0.0/24", "Address": "10.71.0.1"}));
    ok(&socket, "IpamDriver.ReleasePool", json!({"PoolID": "10.71.0.0/24"}));
    assert!(daemon.stop().success());
    t.teardown();
}
