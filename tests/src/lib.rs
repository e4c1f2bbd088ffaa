//! Test topologies in throwaway network namespaces.
//!
//! Every test builds its own "host" namespace (where netpath's bridges live), container
//! namespaces, and, where it needs one, an "outside" namespace joined to the host by an uplink
//! veth. Each has its own state directory and bpffs pin root, so tests run in parallel and
//! nothing they do reaches the machine's own interfaces, routes or sysctls.
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsFd,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use serde_json::Value;

pub mod clients;
pub mod cni;
pub mod daemon;
pub mod frames;
pub mod netfilter;
pub mod prometheus;
pub mod users;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The netpath binary under test: `NETPATH_BIN`, or the one next to the test binary's
/// directory (`cargo xtask test` builds it first).
pub fn netpath_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("NETPATH_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    let bin = exe.parent().and_then(Path::parent).expect("target dir").join("netpath");
    assert!(bin.exists(), "{} is missing: run `cargo xtask test`", bin.display());
    bin
}

pub struct Topology {
    /// Prefix of every namespace this topology creates.
    pub prefix: String,
    pub run_dir: PathBuf,
    namespaces: Vec<String>,
}

impl Topology {
    /// A host namespace and a private state directory and pin root.
    pub fn new(tag: &str) -> Self {
        let prefix = format!("npt{}{}{}", tag, std::process::id() % 100_000, SEQ.fetch_add(1, Ordering::SeqCst));
        let run_dir = PathBuf::from(format!("/run/{prefix}"));
        std::fs::create_dir_all(&run_dir).unwrap();
        let mut topo = Self { prefix, run_dir, namespaces: Vec::new() };
        topo.netns("host");
        topo.exec("host", &["ip", "link", "set", "lo", "up"]);
        topo
    }

    /// Creates namespace `<prefix>-<name>` and returns its path.
    pub fn netns(&mut self, name: &str) -> String {
        let full = format!("{}-{name}", self.prefix);
        run(Command::new("ip").args(["netns", "add", &full]));
        self.namespaces.push(full.clone());
        format!("/run/netns/{full}")
    }

    pub fn ns_path(&self, name: &str) -> String {
        format!("/run/netns/{}-{name}", self.prefix)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.run_dir.join("state")
    }

    pub fn pin_root(&self) -> PathBuf {
        self.run_dir.join("bpffs/netpath")
    }

    /// A netpath command bound to this topology's host namespace, state and pins.
    pub fn netpath_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(netpath_bin());
        cmd.arg("--state-dir")
            .arg(self.state_dir())
            .arg("--bpffs")
            .arg(self.pin_root())
            .arg("--host-netns")
            .arg(self.ns_path("host"))
            .args(args);
        cmd
    }

    pub fn netpath(&self, args: &[&str]) -> Output {
        self.netpath_cmd(args).output().expect("run netpath")
    }

    /// Runs netpath, which must succeed; returns stdout.
    pub fn np(&self, args: &[&str]) -> String {
        let out = self.netpath(args);
        assert!(out.status.success(), "netpath {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs netpath with `--format json` appended and parses stdout.
    pub fn np_json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["--format", "json"]);
        serde_json::from_str(&self.np(&args)).expect("netpath JSON")
    }

    /// Runs netpath, which must fail with one line on stderr; returns that line.
    pub fn np_err(&self, args: &[&str]) -> String {
        let out = self.netpath(args);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(!out.status.success(), "netpath {args:?} succeeded; stdout: {}", String::from_utf8_lossy(&out.stdout));
        assert_eq!(stderr.trim_end().lines().count(), 1, "error is not one line: {stderr}");
        stderr.trim_end().to_string()
    }

    /// Runs a command inside namespace `<prefix>-<ns>`.
    pub fn exec(&self, ns: &str, cmd: &[&str]) -> String {
        let out = self.exec_output(ns, cmd);
        assert!(out.status.success(), "{cmd:?} in {ns} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn exec_output(&self, ns: &str, cmd: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &format!("{}-{ns}", self.prefix)])
            .args(cmd)
            .output()
            .expect("ip netns exec")
    }

    /// Whether `count` pings from `ns` to `ip` come back within a few seconds, as a client
    /// that retries sees a path: ping sends another every 0.2 s until `count` are answered.
    /// One packet lost to a busy machine is not a broken path (a first ARP request lost is
    /// sent again only after a second, past a one-second wait); what each lost one meets
    /// is printed, so a path that drops first packets shows in the test's output.
    pub fn ping(&self, ns: &str, ip: &str, count: u32) -> bool {
        let wait = PING_PATIENCE.as_secs().to_string();
        let answered = self.ping_counts(ns, ip, &["-c", &count.to_string(), "-i", "0.2", "-w", &wait, ip]);
        match answered {
            Some((sent, got)) if got == count && sent == count => true,
            Some((sent, got)) if got == count => {
                eprintln!("ping {ip} in {ns}: {got} answered of {sent} sent");
                true
            }
            _ => {
                eprintln!(
                    "ping {ip} in {ns}: {answered:?} (sent, answered); neighbours: {}",
                    self.exec(ns, &["ip", "neigh"]).trim()
                );
                false
            }
        }
    }

    /// Whether `count` pings from `ns` to `ip` all went out and none came back.
    pub fn no_reply(&self, ns: &str, ip: &str, count: u32) -> bool {
        self.ping_counts(ns, ip, &["-c", &count.to_string(), "-i", "0.2", "-W", "1", ip]) == Some((count, 0))
    }

    /// Pings sent and answered, read from ping's summary (its exit status says only whether
    /// any answer came); `None`, with ping's complaint printed, when it could send none.
    fn ping_counts(&self, ns: &str, ip: &str, args: &[&str]) -> Option<(u32, u32)> {
        let out = self.exec_output(ns, &[&["ping"], args].concat());
        let counts = ping_summary(&String::from_utf8_lossy(&out.stdout));
        if counts.is_none() {
            eprintln!("ping {ip} in {ns}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        counts
    }

    /// Asserts that every endpoint of `endpoints` (as `attach` and `endpoint ls` give them:
    /// `id`, `netns`, `ip`) is wired: each pings the next one (the last the first), so every
    /// endpoint sends and answers and none pings its own address. One ping each, all at once.
    pub fn assert_ring_reachable(&self, endpoints: &[Value]) {
        assert!(endpoints.len() >= 2, "a ring needs two endpoints: {endpoints:?}");
        let field = |e: &Value, key: &str| e[key].as_str().unwrap_or_else(|| panic!("no {key} in {e}")).to_string();
        let ring: Vec<(String, String, String)> = (0..endpoints.len())
            .map(|i| {
                let (from, to) = (&endpoints[i], &endpoints[(i + 1) % endpoints.len()]);
                (field(from, "id"), field(from, "netns"), field(to, "ip"))
            })
            .collect();
        for (i, (id, _, to)) in ring.iter().enumerate() {
            assert_ne!(&field(&endpoints[i], "ip"), to, "{id} would ping its own address");
        }
        let ping = |netns: &str, ip: &str, count: &str| {
            Command::new("nsenter")
                .arg(format!("--net={netns}"))
                .args(["ping", "-c", count, "-i", "0.2", "-W", "2", ip])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn ping")
        };
        let children: Vec<_> = ring.iter().map(|(_, netns, ip)| ping(netns, ip, "1")).collect();
        let failed: Vec<&(String, String, String)> = ring
            .iter()
            .zip(children)
            .filter_map(|(r, child)| (!child.wait_with_output().is_ok_and(|o| o.status.success())).then_some(r))
            .collect();
        // A ping lost to a machine busy with a hundred of them gets a second chance; a
        // miswired endpoint answers neither.
        let unreachable: Vec<String> = failed
            .into_iter()
            .filter(|(_, netns, ip)| !ping(netns, ip, "3").wait_with_output().is_ok_and(|o| o.status.success()))
            .map(|(id, _, ip)| format!("{id} -> {ip}"))
            .collect();
        assert!(
            unreachable.is_empty(),
            "{} of {} endpoints got no answer: {unreachable:?}",
            unreachable.len(),
            ring.len()
        );
    }

    /// `ip -j link show` of one interface in a namespace.
    pub fn link(&self, ns: &str, ifname: &str) -> Option<Value> {
        let out = self.exec_output(ns, &["ip", "-j", "-s", "link", "show", "dev", ifname]);
        if !out.status.success() {
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array().and_then(|a| a.first().cloned())
    }

    /// Creates a network with netpath and returns its JSON.
    pub fn network(&self, name: &str, extra: &[&str]) -> Value {
        let mut args = vec!["network", "create", name];
        args.extend(extra);
        self.np_json(&args)
    }

    /// Creates container namespace `name` and attaches it; returns the endpoint JSON.
    pub fn container(&mut self, name: &str, network: &str, extra: &[&str]) -> Value {
        let path = self.netns(name);
        self.exec(name, &["ip", "link", "set", "lo", "up"]);
        let mut args = vec!["attach", "--network", network, "--netns", &path, "--id", name];
        args.extend(extra);
        self.np_json(&args)
    }

    /// Holds netpath's global lock exclusively, as a stuck `gc` would, until dropped. The
    /// lock file exists once a command has taken the lock.
    pub fn hold_global_lock(&self) -> nix::fcntl::Flock<std::fs::File> {
        let file = std::fs::File::open(self.state_dir().join("locks/all.lock")).expect("open the global lock");
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| e).expect("flock")
    }

    /// Whether the netpath under test has loaded its datapath under this topology's pin root.
    pub fn datapath_loaded(&self) -> bool {
        netpath::kernel::datapath::is_pinned(&self.pin_root())
    }

    /// The pinned datapath's directory: `<pin root>/<version>`, the version of the netpath
    /// build under test, with every program pinned. Panics when it is not there (never
    /// loaded, another build's, or a leftover a reload staged), naming what the pin root holds.
    pub fn datapath_dir(&self) -> PathBuf {
        let dir = self.pin_root().join(netpath::kernel::datapath::version());
        if !self.datapath_loaded() {
            let held: Vec<String> = std::fs::read_dir(self.pin_root())
                .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            panic!("no datapath of this build is pinned at {} (the pin root holds {held:?})", dir.display());
        }
        dir
    }

    /// The host namespace's interfaces whose `clsact` ingress is bound to a tc block, with the
    /// block's index, read independently of netpath with `tc`.
    pub fn tc_blocks(&self) -> std::collections::BTreeMap<String, String> {
        let qdiscs = self.exec("host", &["tc", "qdisc", "show"]);
        let after = |line: &str, word: &str| Some(line.split(word).nth(1)?.split_whitespace().next()?.to_string());
        qdiscs
            .lines()
            .filter(|l| l.starts_with("qdisc clsact"))
            .filter_map(|l| Some((after(l, " dev ")?, after(l, " ingress_block ")?)))
            .collect()
    }

    /// The id of the program the one filter of tc block `block` runs (direct action, named
    /// `from_container`). Panics unless the block has exactly that one filter.
    pub fn block_program(&self, block: &str) -> String {
        let filters = self.exec("host", &["tc", "filter", "show", "block", block]);
        let filter: Vec<&str> = filters.lines().filter(|l| l.contains(" handle ")).collect();
        assert!(filter.len() == 1 && filter[0].contains("name from_container"), "one filter: {filters}");
        assert!(filter[0].contains("direct-action"), "{filters}");
        filter[0].split(" id ").nth(1).unwrap().split_whitespace().next().unwrap().to_string()
    }

    /// Entries of a pinned map of the datapath, read independently of netpath with bpftool.
    /// Panics when the datapath or the map is not pinned.
    pub fn map_entries(&self, map: &str) -> Vec<Value> {
        let path = self.datapath_dir().join(map);
        assert!(path.exists(), "map {map} is not pinned at {}", path.display());
        let out = Command::new("bpftool").args(["-j", "map", "dump", "pinned"]).arg(&path).output().unwrap();
        assert!(out.status.success(), "bpftool: {}", String::from_utf8_lossy(&out.stderr));
        let entries: Value = serde_json::from_slice(&out.stdout).unwrap();
        entries.as_array().unwrap_or_else(|| panic!("bpftool dumped {map} as {entries}")).clone()
    }

    /// Deletes every entry of a pinned map of the datapath behind netpath's back, as a map made
    /// anew (a reload that changed its layout) is until `restore` refills it. Returns how many.
    pub fn clear_map(&self, map: &str) -> usize {
        let entries = self.map_entries(map);
        for entry in &entries {
            let key: Vec<&str> = entry["key"].as_array().expect("raw key").iter().filter_map(Value::as_str).collect();
            let mut del = Command::new("bpftool");
            del.args(["map", "delete", "pinned"]).arg(self.datapath_dir().join(map)).arg("key").args(&key);
            run(&mut del);
        }
        entries.len()
    }

    /// Packets the datapath dropped for `reason` (`netpath stats`). Panics for a reason
    /// `netpath stats` does not list (it lists every reason the build knows).
    pub fn drop_count(&self, reason: &str) -> u64 {
        let stats = self.np_json(&["stats"]);
        let drops = stats["drops"].as_array().expect("stats drops");
        let Some(drop) = drops.iter().find(|d| d["reason"] == reason) else {
            let known: Vec<&str> = drops.iter().filter_map(|d| d["reason"].as_str()).collect();
            panic!("`netpath stats` knows no drop reason `{reason}`; it lists {known:?}");
        };
        drop["packets"].as_u64().unwrap()
    }

    /// What netfilter holds in the namespaces of this topology, one line each: nftables
    /// tables, x_tables tables and conntrack entries, asked of the kernel in each namespace
    /// (see `netfilter`). Namespaces a test deleted itself hold nothing and are skipped.
    pub fn netfilter_findings(&self) -> Vec<String> {
        let mut found = Vec::new();
        for ns in &self.namespaces {
            let path = format!("/run/netns/{ns}");
            if Path::new(&path).exists() {
                found.extend(in_netns(&path, netfilter::findings).into_iter().map(|f| format!("{ns}: {f}")));
            }
        }
        found
    }

    /// Asserts that netpath used no part of netfilter in any namespace of this topology: no
    /// nftables table, no iptables table, no conntrack entry.
    pub fn assert_no_netfilter(&self) {
        let found = self.netfilter_findings();
        assert!(found.is_empty(), "netfilter is in use in the topology's namespaces:\n  {}", found.join("\n  "));
    }

    /// Removes every network through netpath and checks that no row, link or map entry is
    /// left; then deletes the namespaces and the pin root.
    pub fn teardown(mut self) {
        self.remove_networks();
        assert_eq!(self.np_json(&["endpoint", "ls"]), Value::Array(vec![]), "endpoint rows left");
        assert_eq!(self.np_json(&["network", "ls"]), Value::Array(vec![]), "network rows left");
        let links = self.exec("host", &["ip", "-o", "link", "show"]);
        let leftover: Vec<&str> = links.lines().filter(|l| l.contains(": np-") || l.contains(": npv")).collect();
        assert!(leftover.is_empty(), "links left in the host namespace: {leftover:?}");
        // A topology that never loaded the datapath has no map to look at.
        if self.datapath_loaded() {
            for map in ["ENDPOINTS", "VETHS", "NETWORKS"] {
                let left = self.map_entries(map);
                assert!(left.is_empty(), "{map} entries left: {left:?}");
            }
        }
        self.release();
        self.namespaces.clear();
    }

    fn remove_networks(&self) {
        if !self.state_dir().exists() {
            return;
        }
        let out = self.netpath(&["network", "ls", "--format", "json"]);
        if let Ok(Value::Array(nets)) = serde_json::from_slice::<Value>(&out.stdout) {
            for n in nets {
                let _ = self.netpath(&["network", "rm", n["name"].as_str().unwrap(), "--force"]);
            }
        }
    }

    fn release(&mut self) {
        for ns in self.namespaces.drain(..).rev() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
        // netpath mounts bpffs on the pin root itself when it is not on one already.
        for mount in [self.pin_root(), self.run_dir.join("bpffs")] {
            if is_mount_point(&mount) {
                let _ = Command::new("umount").arg(&mount).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

impl Drop for Topology {
    /// A failed test still leaves nothing behind.
    fn drop(&mut self) {
        if !self.namespaces.is_empty() {
            self.remove_networks();
            self.release();
        }
    }
}

/// A netpath command held stopped after a step (`NETPATH_PAUSE_AT`, honoured by debug builds).
/// Killed if the test fails before letting it go: it holds locks that the topology's cleanup
/// would wait for forever.
pub struct Held(Option<std::process::Child>);

impl Held {
    fn pid(&self) -> u32 {
        self.0.as_ref().expect("a held command").id()
    }

    /// Whether the command is stopped (state `T` in `/proc/<pid>/stat`).
    pub fn is_stopped(&self) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // The command name, in parentheses, may hold spaces: the state follows the last ')'.
        stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) == Some("T")
    }

    /// Lets the command go on; the caller waits for it.
    pub fn resume(mut self) -> std::process::Child {
        let child = self.0.take().expect("a held command");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
        child
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Topology {
    /// Starts `netpath args`, with its output piped, and waits until it has stopped itself
    /// right after `step`.
    pub fn hold_at(&self, step: &str, args: &[&str]) -> Held {
        let child = self
            .netpath_cmd(args)
            .env("NETPATH_PAUSE_AT", step)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn netpath");
        let held = Held(Some(child));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !held.is_stopped() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(held.is_stopped(), "netpath {args:?} did not stop at {step}");
        held
    }
}

/// "N packets transmitted, M received" from ping's summary.
fn ping_summary(out: &str) -> Option<(u32, u32)> {
    let line = out.lines().find(|l| l.contains(" packets transmitted, "))?;
    let mut numbers = line.split(", ").map(|part| part.split_whitespace().next().and_then(|n| n.parse().ok()));
    Some((numbers.next()??, numbers.next()??))
}

/// Whether `path` is a mount point, from /proc/self/mountinfo.
pub fn is_mount_point(path: &Path) -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let path = path.to_string_lossy();
    mountinfo.lines().any(|l| l.split_whitespace().nth(4) == Some(&*path))
}

pub fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Runs `f` on a thread inside the namespace at `path`; sockets it opens stay there.
pub fn in_netns<T: Send>(path: &str, f: impl FnOnce() -> T + Send) -> T {
    let ns = std::fs::File::open(path).expect("open netns");
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("netns thread")
    })
}

/// How long a test's TCP exchange may take.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long `Topology::ping` waits for its answers.
const PING_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// A TCP exchange from namespace `ns` to `to`; returns the reply and the peer address the
/// client's socket reports.
pub fn tcp_request(t: &Topology, ns: &str, to: SocketAddr, msg: &str) -> (String, SocketAddr) {
    let mut conn = in_netns(&t.ns_path(ns), || TcpStream::connect_timeout(&to, TIMEOUT))
        .unwrap_or_else(|e| panic!("{ns} -> {to}: {e}"));
    conn.set_read_timeout(Some(TIMEOUT)).unwrap();
    conn.write_all(msg.as_bytes()).unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    (reply, conn.peer_addr().unwrap())
}

pub fn ip_of(endpoint: &Value) -> Ipv4Addr {
    endpoint["ip"].as_str().expect("endpoint ip").parse().unwrap()
}

/// A deterministic byte stream, so a receiver can check every byte without storing it.
pub fn pattern(offset: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        let n = offset + i as u64;
        *b = (n ^ (n >> 8) ^ (n >> 16)).wrapping_mul(31) as u8;
    }
}

/// The outside world of a topology: namespace `outside`, joined to the host namespace by the
/// uplink veth `npup0` (host side, 10.99.0.1/24) and `eth0` (outside, 10.99.0.2/24). The host's
/// default route points at the outside.
pub const UPLINK: &str = "npup0";
pub const UPLINK_ADDR: &str = "10.99.0.1";
pub const OUTSIDE_ADDR: &str = "10.99.0.2";

impl Topology {
    pub fn with_outside(tag: &str) -> Self {
        let mut t = Self::new(tag);
        t.netns("outside");
        run(Command::new("ip").args(["link", "add", UPLINK, "netns", &format!("{}-host", t.prefix)]).args([
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &format!("{}-outside", t.prefix),
        ]));
        t.exec("host", &["ip", "addr", "add", &format!("{UPLINK_ADDR}/24"), "dev", UPLINK]);
        t.exec("host", &["ip", "link", "set", UPLINK, "up"]);
        t.exec("outside", &["ip", "addr", "add", &format!("{OUTSIDE_ADDR}/24"), "dev", "eth0"]);
        t.exec("outside", &["ip", "link", "set", "eth0", "up"]);
        t.exec("outside", &["ip", "link", "set", "lo", "up"]);
        t.exec("host", &["ip", "route", "add", "default", "via", OUTSIDE_ADDR]);
        t
    }
}

impl Topology {
    /// One of an endpoint's counters in `netpath stats` (`rx_packets`, `tx_packets`, ...).
    pub fn endpoint_stat(&self, id: &str, field: &str) -> u64 {
        let stats = self.np_json(&["stats"]);
        let endpoints = stats["endpoints"].as_array().unwrap();
        let ep = endpoints.iter().find(|e| e["id"] == id).unwrap_or_else(|| panic!("no endpoint {id} in {stats}"));
        ep[field].as_u64().unwrap()
    }
}

/// Answers one TCP connection on `port` inside container `ns` with "hello from NS".
pub fn serve_once(t: &Topology, ns: &str, port: u16) -> std::thread::JoinHandle<()> {
    let listener = in_netns(&t.ns_path(ns), || TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).unwrap());
    let reply = format!("hello from {ns}");
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.write_all(reply.as_bytes()).unwrap();
    })
}

/// Connects from namespace `from` and reads until the server closes.
pub fn fetch(t: &Topology, from: &str, to: SocketAddr) -> String {
    let mut conn = in_netns(&t.ns_path(from), || TcpStream::connect_timeout(&to, Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("{from} -> {to}: {e}"));
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    reply
}

/// What a reboot does to the host namespace: netpath's links are gone, and so is the bpffs
/// with every pin; the uplink (a physical NIC) and the database stay.
pub fn reboot_host(t: &Topology) {
    let links = t.exec("host", &["ip", "-o", "link", "show"]);
    for name in links.lines().filter_map(|l| l.split(": ").nth(1)).map(|n| n.split('@').next().unwrap()) {
        if name.starts_with("np-") || name.starts_with("npv") {
            let _ = t.exec_output("host", &["ip", "link", "del", name]);
        }
    }
    assert!(is_mount_point(&t.pin_root()), "netpath mounts bpffs on the pin root itself");
    run(Command::new("umount").arg(t.pin_root()));
}
