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

use netpath_tests::{
    OUTSIDE_ADDR, Topology, UPLINK_ADDR,
    clients::GlobalLock,
    daemon::{Daemon, call, ok, parse_response, raw},
    in_netns, tcp_request,
};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(5);

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
    assert!(t.tc_blocks().contains_key(&host_veth), "{host_veth} is bound to no tc block");
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
    let (status, answer) =
        parse_response(&raw(&socket, b"POST /NetworkDriver.Join HTTP/1.1\r\nContent-Length: 9\r\n\r\n{\"Endpo\"}"));
    assert_eq!(status, 400, "{answer}");
    let half =
        raw(&socket, b"POST /NetworkDriver.CreateNetwork HTTP/1.1\r\nContent-Length: 500\r\n\r\n{\"NetworkID\":");
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
    let pool = ok(
        &socket,
        "IpamDriver.RequestPool",
        json!({"AddressSpace": "netpath-local", "Pool": "10.71.0.0/24", "SubPool": "", "Options": {}, "V6": false}),
    );
    assert_eq!(pool["PoolID"], "10.71.0.0/24");
    let overlap = call(&socket, "IpamDriver.RequestPool", &json!({"Pool": "10.71.0.128/25"}));
    assert_eq!(overlap.0, 500, "{}", overlap.1);
    let gw = ok(
        &socket,
        "IpamDriver.RequestAddress",
        json!({"PoolID": "10.71.0.0/24", "Address": "", "Options": {"RequestAddressType": "com.docker.network.gateway"}}),
    );
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
    // dockerd's embedded DNS needs iptables or nft: `status` warns when neither is on PATH.
    let bin = t.run_dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let docker_dns = |t: &Topology| {
        let out = t.netpath_cmd(&["status", "--format", "json"]).env("PATH", &bin).output().unwrap();
        let checks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        checks.as_array().unwrap().iter().find(|c| c["name"] == "docker-dns").cloned().expect("a docker-dns check")
    };
    let without = docker_dns(&t);
    assert_eq!((&without["ok"], &without["warning"]), (&json!(true), &json!(true)), "{without}");
    assert!(without["detail"].as_str().unwrap().contains("neither iptables nor nft"), "{without}");
    std::fs::write(bin.join("nft"), "#!/bin/sh\n").unwrap();
    assert_eq!(docker_dns(&t)["warning"], json!(true), "a file dockerd cannot run counts for nothing");
    std::fs::set_permissions(bin.join("nft"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let with = docker_dns(&t);
    assert_eq!((&with["ok"], &with["warning"]), (&json!(true), &json!(false)), "{with}");

    let (a, a_ip) = docker_run(&mut t, &socket, "a");
    let (b, b_ip) = docker_run(&mut t, &socket, "b");
    assert_eq!((a_ip.to_string(), b_ip.to_string()), ("10.71.0.2".to_string(), "10.71.0.3".to_string()));
    // netpath's own attach takes an address that Docker's IPAM has not handed out.
    let eps = t.np_json(&["endpoint", "ls"]);
    assert_eq!(eps.as_array().unwrap().len(), 2, "{eps}");
    assert!(eps[0]["handed"].as_bool().unwrap(), "{eps}");
    // The CLI does not take over what Docker wired.
    let net = "docker-5f1e7d0c3b2a";
    let refused = t.np_err(&["attach", "--network", net, "--netns", &t.ns_path("a"), "--id", &a]);
    assert!(refused.contains("detach it first"), "{refused}");

    assert!(t.ping("a", &b_ip.to_string(), 3), "a cannot ping b");
    let server = tcp_echo_once(&t, "b", 7000);
    assert_eq!(tcp_request(&t, "a", SocketAddr::from((b_ip, 7000)), "over netpath").0, "over netpath");
    server.join().unwrap();
    assert!(t.endpoint_stat(&a, "tx_packets") >= 5, "a's traffic went through from_container");
    assert!(t.endpoint_stat(&b, "rx_packets") >= 5);
    assert!(t.ping("a", OUTSIDE_ADDR, 2), "a cannot reach the outside");

    // SNAT ports where netpath starts picking host ports: a host port in that range, named or
    // picked, would take the answers of masqueraded connections.
    t.np(&["datapath", "configure", "--snat-ports", "20000-20009"]);
    let in_snat_range = json!({"NetworkID": NET_ID, "EndpointID": b, "Options": {"com.docker.network.portmap": [
        {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 20005, "HostPortEnd": 20005}]}});
    let (_, answer) = call(&socket, "NetworkDriver.ProgramExternalConnectivity", &in_snat_range);
    let refused =
        answer["Err"].as_str().unwrap_or_else(|| panic!("a host port in the SNAT range was published: {answer}"));
    assert!(
        refused.contains("host port 20005/tcp of -p") && refused.contains("SNAT port range 20000-20009"),
        "{refused}"
    );
    assert_eq!(t.np_json(&["port", "ls"]).as_array().unwrap().len(), 0, "a refused publication left ports");
    // -p 8080:80 and -P (host port 0: netpath picks one), as ProgramExternalConnectivity brings
    // them; the same set again (Docker may repeat a call) replaces it: still two ports.
    let program = json!({"NetworkID": NET_ID, "EndpointID": b, "Options": {"com.docker.network.portmap": [
        {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080},
        {"Proto": 6, "IP": "", "Port": 81, "HostIP": "", "HostPort": 0, "HostPortEnd": 0}]}});
    for _ in 0..2 {
        ok(&socket, "NetworkDriver.ProgramExternalConnectivity", program.clone());
    }
    assert_eq!(t.np_json(&["port", "ls"]).as_array().unwrap().len(), 2);
    let info = ok(&socket, "NetworkDriver.EndpointOperInfo", json!({"NetworkID": NET_ID, "EndpointID": b}));
    let bindings = info["Value"]["com.docker.network.portmap"].as_array().unwrap().clone();
    let picked = bindings.iter().find(|p| p["Port"] == 81).unwrap()["HostPort"].as_u64().unwrap() as u16;
    assert!(picked >= 20010, "netpath picked a host port below 20000 or in the SNAT range: {info}");
    for (host_port, port) in [(8080, 80), (picked, 81)] {
        let server = tcp_echo_once(&t, "b", port);
        let to = SocketAddr::from((UPLINK_ADDR.parse::<Ipv4Addr>().unwrap(), host_port));
        assert_eq!(tcp_request(&t, "outside", to, "published").0, "published");
        server.join().unwrap();
    }

    // The daemon stops on SIGTERM; the datapath stays up without it.
    let pid = daemon.pid();
    assert!(daemon.stop().success(), "daemon {pid} did not exit cleanly");
    assert!(!socket.exists(), "the daemon removes the socket it bound");
    assert!(t.ping("a", &b_ip.to_string(), 2), "traffic needs no daemon");
    let server = tcp_echo_once(&t, "b", 80);
    let to = SocketAddr::from((UPLINK_ADDR.parse::<Ipv4Addr>().unwrap(), 8080));
    assert_eq!(tcp_request(&t, "outside", to, "no daemon").0, "no daemon");
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

// ---------------------------------------------------------------------------------------
// A real dockerd, driven through the docker CLI. It finds the plugin in the global
// /run/docker/plugins, so these tests hold a machine-wide lock and run one at a time.

const PLUGIN_SOCKET: &str = "/run/docker/plugins/netpath.sock";
const IMAGE: &str = "npt/busybox";
/// The cgroup under which dockerd puts containers (cgroupfs driver), removed afterwards.
const CGROUP_PARENT: &str = "npt-docker";
/// Paths dockerd 20.10 and its containerd write outside --data-root/--exec-root, removed
/// afterwards when they did not exist before.
const STRAY_PATHS: [&str; 5] =
    ["/etc/docker/key.json", "/etc/docker", "/run/docker/plugins", "/run/docker", "/run/containerd"];

/// The prefix where `cargo xtask test` unpacked docker.io and busybox-static (they come
/// with iptables, which the machine itself must not get): `NETPATH_DOCKER_ROOT`, or
/// `<target>/bench-root`.
fn docker_root() -> PathBuf {
    let root = std::env::var_os("NETPATH_DOCKER_ROOT").map(PathBuf::from).unwrap_or_else(|| {
        let bin = netpath_tests::netpath_bin();
        bin.parent().and_then(Path::parent).expect("target dir").join("bench-root")
    });
    assert!(
        root.join("usr/sbin/dockerd").exists(),
        "dockerd is missing under {}: run `cargo xtask test`, which unpacks docker.io there",
        root.display()
    );
    root
}

/// Holds a machine-wide lock for tests that use /run/docker/plugins; on drop, removes the
/// plugin socket and what dockerd and the daemon made outside their directories.
struct Global {
    _lock: GlobalLock,
    strays: Vec<PathBuf>,
}

impl Global {
    fn take() -> Self {
        let lock = GlobalLock::take();
        assert!(
            !Path::new(PLUGIN_SOCKET).exists(),
            "{PLUGIN_SOCKET} exists: another netpath daemon serves Docker here"
        );
        let strays = STRAY_PATHS.iter().map(PathBuf::from).filter(|p| !p.exists()).collect();
        Self { _lock: lock, strays }
    }
}

impl Drop for Global {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(PLUGIN_SOCKET);
        for stray in &self.strays {
            remove_stray(stray);
        }
    }
}

/// dockerd in the topology's host namespace, with its state in the topology's run directory.
struct Engine {
    root: PathBuf,
    dir: PathBuf,
    dockerd: Option<Child>,
    /// The topology's host namespace, where dockerd runs.
    host: String,
}

impl Engine {
    fn start(t: &Topology) -> Self {
        let dir = t.run_dir.join("engine");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("daemon.json"), "{}\n").unwrap();
        let mut engine = Self { root: docker_root(), dir, dockerd: None, host: t.ns_path("host") };
        engine.spawn();
        engine
    }

    /// Starts dockerd (again, with the same directories) and waits until it answers.
    fn spawn(&mut self) {
        let dir = &self.dir;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("dockerd.log")).unwrap();
        let mut cmd = std::process::Command::new("nsenter");
        cmd.arg(format!("--net={}", self.host))
            .arg(self.root.join("usr/sbin/dockerd"))
            .arg("--config-file")
            .arg(dir.join("daemon.json"))
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .args(["-H", &format!("unix://{}", dir.join("docker.sock").display())])
            .args(["--bridge", "none", "--iptables=false", "--ip-masq=false", "--cgroup-parent", CGROUP_PARENT]);
        self.env(&mut cmd);
        self.dockerd = Some(cmd.stdout(log.try_clone().unwrap()).stderr(log).spawn().expect("spawn dockerd"));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.docker_output(&["version", "-f", "{{.Server.Version}}"]).status.success() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(25).collect();
                panic!(
                    "dockerd did not start; its log ends:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGKILL to dockerd (its containerd and the containers' shims live on), then a new one.
    fn kill_and_restart(&mut self) {
        let mut dockerd = self.dockerd.take().expect("running");
        dockerd.kill().unwrap();
        dockerd.wait().unwrap();
        // Its containerd dies with it; where PID 1 does not reap orphans, the zombie keeps
        // its PID, and the next dockerd takes it for a live containerd and waits for it.
        let pidfile = self.dir.join("exec/containerd/containerd.pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(pid) = std::fs::read_to_string(&pidfile).ok().and_then(|p| p.trim().parse::<i32>().ok()) {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
            let state =
                state.as_deref().and_then(|s| s.rsplit_once(')')).and_then(|(_, r)| r.split_whitespace().next());
            if matches!(state, None | Some("Z")) {
                let _ = std::fs::remove_file(&pidfile);
                break;
            }
            assert!(Instant::now() < deadline, "containerd {pid} outlived dockerd");
            std::thread::sleep(Duration::from_millis(100));
        }
        self.spawn();
    }

    /// The prefix's binaries first on PATH and its libraries before the system's.
    fn env(&self, cmd: &mut std::process::Command) {
        let path = ["usr/sbin", "usr/bin", "sbin", "bin"].iter().map(|d| self.root.join(d).display().to_string());
        let path = path.chain(std::env::var("PATH").ok()).collect::<Vec<_>>().join(":");
        let lib = self.root.join("usr/lib/x86_64-linux-gnu");
        cmd.env("PATH", path).env("LD_LIBRARY_PATH", &lib).env("XTABLES_LIBDIR", lib.join("xtables"));
    }

    fn docker_output(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = std::process::Command::new(self.root.join("usr/bin/docker"));
        cmd.arg("-H").arg(format!("unix://{}", self.dir.join("docker.sock").display())).args(args);
        self.env(&mut cmd);
        cmd.output().expect("docker")
    }

    /// A docker command that must succeed; its stdout, trimmed.
    fn docker(&self, args: &[&str]) -> String {
        let out = self.docker_output(args);
        assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Imports a busybox rootfs as the image, exposing port 80 for `-P`.
    fn import_busybox(&self) {
        let rootfs = self.dir.join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::copy(self.root.join("bin/busybox"), rootfs.join("bin/busybox")).unwrap();
        for applet in ["sh", "sleep"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let import = format!(
            "tar -C {} -c . | {} -H unix://{} import --change 'EXPOSE 80' - {IMAGE}",
            rootfs.display(),
            self.root.join("usr/bin/docker").display(),
            self.dir.join("docker.sock").display()
        );
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", &import]);
        self.env(&mut cmd);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "docker import: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// `docker run -d`; returns the container's sandbox (netns path), address on `network`
    /// and netpath endpoint id.
    fn run(&self, name: &str, network: &str, extra: &[&str]) -> Container {
        let mut args = vec!["run", "-d", "--name", name, "--network", network];
        args.extend(extra);
        args.extend([IMAGE, "sleep", "1000000"]);
        self.docker(&args);
        self.container(name, network)
    }

    /// `docker network create -d netpath ARGS NAME`.
    fn network(&self, name: &str, args: &[&str]) {
        let mut all = vec!["network", "create", "-d", "netpath"];
        all.extend(args);
        all.push(name);
        self.docker(&all);
    }

    fn container(&self, name: &str, network: &str) -> Container {
        let f = format!(
            "{{{{.NetworkSettings.SandboxKey}}}} {{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}} {{{{(index .NetworkSettings.Networks \"{network}\").EndpointID}}}}"
        );
        let out = self.docker(&["inspect", "-f", &f, name]);
        let mut parts = out.split(' ');
        let (Some(sandbox), Some(ip), Some(endpoint)) = (parts.next(), parts.next(), parts.next()) else {
            panic!("docker inspect {name}: {out}")
        };
        Container { sandbox: sandbox.into(), ip: ip.parse().unwrap(), endpoint: endpoint.into() }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let ids = self.docker_output(&["ps", "-aq"]);
        let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout).split_whitespace().map(String::from).collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            let _ = self.docker_output(&args);
        }
        if let Some(mut dockerd) = self.dockerd.take() {
            let pid = nix::unistd::Pid::from_raw(dockerd.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while dockerd.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = dockerd.kill();
            let _ = dockerd.wait();
        }
        // Its containerd and shims outlive it by a moment; any still there after that (a
        // dockerd that failed to come back) are found by this engine's own directory in
        // their command line, and stopped by PID with the containers they run.
        std::thread::sleep(Duration::from_secs(1));
        kill_engine_processes(&self.dir);
        // dockerd leaves its data root bind-mounted on itself (overlay2 makes it private),
        // and a dockerd that died leaves overlay and sandbox (nsfs) mounts below its roots.
        for _ in 0..3 {
            for mount in mounts_at_or_below(&self.dir).iter().rev() {
                let _ = std::process::Command::new("umount").arg(mount).status();
            }
        }
        // The containers' cgroups under ours go when their last process has gone.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut left = false;
            for controller in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
                let parent = controller.path().join(CGROUP_PARENT);
                for child in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
                    if child.path().is_dir() {
                        let _ = std::fs::remove_dir(child.path());
                    }
                }
                left |= std::fs::remove_dir(&parent).is_err() && parent.exists();
            }
            if !left || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Mount points at or below `dir`, in mount order (a mount comes after the one it is on).
fn mounts_at_or_below(dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let points = mountinfo.lines().filter_map(|l| l.split_whitespace().nth(4));
    points.filter(|m| *m == dir || m.starts_with(&format!("{dir}/"))).map(String::from).collect()
}

/// Processes whose command line names `dir` (containerd, its shims) and their children.
fn kill_engine_processes(dir: &Path) {
    let dir = dir.display().to_string();
    let procs: Vec<(i32, i32, String)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid, String::from_utf8_lossy(&cmdline).replace('\0', " ")))
        })
        .collect();
    let ours: Vec<i32> = procs.iter().filter(|(_, _, cmd)| cmd.contains(&dir)).map(|(pid, _, _)| *pid).collect();
    let children = procs.iter().filter(|(_, ppid, _)| ours.contains(ppid)).map(|(pid, _, _)| *pid);
    for pid in children.chain(ours.iter().copied()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Removes a file, or a tree of nothing but empty directories: anything else is someone else's.
fn remove_stray(path: &Path) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                remove_stray(&entry.path());
            }
        }
        let _ = std::fs::remove_dir(path);
    } else {
        let _ = std::fs::remove_file(path);
    }
}

struct Container {
    sandbox: String,
    ip: Ipv4Addr,
    endpoint: String,
}

/// `ip -4 -o addr show` in a container's sandbox.
fn addresses_in(sandbox: &str) -> String {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={sandbox}"))
        .args(["ip", "-4", "-o", "addr", "show"])
        .output()
        .unwrap();
    assert!(out.status.success(), "ip addr in {sandbox}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn ping_from(sandbox: &str, ip: &str) -> bool {
    std::process::Command::new("nsenter")
        .arg(format!("--net={sandbox}"))
        .args(["ping", "-c", "2", "-i", "0.2", "-W", "1", ip])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A TCP stream of `bytes` from `from` (a netns path) to a listener in `to`; returns the
/// address the server saw the client come from.
fn stream(from: &str, to: &str, addr: SocketAddr, listen: u16, bytes: usize) -> SocketAddr {
    let listener = in_netns(to, || TcpListener::bind((Ipv4Addr::UNSPECIFIED, listen)).unwrap());
    let server = std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept().unwrap();
        let mut got = 0;
        let mut buf = vec![0u8; 65536];
        loop {
            let n = conn.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got += n;
        }
        conn.write_all(&got.to_be_bytes()).unwrap();
        peer
    });
    let mut conn =
        in_netns(from, || TcpStream::connect_timeout(&addr, TIMEOUT)).unwrap_or_else(|e| panic!("{addr}: {e}"));
    conn.set_read_timeout(Some(TIMEOUT)).unwrap();
    let chunk = vec![7u8; 65536];
    let mut sent = 0;
    while sent < bytes {
        let n = chunk.len().min(bytes - sent);
        conn.write_all(&chunk[..n]).unwrap();
        sent += n;
    }
    conn.shutdown(Shutdown::Write).unwrap();
    let mut echo = [0u8; 8];
    conn.read_exact(&mut echo).unwrap();
    assert_eq!(usize::from_be_bytes(echo), bytes, "bytes received");
    server.join().unwrap()
}

/// What netpath holds for Docker's containers: its endpoint ids.
fn endpoint_ids(t: &Topology) -> Vec<String> {
    let eps = t.np_json(&["endpoint", "ls"]);
    eps.as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect()
}

fn host_port_of(t: &Topology, endpoint: &str, container_port: u64) -> u16 {
    let ports = t.np_json(&["port", "ls"]);
    let port =
        ports.as_array().unwrap().iter().find(|p| p["endpoint"] == endpoint && p["container_port"] == container_port);
    port.unwrap_or_else(|| panic!("no port {container_port} of {endpoint} in {ports}"))["host_port"].as_u64().unwrap()
        as u16
}

/// Nothing of netpath's is left in the host namespace, the maps or the database.
fn assert_nothing_left(t: &Topology) {
    assert_eq!(t.np_json(&["endpoint", "ls"]), json!([]));
    assert_eq!(t.np_json(&["network", "ls"]), json!([]));
    assert_eq!(t.np_json(&["port", "ls"]), json!([]));
    let links = t.exec("host", &["ip", "-o", "link", "show"]);
    let left: Vec<&str> = links.lines().filter(|l| [": np-", ": npv", ": npc"].iter().any(|p| l.contains(p))).collect();
    assert!(left.is_empty(), "links left: {left:?}");
    for map in ["ENDPOINTS", "VETHS", "NETWORKS", "PORTMAP"] {
        assert!(t.map_entries(map).is_empty(), "{map} entries left: {:?}", t.map_entries(map));
    }
    let pins = std::fs::read_dir(t.datapath_dir().join("links")).ok();
    let pinned: Vec<String> =
        pins.into_iter().flatten().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(pinned.iter().all(|p| !p.starts_with("npv")), "endpoint links still pinned: {pinned:?}");
}

/// The sequence both ways of starting the daemon must serve: a network, two containers that
/// talk over netpath's datapath and reach the outside masqueraded, published ports, and
/// nothing left after `docker rm -f` and `docker network rm`.
fn docker_sequence(t: &Topology, engine: &Engine, subnet: &str, gateway: &str) {
    engine.network("web", &["--ipam-driver", "netpath", "--subnet", subnet]);
    let web_id = engine.docker(&["network", "inspect", "-f", "{{.Id}}", "web"]);
    let nets = t.np_json(&["network", "ls"]);
    assert_eq!(nets[0]["external_id"], web_id.as_str(), "{nets}");
    assert_eq!(nets[0]["subnet"], subnet, "{nets}");
    assert_eq!(nets[0]["gateway"], gateway, "{nets}");

    let c1 = engine.run("c1", "web", &[]);
    let c2 = engine.run("c2", "web", &["-p", "8080:80"]);
    assert_eq!(endpoint_ids(t).len(), 2);
    assert!(ping_from(&c1.sandbox, &c2.ip.to_string()), "c1 cannot ping c2");
    let tx_before = t.endpoint_stat(&c1.endpoint, "tx_bytes");
    stream(&c1.sandbox, &c2.sandbox, SocketAddr::from((c2.ip, 5001)), 5001, 4 << 20);
    assert!(
        t.endpoint_stat(&c1.endpoint, "tx_bytes") >= tx_before + (4 << 20),
        "the stream went through from_container"
    );
    assert!(t.endpoint_stat(&c2.endpoint, "rx_bytes") >= 4 << 20);
    // The outside sees only the uplink's address.
    let seen = stream(
        &c1.sandbox,
        &t.ns_path("outside"),
        SocketAddr::from((OUTSIDE_ADDR.parse::<Ipv4Addr>().unwrap(), 5002)),
        5002,
        1 << 16,
    );
    assert_eq!(seen.ip().to_string(), UPLINK_ADDR);
    // -p 8080:80, from the outside and from the host's 127.0.0.1.
    let uplink: Ipv4Addr = UPLINK_ADDR.parse().unwrap();
    stream(&t.ns_path("outside"), &c2.sandbox, SocketAddr::from((uplink, 8080)), 80, 1 << 16);
    stream(&t.ns_path("host"), &c2.sandbox, SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)), 80, 1 << 16);

    engine.docker(&["rm", "-f", "c1", "c2"]);
    assert_eq!(endpoint_ids(t), Vec::<String>::new());
    engine.docker(&["network", "rm", "web"]);
    assert_nothing_left(t);
}

#[test]
fn dockerd_runs_containers_on_netpath() {
    let _global = Global::take();
    let t = Topology::with_outside("dkd");
    let daemon = Daemon::start(&t, Path::new(PLUGIN_SOCKET));
    let mut engine = Engine::start(&t);
    engine.import_busybox();

    docker_sequence(&t, &engine, "10.72.0.0/24", "10.72.0.1");

    // -P publishes the image's exposed port on a host port netpath picked.
    engine.network("web", &["--ipam-driver", "netpath", "--subnet", "10.72.0.0/24"]);
    let c3 = engine.run("c3", "web", &["-P"]);
    let port = host_port_of(&t, &c3.endpoint, 80);
    let uplink: Ipv4Addr = UPLINK_ADDR.parse().unwrap();
    stream(&t.ns_path("outside"), &c3.sandbox, SocketAddr::from((uplink, port)), 80, 1 << 16);

    // Docker's --internal and netpath's own options (-o) reach the network.
    engine.network("int", &["--internal", "--subnet", "10.76.0.0/24", "-o", "mtu=1400"]);
    let int = t.np_json(&["network", "ls"]).as_array().unwrap().iter().find(|n| n["subnet"] == "10.76.0.0/24").cloned();
    let int = int.expect("the internal network");
    assert_eq!((int["internal"].as_bool(), int["mtu"].as_u64()), (Some(true), Some(1400)), "{int}");
    let refused = engine.docker_output(&["network", "create", "-d", "netpath", "-o", "colour=red", "bad"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown option 'colour'"), "{refused:?}");
    engine.docker(&["network", "rm", "int"]);

    // docker network connect / disconnect of a running container; a second network with
    // Docker's default IPAM, whose addresses netpath records as static.
    engine.network("back", &["--subnet", "10.74.0.0/24"]);
    let c4 = engine.run("c4", "back", &[]);
    engine.docker(&["network", "connect", "back", "c3"]);
    let c3_back = engine.container("c3", "back");
    assert_eq!(endpoint_ids(&t).len(), 3);
    assert!(ping_from(&c3.sandbox, &c4.ip.to_string()), "c3 cannot reach c4 after connect");
    let back_veth = t.np_json(&["endpoint", "inspect", &c3_back.endpoint])["host_veth"].as_str().unwrap().to_string();
    let back_addr = format!("inet {}/", c3_back.ip);
    assert!(t.link("host", &back_veth).is_some(), "c3's endpoint on back has no host veth {back_veth}");
    assert!(addresses_in(&c3.sandbox).contains(&back_addr), "c3 lacks {back_addr}");
    engine.docker(&["network", "disconnect", "back", "c3"]);
    assert!(!endpoint_ids(&t).contains(&c3_back.endpoint), "the disconnected endpoint is gone");
    // Its interface is gone on both ends, not only unreachable.
    let left = addresses_in(&c3.sandbox);
    assert!(!left.contains(&back_addr), "c3 keeps {back_addr} after disconnect:\n{left}");
    assert!(t.link("host", &back_veth).is_none(), "the host veth {back_veth} outlived the disconnect");
    assert!(!ping_from(&c3.sandbox, &c4.ip.to_string()), "c3 still reaches c4 after disconnect");

    // SIGKILL between two containers' starts: both keep working, the second is removed
    // by docker rm like the first.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(daemon.pid()), nix::sys::signal::Signal::SIGKILL).unwrap();
    drop(daemon);
    assert!(ping_from(&c3.sandbox, "10.72.0.1"), "the datapath works without the daemon");
    let daemon = Daemon::start(&t, Path::new(PLUGIN_SOCKET));
    let c5 = engine.run("c5", "web", &[]);
    assert!(ping_from(&c5.sandbox, &c3.ip.to_string()), "c5 cannot reach c3 after the restart");
    stream(&t.ns_path("outside"), &c3.sandbox, SocketAddr::from((uplink, port)), 80, 1 << 16);
    engine.docker(&["rm", "-f", "c3", "c4", "c5"]);
    engine.docker(&["network", "rm", "web", "back"]);
    assert_nothing_left(&t);

    // Through systemd's socket activation: the daemon starts at the first connection.
    assert!(daemon.stop().success());
    let mut activate = std::process::Command::new("systemd-socket-activate");
    activate.args(["-l", PLUGIN_SOCKET]).arg(netpath_tests::netpath_bin()).args([
        "--state-dir",
        t.state_dir().to_str().unwrap(),
        "--bpffs",
        t.pin_root().to_str().unwrap(),
        "--host-netns",
        &t.ns_path("host"),
        "daemon",
        "--gc-interval",
        "2",
    ]);
    let activated =
        Daemon { child: Some(activate.stdout(Stdio::null()).spawn().unwrap()), socket: PLUGIN_SOCKET.into() };
    activated.wait_ready();
    docker_sequence(&t, &engine, "10.75.0.0/24", "10.75.0.1");

    // dockerd killed outright and started again: it does not run the containers it lost, and
    // their endpoints are released (by its cleanup's Leave, or by the daemon's gc once the
    // namespace is gone); `docker rm` then finds nothing left to undo.
    engine.network("web", &["--ipam-driver", "netpath", "--subnet", "10.75.0.0/24"]);
    let c6 = engine.run("c6", "web", &[]);
    assert_eq!(endpoint_ids(&t), vec![c6.endpoint.clone()]);
    engine.kill_and_restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !endpoint_ids(&t).is_empty() {
        assert!(Instant::now() < deadline, "c6's endpoint outlived dockerd's restart: {:?}", endpoint_ids(&t));
        std::thread::sleep(Duration::from_millis(250));
    }
    engine.docker(&["rm", "-f", "c6"]);
    engine.docker(&["network", "rm", "web"]);
    assert_nothing_left(&t);
    assert!(activated.stop().success());
    drop(engine);
    t.teardown();
}

/// A process that holds the global lock and never lets go (a stopped `gc`) costs the daemon
/// one bounded wait per gc: it says whose lock it gave up on and keeps answering Docker.
#[test]
fn the_daemon_gives_up_on_a_held_lock_and_keeps_serving() {
    let t = Topology::new("dlk");
    t.network("web", &[]);
    let socket = t.run_dir.join("plugin.sock");
    let held = t.hold_global_lock();
    let mut cmd = t.netpath_cmd(&["daemon", "--docker-socket", socket.to_str().unwrap(), "--gc-interval", "1"]);
    let mut daemon = Daemon::spawn(cmd.env("NETPATH_LOCK_TIMEOUT", "1").stderr(Stdio::piped()), &socket);
    let stderr = daemon.child.as_mut().unwrap().stderr.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let me = format!("pid {}", std::process::id());
    let deadline = Instant::now() + Duration::from_secs(20);
    let gave_up = loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains("gc:") && line.contains(&me) => break line,
            Ok(_) => continue,
            Err(_) => panic!("the daemon's gc never gave up on the global lock that {me} holds"),
        }
    };
    assert!(gave_up.contains("locks/all.lock"), "{gave_up}");
    assert_eq!(ok(&socket, "Plugin.Activate", json!({}))["Implements"], json!(["NetworkDriver", "IpamDriver"]));
    drop(held);
    assert!(daemon.stop().success());
    t.teardown();
}
