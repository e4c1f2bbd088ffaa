//! The daemon's resolver, asked by glibc (`getent`) inside the containers: names and aliases
//! of the asker's own networks, addresses back to names, other names through an upstream
//! (dnsmasq in the outside namespace), nothing for another network's containers, and a fast
//! refusal when no daemon runs. Then what must not take it over or stop it: a host resolver
//! on `*:53`, a container publishing port 53, and queries that are not queries.
use std::{
    net::{Ipv4Addr, UdpSocket},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use netpath_tests::{OUTSIDE_ADDR, Topology, daemon::Daemon, in_netns, ip_of};

const EXTERNAL: &str = "ext.test";
const EXTERNAL_ADDR: &str = "10.99.7.7";

/// `/etc/netns/<namespace>/resolv.conf` files, which `ip netns exec` mounts over
/// /etc/resolv.conf; removed with their directories when dropped.
struct ResolvConfs(Vec<PathBuf>);

impl ResolvConfs {
    /// `attach --resolv-conf` writes each one.
    fn dir(&mut self, t: &Topology, ns: &str) -> String {
        let dir = PathBuf::from(format!("/etc/netns/{}-{ns}", t.prefix));
        std::fs::create_dir_all(&dir).unwrap();
        self.0.push(dir.clone());
        dir.join("resolv.conf").to_string_lossy().into_owned()
    }
}

impl Drop for ResolvConfs {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A process stopped by its PID when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// dnsmasq in `ns`, answering what `answers` (one option: `--address=/DOMAIN/ADDRESS`,
/// `--addn-hosts=FILE`) says and nothing else, on `listen` (all addresses when `None`, as a
/// host's dnsmasq does by default).
fn dnsmasq(t: &Topology, ns: &str, listen: Option<&str>, answers: &str) -> Process {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &format!("{}-{ns}", t.prefix), "dnsmasq", "--keep-in-foreground", "--no-resolv"])
        .args(["--no-hosts", "--port=53", "--user=root", "--pid-file=", answers]);
    if let Some(listen) = listen {
        cmd.args([&format!("--listen-address={listen}"), "--bind-interfaces"]);
    }
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().expect("spawn dnsmasq");
    std::thread::sleep(Duration::from_millis(300));
    Process(child)
}

/// What glibc resolves `name` to from `ns` (`getaddrinfo`, IPv4), or `None`.
fn resolve(t: &Topology, ns: &str, name: &str) -> Option<String> {
    let out = t.exec_output(ns, &["getent", "ahostsv4", name]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next().and_then(|l| l.split_whitespace().next()).map(str::to_string)
}

/// The name glibc finds for `ip` from `ns` (`gethostbyaddr`), or `None`.
fn name_of(t: &Topology, ns: &str, ip: &str) -> Option<String> {
    let out = t.exec_output(ns, &["getent", "hosts", ip]);
    String::from_utf8_lossy(&out.stdout).split_whitespace().nth(1).map(str::to_string)
}

/// The response code the resolver at `server` gives `ns` for an `A` question about `name`,
/// asked with a datagram built here (glibc says "not found" alike for every failure).
fn rcode(t: &Topology, ns: &str, server: Ipv4Addr, name: &str) -> Option<u8> {
    let mut query = vec![0x4e, 0x50, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    in_netns(&t.ns_path(ns), || {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        sock.send_to(&query, (server, 53)).unwrap();
        let mut buf = [0u8; 512];
        sock.recv(&mut buf).ok().map(|_| buf[3] & 0x0f)
    })
}

const NXDOMAIN: Option<u8> = Some(3);

fn daemon(t: &Topology) -> Daemon {
    Daemon::start_with(t, &t.run_dir.join("plugin.sock"), &["--dns-upstream", OUTSIDE_ADDR])
}

#[test]
fn containers_resolve_the_names_of_their_own_networks_and_other_names_upstream() {
    let mut t = Topology::with_outside("dns");
    let mut confs = ResolvConfs(Vec::new());
    t.network("web", &["--subnet", "10.81.40.0/24"]);
    t.network("other", &["--subnet", "10.81.41.0/24"]);
    let a = t.container("a", "web", &["--name", "web", "--alias", "www", "--resolv-conf", &confs.dir(&t, "a")]);
    let b = t.container("b", "web", &["--name", "db", "--resolv-conf", &confs.dir(&t, "b")]);
    t.container("c", "other", &["--name", "cache", "--resolv-conf", &confs.dir(&t, "c")]);
    let conf = std::fs::read_to_string(confs.0[1].join("resolv.conf")).unwrap();
    assert!(conf.contains("nameserver 10.81.40.1"), "{conf}");
    let _upstream = dnsmasq(&t, "outside", Some(OUTSIDE_ADDR), &format!("--address=/{EXTERNAL}/{EXTERNAL_ADDR}"));
    let daemon = daemon(&t);
    let (a_ip, b_ip) = (ip_of(&a).to_string(), ip_of(&b).to_string());

    assert_eq!(resolve(&t, "b", "web"), Some(a_ip.clone()), "b finds a by name");
    assert_eq!(resolve(&t, "b", "WWW"), Some(a_ip.clone()), "b finds a by alias, whatever the case");
    assert_eq!(resolve(&t, "a", "db"), Some(b_ip.clone()), "a finds b");
    assert_eq!(name_of(&t, "b", &a_ip).as_deref(), Some("web"), "b finds a's name from its address");
    assert_eq!(resolve(&t, "b", EXTERNAL).as_deref(), Some(EXTERNAL_ADDR), "other names through the upstream");
    assert_eq!(resolve(&t, "c", "web"), None, "another network's container does not see a");
    assert_eq!(rcode(&t, "c", Ipv4Addr::new(10, 81, 41, 1), "web"), NXDOMAIN, "c is told a does not exist");
    assert_eq!(name_of(&t, "c", &a_ip), None, "nor a's name from its address");
    assert_eq!(resolve(&t, "c", "cache"), Some(ip_of(&t.np_json(&["endpoint", "inspect", "c"])).to_string()));
    assert_eq!(resolve(&t, "c", EXTERNAL).as_deref(), Some(EXTERNAL_ADDR));

    // A name goes with its endpoint, and comes with the next one, at once.
    t.np(&["detach", "--id", "a"]);
    assert_eq!(rcode(&t, "b", Ipv4Addr::new(10, 81, 40, 1), "web"), NXDOMAIN, "a's name after its detach");
    let a2 = t.container("a2", "web", &["--name", "web"]);
    assert_eq!(resolve(&t, "b", "web"), Some(ip_of(&a2).to_string()), "the name of the next container");

    // No daemon: the query meets a port unreachable, not a timeout.
    let mut daemon = daemon;
    let pid = nix::unistd::Pid::from_raw(daemon.pid());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    daemon.child.take().unwrap().wait().unwrap();
    let asked = Instant::now();
    assert_eq!(resolve(&t, "b", "db"), None, "answered with no daemon");
    assert!(asked.elapsed() < Duration::from_secs(2), "a query with no daemon took {:?}", asked.elapsed());
    let _daemon = self::daemon(&t);
    assert_eq!(resolve(&t, "b", "db"), Some(b_ip), "answered again once the daemon is back");
    t.assert_no_netfilter();
    drop(_daemon);
    t.teardown();
}

/// A host dnsmasq bound to every address (port 53, TCP and UDP) and a container that
/// publishes port 53 take none of the containers' queries to their gateway.
#[test]
fn a_host_resolver_and_a_published_port_53_do_not_take_the_gateways_queries() {
    let mut t = Topology::with_outside("dnsx");
    let mut confs = ResolvConfs(Vec::new());
    t.network("web", &["--subnet", "10.81.42.0/24"]);
    // Published first: netpath refuses to publish a port a host process listens on.
    let a = t.container("a", "web", &["--name", "web", "-p", "53:53/udp", "-p", "53:53/tcp"]);
    let _host_resolver = dnsmasq(&t, "host", None, "--address=/web/10.66.66.66");
    t.container("b", "web", &["--name", "db", "--resolv-conf", &confs.dir(&t, "b")]);
    // What a publishes on 53 answers every query with its own address for everything.
    let _fake = dnsmasq(&t, "a", None, "--address=/#/10.77.77.77");
    for ns in ["host", "a"] {
        for proto in ["-u", "-t"] {
            let bound = t.exec(ns, &["ss", "-Hln", proto, "sport", "=", ":53"]);
            assert!(bound.contains("0.0.0.0:53"), "no resolver on *:53 ({proto}) in {ns}: {bound:?}");
        }
    }
    let _daemon = daemon(&t);
    assert_eq!(resolve(&t, "b", "web"), Some(ip_of(&a).to_string()), "over UDP");
    let tcp = t.exec_output("b", &["sh", "-c", "RES_OPTIONS=use-vc getent ahostsv4 web"]);
    let tcp = String::from_utf8_lossy(&tcp.stdout).split_whitespace().next().map(str::to_string);
    assert_eq!(tcp, Some(ip_of(&a).to_string()), "over TCP");
    t.teardown();
}

/// Datagrams that are not queries, or not answerable, get an error or nothing, and the
/// resolver goes on answering; an address that is no endpoint's gets no names.
#[test]
fn malformed_queries_leave_the_resolver_answering() {
    let mut t = Topology::with_outside("dnsm");
    let mut confs = ResolvConfs(Vec::new());
    t.network("web", &["--subnet", "10.81.43.0/24"]);
    t.container("a", "web", &["--name", "web", "--resolv-conf", &confs.dir(&t, "a")]);
    let _daemon = daemon(&t);
    let gateway = Ipv4Addr::new(10, 81, 43, 1);
    let replies: Vec<Option<Vec<u8>>> = in_netns(&t.ns_path("a"), || {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let header = |qdcount: u16| [&[0x12, 0x34, 0x01, 0x00][..], &qdcount.to_be_bytes(), &[0; 6]].concat();
        let garbage: Vec<Vec<u8>> = vec![
            vec![0x42],
            header(0),
            header(5),
            [header(1), vec![0xff; 40]].concat(),
            [header(1), vec![0x3f; 300]].concat(),
        ];
        garbage
            .iter()
            .map(|datagram| {
                sock.send_to(datagram, (gateway, 53)).unwrap();
                let mut buf = [0u8; 600];
                sock.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
            })
            .collect()
    });
    assert_eq!(replies[0], None, "a one-byte datagram has no id to answer to");
    for reply in replies[1..].iter() {
        let reply = reply.as_ref().expect("a datagram with a header gets an answer");
        assert_eq!(&reply[..2], &[0x12, 0x34], "the answer carries the query's id");
        assert_eq!(reply[2] & 0x80, 0x80, "a response");
        assert_ne!(reply[3] & 0x0f, 0, "an error code: {reply:?}");
    }
    assert_eq!(resolve(&t, "a", "web"), Some("10.81.43.2".to_string()), "still answering");
    t.teardown();
}

/// An upstream answer too long for a datagram: the resolver asks the upstream again over TCP
/// and, as its own answer is too long too, tells glibc so, which asks again over TCP and
/// gets every address.
#[test]
fn a_long_upstream_answer_comes_through_over_tcp() {
    let mut t = Topology::with_outside("dnst");
    let mut confs = ResolvConfs(Vec::new());
    t.network("web", &["--subnet", "10.81.44.0/24"]);
    t.container("a", "web", &["--resolv-conf", &confs.dir(&t, "a")]);
    // Sixty addresses for one name: over 900 bytes, where a datagram without EDNS holds 512.
    let hosts = t.run_dir.join("many.hosts");
    let lines: String = (1..=60).map(|i| format!("10.98.0.{i} many.{EXTERNAL}\n")).collect();
    std::fs::write(&hosts, lines).unwrap();
    let _upstream = dnsmasq(&t, "outside", Some(OUTSIDE_ADDR), &format!("--addn-hosts={}", hosts.display()));
    let _daemon = daemon(&t);
    let out = t.exec_output("a", &["getent", "ahostsv4", &format!("many.{EXTERNAL}")]);
    let addresses: std::collections::BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert_eq!(addresses.len(), 60, "{addresses:?}");
    t.teardown();
}
