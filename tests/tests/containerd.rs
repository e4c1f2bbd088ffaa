//! containerd with netpath as its CNI plugin: `ctr run --cni` reads /etc/cni/net.d and runs
//! plugins from /opt/cni/bin (global paths: these tests hold the global lock and put back
//! what they found). containerd runs in the test's host namespace with private root, state
//! and socket, and `ctr` there too, so the plugin runs in that namespace.
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use netpath_tests::{
    OUTSIDE_ADDR, Topology,
    clients::{GlobalLock, Placed, image_tar, remove_cgroups, unmount_under},
    daemon::Daemon,
    netpath_bin,
};
use serde_json::Value;

const CONFLIST: &str = include_str!("../../contrib/cni/netpath.conflist");
const NAMESPACE: &str = "netpath-test";
const IMAGE: &str = "docker.io/library/nptest:latest";

struct Containerd<'a> {
    t: &'a Topology,
    dir: PathBuf,
    daemon: Child,
    containers: Vec<String>,
}

impl<'a> Containerd<'a> {
    fn start(t: &'a Topology) -> Self {
        let dir = t.run_dir.join("containerd");
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config.toml");
        std::fs::write(&config, "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n").unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let daemon = Command::new("nsenter")
            .arg(format!("--net={}", t.ns_path("host")))
            .arg("containerd")
            .arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--state")
            .arg(dir.join("state"))
            .arg("--address")
            .arg(dir.join("sock"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("containerd");
        let c = Self { t, dir, daemon, containers: Vec::new() };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !c.ctr(&["version"]).status.success() {
            assert!(Instant::now() < deadline, "containerd does not answer: {}", c.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// `ctr` in the host namespace, with netpath's environment for the plugin it runs.
    fn ctr_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.t.ns_path("host")))
            .arg("ctr")
            .arg("--address")
            .arg(self.dir.join("sock"))
            .args(["--namespace", NAMESPACE])
            .args(args)
            .env("NETPATH_STATE_DIR", self.t.state_dir())
            .env("NETPATH_BPFFS", self.t.pin_root())
            .stdin(Stdio::null());
        cmd
    }

    fn ctr(&self, args: &[&str]) -> std::process::Output {
        self.ctr_cmd(args).output().unwrap()
    }

    fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(out.status.success(), "ctr {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// `ctr run -d --cni` of a container that sleeps, seeing the host's /usr.
    fn run_detached(&mut self, id: &str) {
        self.containers.push(id.to_string());
        // A detached task inherits ctr's stdio: no pipe, or `output()` waits for the task.
        let log = std::fs::File::create(self.dir.join(format!("ctr-{id}.log"))).unwrap();
        let status = self
            .ctr_cmd(&["run", "-d", "--cni", "--mount", "type=bind,src=/usr,dst=/usr,options=rbind:ro", IMAGE, id])
            .stdout(Stdio::null())
            .stderr(log)
            .status()
            .unwrap();
        let err = std::fs::read_to_string(self.dir.join(format!("ctr-{id}.log"))).unwrap_or_default();
        assert!(status.success(), "ctr run {id}: {err}");
    }

    fn pid(&self, id: &str) -> u32 {
        let tasks = self.ctr_ok(&["task", "ls"]);
        let line = tasks.lines().find(|l| l.split_whitespace().next() == Some(id));
        line.and_then(|l| l.split_whitespace().nth(1)).and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("{tasks}"))
    }

    /// Kills the task and removes the container, as `ctr` users do: no CNI DEL is made.
    fn kill_and_remove(&self, id: &str) {
        self.ctr_ok(&["task", "kill", "-s", "SIGKILL", id]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.ctr_ok(&["task", "ls"]).lines().any(|l| l.starts_with(id) && l.contains("RUNNING")) {
            assert!(Instant::now() < deadline, "{id} does not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.ctr_ok(&["task", "rm", id]);
        self.ctr_ok(&["container", "rm", id]);
    }
}

impl Drop for Containerd<'_> {
    fn drop(&mut self) {
        for id in &self.containers {
            let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", id]);
            let _ = self.ctr(&["task", "rm", "-f", id]);
            let _ = self.ctr(&["container", "rm", id]);
        }
        unsafe { libc::kill(self.daemon.id() as i32, libc::SIGTERM) };
        let _ = self.daemon.wait();
        unmount_under(&self.dir);
        // containerd makes a cgroup per namespace in every hierarchy and leaves it behind.
        remove_cgroups(NAMESPACE);
    }
}

fn endpoint_ids(t: &Topology) -> Vec<String> {
    let eps = t.np_json(&["endpoint", "ls"]);
    eps.as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect()
}

fn ip_of(t: &Topology, id: &str) -> String {
    let eps = t.np_json(&["endpoint", "ls"]);
    let ep = eps.as_array().unwrap().iter().find(|e| e["id"] == id).cloned();
    ep.unwrap_or_else(|| panic!("no endpoint {id}: {eps}"))["ip"].as_str().unwrap().to_string()
}

fn ping_from(pid: u32, to: &str) -> bool {
    Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["ping", "-c", "1", "-w", "5", to])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn ctr_run_cni_containers_talk_and_are_released() {
    assert!(
        include_str!("../../README.md").contains(CONFLIST.trim()),
        "the README shows the configuration tested here"
    );
    let _global = GlobalLock::take();
    let t = Topology::with_outside("ctd");
    let mut placed = Placed::default();
    placed.file(&PathBuf::from("/opt/cni/bin/netpath"), &std::fs::read(netpath_bin()).unwrap(), true);
    // containerd's CNI library reads the first configuration of the directory, by name.
    placed.file(&PathBuf::from("/etc/cni/net.d/00-netpath.conflist"), CONFLIST.as_bytes(), false);
    // Shims keep their sockets under /run/containerd/s whatever --state says.
    // (Another engine may be using /run/containerd: only this namespace's part is ours.)
    placed.shared(&PathBuf::from("/run/containerd"), &[&format!("runc/{NAMESPACE}")], &["s", "fifo", "runc"]);
    // libcni caches each result, and drops it only at DEL.
    let cached: Vec<String> =
        ["c1", "c2", "c3"].iter().map(|c| format!("results/netpath-{NAMESPACE}-{c}-eth0")).collect();
    placed.will_create(&PathBuf::from("/var/lib/cni"), &cached.iter().map(String::as_str).collect::<Vec<_>>());
    // Its resolver answering, the daemon makes the gateway the result's nameserver.
    let _daemon = Daemon::start_with(&t, &t.run_dir.join("plugin.sock"), &["--dns-upstream", OUTSIDE_ADDR]);
    let mut ctd = Containerd::start(&t);
    ctd.ctr_ok(&["image", "import", image_tar(&t.run_dir, "nptest").to_str().unwrap()]);

    // Two detached containers on the conflist's network talk to each other and out.
    ctd.run_detached("c1");
    ctd.run_detached("c2");
    let cache = std::fs::read_to_string(PathBuf::from("/var/lib/cni").join(&cached[0])).unwrap();
    let cache: Value = serde_json::from_str(&cache).unwrap();
    assert_eq!(cache["result"]["dns"]["nameservers"], serde_json::json!(["10.77.0.1"]), "containerd's result: {cache}");
    let id = |c: &str| format!("{NAMESPACE}-{c}-eth0");
    let (c1_ip, c2_ip) = (ip_of(&t, &id("c1")), ip_of(&t, &id("c2")));
    assert!(c1_ip.starts_with("10.77.0."), "the conflist's subnet: {c1_ip}");
    let (p1, p2) = (ctd.pid("c1"), ctd.pid("c2"));
    assert!(ping_from(p1, &c2_ip), "c1 cannot reach c2");
    assert!(ping_from(p2, &c1_ip), "c2 cannot reach c1");
    assert!(ping_from(p1, OUTSIDE_ADDR), "c1 cannot reach the outside");

    // `ctr run --rm --cni`: ADD before the task starts (it sees its address), DEL after.
    let out = ctd.ctr_ok(&[
        "run",
        "--rm",
        "--cni",
        "--mount",
        "type=bind,src=/usr,dst=/usr,options=rbind:ro",
        IMAGE,
        "c3",
        "/usr/sbin/ip",
        "-4",
        "-o",
        "addr",
        "show",
        "eth0",
    ]);
    assert!(out.contains("inet 10.77.0."), "c3 had no address: {out}");
    assert!(!endpoint_ids(&t).contains(&id("c3")), "c3 was not released at exit");

    // Killed and removed without a DEL (the reference plugins leak the address here):
    // netpath's gc finds its namespace gone and releases it.
    ctd.kill_and_remove("c2");
    assert!(endpoint_ids(&t).contains(&id("c2")), "ctr made a DEL after all; the gc below proves nothing");
    let gc: Value = t.np_json(&["gc"]);
    assert!(gc.to_string().contains(&id("c2")), "gc did not report c2: {gc}");
    assert_eq!(endpoint_ids(&t), vec![id("c1")]);
    assert!(ping_from(p1, OUTSIDE_ADDR), "c1 unaffected");

    ctd.kill_and_remove("c1");
    ctd.containers.clear();
    drop(ctd);
    drop(placed);
    t.teardown();
}
