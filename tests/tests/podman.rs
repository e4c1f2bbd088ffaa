//! Podman (4.3, CNI backend) with netpath as its network: `podman run --network netpath -p`
//! answers from the outside namespace, the reference `tuning` plugin chained after netpath
//! gets netpath's result, and `podman rm -f` leaves nothing. Podman comes from
//! the private prefix `cargo xtask test` unpacks (it pulls iptables in, which the machine
//! must not get); its configuration, storage, plugin and conflist directories are the
//! test's own. Podman still writes a few global paths (its lock in /dev/shm, a blob cache in
//! /var/lib/containers, libcni's cache in /var/lib/cni, its namespaces in /run/netns and a
//! cgroup parent): the test holds the global lock and removes what it made.
use std::{
    io::Read,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use netpath_tests::{
    OUTSIDE_ADDR, Topology, UPLINK_ADDR,
    clients::{GlobalLock, Placed, cgroup_exists, remove_cgroups, rootfs_tar, unmount_under},
    daemon::Daemon,
    netpath_bin,
};

const CONFLIST: &str = include_str!("../../contrib/cni/netpath.conflist");
const HOOKS: [(&str, &str); 2] = [
    ("netpath-attach.json", include_str!("../../contrib/podman/hooks.d/netpath-attach.json")),
    ("netpath-detach.json", include_str!("../../contrib/podman/hooks.d/netpath-detach.json")),
];
/// The cgroup Podman puts containers and conmon under with the cgroupfs manager.
const CGROUP_PARENT: &str = "libpod_parent";

/// The private prefix `cargo xtask test` unpacks Podman into (next to the netpath binary's
/// profile directory).
fn podman_root() -> PathBuf {
    let target = netpath_bin().parent().and_then(Path::parent).unwrap().to_path_buf();
    let root = target.join("podman-root");
    assert!(root.join("usr/bin/podman").exists(), "{} lacks Podman: run `cargo xtask test`", root.display());
    root
}

struct Podman<'a> {
    t: &'a Topology,
    root: PathBuf,
    dir: PathBuf,
    /// Whether Podman's cgroup parent will be this test's to remove.
    cgroups_ours: bool,
    /// Whether the plugins find the prefix's iptables (`dnsname` opens port 53 with it).
    iptables: bool,
}

impl<'a> Podman<'a> {
    /// Podman with the README's conflist and the reference `tuning` plugin chained after
    /// netpath: tuning refuses to run without netpath's result as its prevResult.
    fn new(t: &'a Topology) -> Self {
        Self::chained(t, &[serde_json::json!({ "type": "tuning", "sysctl": { "net.core.somaxconn": "321" } })])
    }

    /// Writes the configuration the issue's notes found Podman 4.3 needs, with every
    /// directory under the test's run directory, and the README's conflist with `after`
    /// chained after netpath.
    fn chained(t: &'a Topology, after: &[serde_json::Value]) -> Self {
        let root = podman_root();
        let dir = t.run_dir.join("podman");
        let plugins = dir.join("cni-bin");
        let conflists = dir.join("net.d");
        std::fs::create_dir_all(&plugins).unwrap();
        std::fs::create_dir_all(&conflists).unwrap();
        std::fs::copy(netpath_bin(), plugins.join("netpath")).unwrap();
        let mut conflist: serde_json::Value = serde_json::from_str(CONFLIST).unwrap();
        conflist["plugins"].as_array_mut().unwrap().extend_from_slice(after);
        std::fs::write(conflists.join("netpath.conflist"), conflist.to_string()).unwrap();
        let conf = format!(
            r#"[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{dir}/events.log"
tmp_dir = "{dir}/tmp"
conmon_path = ["{root}/usr/bin/conmon"]
[network]
network_backend = "cni"
cni_plugin_dirs = ["{plugins}", "{root}/usr/lib/cni"]
network_config_dir = "{conflists}"
"#,
            dir = dir.display(),
            root = root.display(),
            plugins = plugins.display(),
            conflists = conflists.display(),
        );
        std::fs::write(dir.join("containers.conf"), conf).unwrap();
        let storage = format!(
            "[storage]\ndriver = \"overlay\"\nrunroot = \"{0}/run\"\ngraphroot = \"{0}/storage\"\n",
            dir.display()
        );
        std::fs::write(dir.join("storage.conf"), storage).unwrap();
        std::fs::write(dir.join("registries.conf"), "unqualified-search-registries = []\n").unwrap();
        // containers/image reads $HOME/.config/containers/policy.json before /etc/containers.
        let policy = dir.join("home/.config/containers");
        std::fs::create_dir_all(&policy).unwrap();
        std::fs::write(policy.join("policy.json"), r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
        Self { t, root, dir, cgroups_ours: !cgroup_exists(CGROUP_PARENT), iptables: false }
    }

    /// Podman in the test's host namespace, so the plugin runs there.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        let mut path = format!("{}:{}", self.root.join("usr/bin").display(), std::env::var("PATH").unwrap_or_default());
        if self.iptables {
            path = format!("{}:{path}", self.root.join("usr/sbin").display());
            cmd.env("XTABLES_LIBDIR", self.root.join("usr/lib/x86_64-linux-gnu/xtables"));
        }
        cmd.arg(format!("--net={}", self.t.ns_path("host")))
            .arg(self.root.join("usr/bin/podman"))
            .args(args)
            .env("PATH", path)
            .env("LD_LIBRARY_PATH", self.root.join("usr/lib/x86_64-linux-gnu"))
            .env("HOME", self.dir.join("home"))
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", self.dir.join("registries.conf"))
            .env("NETPATH_STATE_DIR", self.t.state_dir())
            .env("NETPATH_BPFFS", self.t.pin_root())
            .stdin(Stdio::null());
        cmd
    }

    fn ok(&self, args: &[&str]) -> String {
        // A detached container inherits nothing from `podman run -d` (conmon holds its
        // stdio), so output() returns when podman does.
        let out = self.cmd(args).output().unwrap();
        assert!(out.status.success(), "podman {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Podman<'_> {
    fn drop(&mut self) {
        let _ = self.cmd(&["rm", "--all", "--force", "--time", "0"]).output();
        unmount_under(&self.dir);
        if self.cgroups_ours {
            remove_cgroups(CGROUP_PARENT);
        }
    }
}

/// The global paths a Podman run with a CNI network writes: its lock, its blob cache and
/// libcni's cache of results.
fn podman_paths() -> Placed {
    let mut placed = Placed::default();
    placed.will_create(Path::new("/dev/shm/libpod_lock"), &[]);
    placed.will_create(Path::new("/var/lib/containers"), &[]);
    placed.will_create(Path::new("/var/lib/cni"), &[]);
    placed
}

fn fetch(t: &Topology, to: SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = netpath_tests::in_netns(&t.ns_path("outside"), || {
            let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
            conn.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut reply = String::new();
            conn.read_to_string(&mut reply).map(|_| reply)
        });
        match attempt {
            Ok(reply) if !reply.is_empty() => return reply,
            // The server in the container may not listen yet.
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            other => panic!("outside -> {to}: {other:?}"),
        }
    }
}

#[test]
fn podman_run_publishes_and_rm_leaves_nothing() {
    let _global = GlobalLock::take();
    let t = Topology::with_outside("pod");
    let mut placed = podman_paths();
    let podman = Podman::new(&t);
    podman.ok(&["import", rootfs_tar(&t.run_dir).to_str().unwrap(), "nptest"]);

    // A server in the container (perl is in every Debian: perl-base is essential).
    let serve = "use IO::Socket::INET; my $s = IO::Socket::INET->new(LocalPort => 80, Listen => 5, ReuseAddr => 1) \
                 or die; while (my $c = $s->accept) { print $c \"hello from podman\\n\"; close $c }";
    let id = podman.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "netpath",
        "-p",
        "8080:80",
        "-v",
        "/usr:/usr:ro",
        "localhost/nptest",
        "/usr/bin/perl",
        "-e",
        serve,
    ]);
    let endpoint = format!("{id}-eth0");
    let endpoints = t.np_json(&["endpoint", "ls"]);
    assert_eq!(endpoints.as_array().unwrap().len(), 1, "{endpoints}");
    assert_eq!(endpoints[0]["id"], endpoint.as_str());
    assert_eq!(endpoints[0]["name"], "web", "Podman passes the container's name as K8S_POD_NAME");
    let ports = t.np_json(&["port", "ls"]);
    assert_eq!(ports[0]["host_port"], 8080, "{ports}");
    // libcni's cache of this container's result, when /var/lib/cni was there before.
    placed.will_create(Path::new("/var/lib/cni"), &[&format!("results/netpath-{id}-eth0")]);

    // tuning ran after netpath, in the container's namespace.
    let pid = podman.ok(&["inspect", "--format", "{{.State.Pid}}", "web"]);
    let somaxconn = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["cat", "/proc/sys/net/core/somaxconn"])
        .output();
    assert_eq!(
        String::from_utf8_lossy(&somaxconn.unwrap().stdout).trim(),
        "321",
        "the chained tuning plugin did not run"
    );

    let uplink: std::net::Ipv4Addr = UPLINK_ADDR.parse().unwrap();
    assert_eq!(fetch(&t, SocketAddr::from((uplink, 8080))), "hello from podman\n");

    // `podman rm -f` makes the DEL: no endpoint, port, veth or namespace of it is left.
    let netns = endpoints[0]["netns"].as_str().unwrap().to_string();
    podman.ok(&["rm", "--force", "--time", "0", "web"]);
    assert!(t.np_json(&["endpoint", "ls"]).as_array().unwrap().is_empty(), "endpoint left");
    assert!(t.np_json(&["port", "ls"]).as_array().unwrap().is_empty(), "published port left");
    let links = t.exec("host", &["ip", "-o", "link", "show"]);
    assert!(!links.contains("npv"), "veth left: {links}");
    assert!(!Path::new(&netns).exists(), "Podman's namespace {netns} left");
    assert!(podman.ok(&["ps", "--all", "--quiet"]).is_empty());

    drop(podman);
    drop(placed);
    t.teardown();
}

/// The hooks.d example: a container with the annotation gets netpath's eth0 from the OCI
/// hook (its own network is `none`), and `podman rm -f` releases it through poststop.
#[test]
fn podman_hooks_attach_by_annotation() {
    let _global = GlobalLock::take();
    let t = Topology::with_outside("phk");
    t.network("web", &["--subnet", "10.76.0.0/24"]);
    let mut placed = Placed::default();
    placed.will_create(Path::new("/dev/shm/libpod_lock"), &[]);
    placed.will_create(Path::new("/var/lib/containers"), &[]);
    let podman = Podman::new(&t);
    let readme = include_str!("../../README.md");
    let hooks_dir = podman.dir.join("hooks.d");
    std::fs::create_dir_all(&hooks_dir).unwrap();
    for (name, text) in HOOKS {
        assert!(readme.contains(text.trim()), "the README shows {name}");
        let mut hook: serde_json::Value = serde_json::from_str(text).unwrap();
        hook["hook"]["path"] = serde_json::json!(netpath_bin());
        hook["hook"]["env"] = serde_json::json!([
            format!("NETPATH_STATE_DIR={}", t.state_dir().display()),
            format!("NETPATH_BPFFS={}", t.pin_root().display()),
            format!("NETPATH_HOST_NETNS={}", t.ns_path("host")),
        ]);
        std::fs::write(hooks_dir.join(name), hook.to_string()).unwrap();
    }
    podman.ok(&["import", rootfs_tar(&t.run_dir).to_str().unwrap(), "nptest"]);
    let hooks = format!("--hooks-dir={}", hooks_dir.display());
    let run = |name: &str, annotation: &str| {
        podman.ok(&[
            &hooks,
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "none",
            "--annotation",
            annotation,
            "-v",
            "/usr:/usr:ro",
            "localhost/nptest",
            "/usr/bin/sleep",
            "600",
        ])
    };
    let id = run("hooked", "io.netpath.network=web");
    let other = run("plain", "io.netpath.network=elsewhere");
    let endpoints = t.np_json(&["endpoint", "ls"]);
    let ids: Vec<&str> = endpoints.as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![id.as_str()], "only the annotated container is attached, under its id");
    let pid = podman.ok(&["inspect", "--format", "{{.State.Pid}}", "hooked"]);
    let ping = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["ping", "-c", "1", "-w", "5", OUTSIDE_ADDR])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(ping.success(), "the hooked container cannot reach the outside");

    podman.ok(&[&hooks, "rm", "--force", "--time", "0", "hooked"]);
    assert!(t.np_json(&["endpoint", "ls"]).as_array().unwrap().is_empty(), "poststop released it");
    podman.ok(&[&hooks, "rm", "--force", "--time", "0", &other]);
    drop(podman);
    drop(placed);
    t.teardown();
}

/// What Podman's container `name` resolves `asked` to, with glibc (`getent`).
fn resolve_in(podman: &Podman, name: &str, asked: &str) -> String {
    let out = podman
        .cmd(&["run", "--rm", "--name", name, "--network", "netpath", "-v", "/usr:/usr:ro"])
        .args(["localhost/nptest", "/usr/bin/getent", "ahostsv4", asked])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

/// A container that stays up until removed.
fn sleeper(podman: &Podman, name: &str) -> String {
    podman.ok(&[
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "netpath",
        "-v",
        "/usr:/usr:ro",
        "localhost/nptest",
        "/usr/bin/sleep",
        "120",
    ])
}

/// With the daemon running, netpath's result names the gateway as the nameserver, Podman
/// writes it into the container's resolv.conf, and containers find each other by name.
#[test]
fn podman_containers_resolve_each_other_through_the_daemon() {
    let _global = GlobalLock::take();
    let t = Topology::with_outside("pdns");
    let placed = podman_paths();
    let _daemon = Daemon::start_with(&t, &t.run_dir.join("plugin.sock"), &["--dns-upstream", OUTSIDE_ADDR]);
    let podman = Podman::chained(&t, &[]);
    podman.ok(&["import", rootfs_tar(&t.run_dir).to_str().unwrap(), "nptest"]);
    sleeper(&podman, "db");
    let db = t.np_json(&["endpoint", "ls"])[0].clone();
    assert_eq!(db["name"], "db", "{db}");
    let conf = podman.ok(&["exec", "db", "/usr/bin/cat", "/etc/resolv.conf"]);
    assert!(conf.contains(&format!("nameserver {}", db["gateway"].as_str().unwrap())), "{conf}");
    assert_eq!(resolve_in(&podman, "web", "db"), db["ip"].as_str().unwrap(), "web finds db by name");
    drop(podman);
    drop(placed);
    t.teardown();
}

/// A daemon that outlives the containers (dnsname's dnsmasq), stopped by the PID it wrote.
struct Pidfile(PathBuf);

impl Drop for Pidfile {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.0).ok().and_then(|p| p.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
    }
}

/// The `dnsname` plugin chained after netpath (no netpath daemon): it takes the bridge from
/// netpath's result, the first interface, and its dnsmasq answers for the containers.
#[test]
fn podman_with_dnsname_chained_after_netpath_resolves_names() {
    let _global = GlobalLock::take();
    let t = Topology::with_outside("pdnn");
    let mut placed = podman_paths();
    placed.will_create(Path::new("/run/containers/cni"), &["dnsname"]);
    let dnsname_dir = Path::new("/run/containers/cni/dnsname");
    let dnsname =
        serde_json::json!({ "type": "dnsname", "domainName": "dns.podman", "capabilities": { "aliases": true } });
    let mut podman = Podman::chained(&t, &[dnsname]);
    podman.iptables = true;
    podman.ok(&["import", rootfs_tar(&t.run_dir).to_str().unwrap(), "nptest"]);
    sleeper(&podman, "db");
    let db = t.np_json(&["endpoint", "ls"])[0].clone();
    let _dnsmasq = Pidfile(dnsname_dir.join("netpath/pidfile"));
    assert_eq!(resolve_in(&podman, "web", "db"), db["ip"].as_str().unwrap(), "web finds db through dnsname");
    drop(podman);
    drop(placed);
    t.teardown();
}
