//! OCI hooks with a real runtime: runc runs containers whose config.json carries netpath's
//! hooks (contrib/oci/runc-hooks.json, the snippet the README shows), and the hooks alone
//! wire and release them. runc keeps its state under the test's run directory; the
//! containers see the host's /usr read-only, so no image is needed.
use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use netpath_tests::{OUTSIDE_ADDR, Topology, netpath_bin};
use serde_json::{Value, json};

const HOOKS: &str = include_str!("../../contrib/oci/runc-hooks.json");

/// runc with its state under the topology's run directory; deletes what it ran on drop.
struct Runc<'a> {
    t: &'a Topology,
    root: PathBuf,
    containers: Vec<String>,
}

impl<'a> Runc<'a> {
    fn new(t: &'a Topology) -> Self {
        Self { t, root: t.run_dir.join("runc"), containers: Vec::new() }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("runc");
        cmd.arg("--root").arg(&self.root).args(args).stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().expect("runc");
        assert!(out.status.success(), "runc {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// A bundle whose config is `runc spec`'s, running `sleep`, with netpath's hooks for
    /// `network`, bound to the topology through netpath's environment variables.
    fn bundle(&self, name: &str, network: &str) -> PathBuf {
        let bundle = self.t.run_dir.join(format!("bundle-{name}"));
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(rootfs.join("usr")).unwrap();
        for (link, target) in [("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"), ("sbin", "usr/sbin")] {
            std::os::unix::fs::symlink(target, rootfs.join(link)).unwrap();
        }
        netpath_tests::run(Command::new("runc").args(["spec", "--bundle"]).arg(&bundle));
        let path = bundle.join("config.json");
        let mut config: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        config["process"]["terminal"] = json!(false);
        config["process"]["args"] = json!(["/usr/bin/sleep", "600"]);
        config["root"] = json!({ "path": "rootfs", "readonly": false });
        config["hostname"] = json!(name);
        config["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]
        }));
        config["hooks"] = self.hooks(network);
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        bundle
    }

    /// The README's hooks with this build's binary, the test's network and its paths.
    fn hooks(&self, network: &str) -> Value {
        let mut hooks: Value = serde_json::from_str(HOOKS).unwrap();
        let env = [
            format!("NETPATH_STATE_DIR={}", self.t.state_dir().display()),
            format!("NETPATH_BPFFS={}", self.t.pin_root().display()),
            format!("NETPATH_HOST_NETNS={}", self.t.ns_path("host")),
        ];
        for stage in ["createRuntime", "poststop"] {
            for hook in hooks[stage].as_array_mut().unwrap() {
                hook["path"] = json!(netpath_bin());
                hook["env"] = json!(env);
                for arg in hook["args"].as_array_mut().unwrap() {
                    if arg == "web" {
                        *arg = json!(network);
                    }
                }
            }
        }
        hooks
    }

    fn start(&mut self, name: &str, bundle: &Path) -> String {
        let id = format!("{}-{name}", self.t.prefix);
        // The detached container inherits runc's stdio: a pipe would stay open as long as it
        // runs, so its errors go to a file.
        let log = self.t.run_dir.join(format!("runc-{name}.log"));
        let status = self
            .cmd(&["run", "-d", "--bundle", bundle.to_str().unwrap(), &id])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .status()
            .expect("runc run");
        self.containers.push(id.clone());
        assert!(status.success(), "runc run {id}: {}", std::fs::read_to_string(&log).unwrap_or_default());
        id
    }

    fn pid(&self, id: &str) -> u32 {
        let state: Value = serde_json::from_str(&self.run(&["state", id])).unwrap();
        state["pid"].as_u64().unwrap() as u32
    }

    /// Stops the container and waits until runc sees it stopped.
    fn kill(&self, id: &str) {
        self.run(&["kill", id, "KILL"]);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let state: Value = serde_json::from_str(&self.run(&["state", id])).unwrap();
            if state["status"] == "stopped" {
                return;
            }
            assert!(Instant::now() < deadline, "{id} does not stop: {state}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Runc<'_> {
    fn drop(&mut self) {
        for id in &self.containers {
            let _ = self.cmd(&["delete", "--force", id]).output();
        }
    }
}

/// Runs a command in the network namespace of process `pid`.
fn in_pid_netns(pid: u32, cmd: &[&str]) -> std::process::Output {
    Command::new("nsenter").arg(format!("--net=/proc/{pid}/ns/net")).args(cmd).output().unwrap()
}

#[test]
fn runc_containers_are_wired_by_the_hooks_and_released_at_delete() {
    assert!(include_str!("../../README.md").contains(HOOKS.trim()), "the README shows the configuration tested here");
    let t = Topology::with_outside("oci");
    t.network("web", &["--subnet", "10.87.0.0/24"]);
    let mut runc = Runc::new(&t);
    let a = runc.start("a", &runc.bundle("a", "web"));
    let b = runc.start("b", &runc.bundle("b", "web"));

    // The attach hook gave each container eth0 with an address, under its container id.
    let endpoints = t.np_json(&["endpoint", "ls"]);
    let ip_of = |id: &str| {
        let ep = endpoints.as_array().unwrap().iter().find(|e| e["id"] == id);
        ep.unwrap_or_else(|| panic!("no endpoint {id}: {endpoints}"))["ip"].as_str().unwrap().to_string()
    };
    let (a_ip, b_ip) = (ip_of(&a), ip_of(&b));
    let (a_pid, b_pid) = (runc.pid(&a), runc.pid(&b));
    let addr = in_pid_netns(a_pid, &["ip", "-4", "-o", "addr", "show", "eth0"]);
    assert!(String::from_utf8_lossy(&addr.stdout).contains(&format!("{a_ip}/24")), "{addr:?}");
    let ping = |pid: u32, to: &str| in_pid_netns(pid, &["ping", "-c", "1", "-w", "5", to]).status.success();
    assert!(ping(a_pid, &b_ip), "a cannot reach b");
    assert!(ping(b_pid, &a_ip), "b cannot reach a");
    assert!(ping(a_pid, OUTSIDE_ADDR), "a cannot reach the outside");

    // runc delete runs the poststop hook: a's endpoint is released, b's stays.
    runc.kill(&a);
    runc.run(&["delete", &a]);
    let ids: Vec<String> =
        t.np_json(&["endpoint", "ls"]).as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().into()).collect();
    assert_eq!(ids, vec![b.clone()], "only b is attached after a's delete");
    runc.run(&["delete", "--force", &b]);
    assert!(t.np_json(&["endpoint", "ls"]).as_array().unwrap().is_empty(), "b released at delete --force");
    drop(runc);
    t.teardown();
}

/// Runs `netpath oci-hook ARGS` with `state` on stdin; returns (exit code, stderr).
fn hook(t: &Topology, args: &[&str], state: &str) -> (i32, String) {
    let mut child = t
        .netpath_cmd(&[&["oci-hook"], args].concat())
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(state.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).trim().to_string())
}

#[test]
fn hooks_read_only_id_and_pid_and_detach_is_idempotent() {
    let mut t = Topology::new("ohk");
    t.network("web", &["--subnet", "10.86.0.0/24"]);
    let ns = t.netns("c");
    // A process in namespace c stands in for a container's init.
    let mut sleeper =
        Command::new("ip").args(["netns", "exec", &format!("{}-c", t.prefix), "sleep", "60"]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let pid = loop {
        let out = Command::new("ip").args(["netns", "pids", &format!("{}-c", t.prefix)]).output().unwrap();
        if let Some(pid) = String::from_utf8_lossy(&out.stdout).split_whitespace().next() {
            break pid.to_string();
        }
        assert!(Instant::now() < deadline, "no process in {ns}");
        std::thread::sleep(Duration::from_millis(20));
    };
    // `status` is whatever the runtime says (runc and crun differ): not read.
    let state = format!(r#"{{"ociVersion":"1.0.2","id":"ctr1","status":"anything","pid":{pid},"bundle":"/nowhere"}}"#);
    assert_eq!(hook(&t, &["attach", "--network", "web", "-p", "8081:80"], &state).0, 0);
    assert!(t.exec("c", &["ip", "-4", "addr", "show", "eth0"]).contains("10.86.0.2/24"));
    assert_eq!(t.np_json(&["port", "ls"]).as_array().unwrap().len(), 1);
    // poststop may come twice, or for a container that never got attached.
    for _ in 0..2 {
        assert_eq!(hook(&t, &["detach"], r#"{"id":"ctr1","pid":0}"#), (0, String::new()));
    }
    assert_eq!(hook(&t, &["detach"], r#"{"id":"never-attached"}"#).0, 0);
    assert!(t.np_json(&["endpoint", "ls"]).as_array().unwrap().is_empty());

    // A state without a pid, or not a state at all: one line saying what is wrong.
    let (code, err) = hook(&t, &["attach", "--network", "web"], r#"{"id":"ctr2","pid":0}"#);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("createRuntime or prestart") && err.lines().count() == 1, "{err}");
    let (code, err) = hook(&t, &["attach", "--network", "web"], "not json");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("OCI container state"), "{err}");
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    t.teardown();
}
