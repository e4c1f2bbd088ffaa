//! `cargo xtask demo`: a network in throwaway namespaces — two containers talking through the
//! eBPF datapath, egress masqueraded to an "outside" namespace, a published port reached from
//! the outside and from the host — with the counters and tables that show it, then a clean
//! slate.
use std::{
    fs::File,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::sh::{self, step, workspace_root};

const HOST: &str = "np-demo-host";
const OUTSIDE: &str = "np-demo-outside";
const CONTAINERS: [&str; 2] = ["np-demo-c1", "np-demo-c2"];
const RUN_DIR: &str = "/run/netpath-demo";
/// The host's uplink to the outside namespace, and the addresses on either end.
const UPLINK: &str = "uplink0";
const UPLINK_ADDR: &str = "10.99.0.1";
const OUTSIDE_ADDR: &str = "10.99.0.2";

struct Demo {
    netpath: PathBuf,
    run_dir: PathBuf,
}

pub fn run() -> Result<()> {
    let demo = Demo { netpath: workspace_root().join("target/debug/netpath"), run_dir: PathBuf::from(RUN_DIR) };
    demo.cleanup();
    let result = demo.show();
    step("cleaning up");
    demo.cleanup();
    result
}

fn namespaces() -> impl Iterator<Item = &'static str> {
    [HOST, OUTSIDE].into_iter().chain(CONTAINERS)
}

fn ip(args: &[&str]) -> Result<()> {
    sh::run(Command::new("ip").args(args))
}

fn exec(ns: &str, args: &[&str]) -> Result<()> {
    sh::run(Command::new("ip").args(["netns", "exec", ns]).args(args))
}

impl Demo {
    fn netpath(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.netpath);
        cmd.arg("--state-dir")
            .arg(self.run_dir.join("state"))
            .arg("--bpffs")
            .arg(self.run_dir.join("bpffs/netpath"))
            .arg("--host-netns")
            .arg(netns_path(HOST))
            .args(args);
        cmd
    }

    fn show_netpath(&self, args: &[&str]) -> Result<()> {
        step(&format!("netpath {}", args.join(" ")));
        sh::run(&mut self.netpath(args))
    }

    fn show(&self) -> Result<()> {
        step("creating namespaces: a host, the outside it reaches over an uplink, two containers");
        for ns in namespaces() {
            ip(&["netns", "add", ns])?;
            exec(ns, &["ip", "link", "set", "lo", "up"])?;
        }
        ip(&["link", "add", UPLINK, "netns", HOST, "type", "veth", "peer", "name", "eth0", "netns", OUTSIDE])?;
        exec(HOST, &["ip", "addr", "add", &format!("{UPLINK_ADDR}/24"), "dev", UPLINK])?;
        exec(HOST, &["ip", "link", "set", UPLINK, "up"])?;
        exec(HOST, &["ip", "route", "add", "default", "via", OUTSIDE_ADDR])?;
        exec(OUTSIDE, &["ip", "addr", "add", &format!("{OUTSIDE_ADDR}/24"), "dev", "eth0"])?;
        exec(OUTSIDE, &["ip", "link", "set", "eth0", "up"])?;

        self.show_netpath(&["network", "create", "demo"])?;
        let mut ips = Vec::new();
        for (i, ns) in CONTAINERS.iter().enumerate() {
            let id = format!("c{}", i + 1);
            let path = netns_path(ns).to_string_lossy().into_owned();
            let mut args = vec!["attach", "--network", "demo", "--netns", &path, "--id", &id];
            if i == 1 {
                args.extend(["-p", "8080:80"]);
            }
            step(&format!("netpath {}", args.join(" ")));
            args.extend(["--format", "json"]);
            let json = sh::output(&mut self.netpath(&args))?;
            print!("{json}");
            let endpoint: serde_json::Value = serde_json::from_str(&json).context("netpath's JSON")?;
            ips.push(endpoint["ip"].as_str().context("no ip in the endpoint")?.to_string());
        }

        step(&format!("c1 pings c2 ({}): forwarded veth to veth by from_container", ips[1]));
        exec(CONTAINERS[0], &["ping", "-c", "3", "-i", "0.2", &ips[1]])?;
        step(&format!("c2 pings c1 ({})", ips[0]));
        exec(CONTAINERS[1], &["ping", "-c", "3", "-i", "0.2", &ips[0]])?;
        step(&format!("c1 pings the outside ({OUTSIDE_ADDR}): masqueraded to {UPLINK_ADDR} by eBPF, no iptables"));
        exec(CONTAINERS[0], &["ping", "-c", "3", "-i", "0.2", OUTSIDE_ADDR])?;
        self.show_netpath(&["conntrack", "ls"])?;

        step("c2 serves port 80, published as 8080 on the host");
        let server = serve(&netns_path(CONTAINERS[1]), 2)?;
        for (from, to) in [(OUTSIDE, format!("{UPLINK_ADDR}:8080")), (HOST, "127.0.0.1:8080".to_string())] {
            let reply = request(&netns_path(from), &to, &format!("hello from {from}"))?;
            println!("{from} -> {to}: {reply}");
        }
        server.join().map_err(|_| anyhow::anyhow!("the demo server panicked"))??;

        self.show_netpath(&["port", "ls"])?;
        self.show_netpath(&["network", "inspect", "demo"])?;
        step("netpath stats: the eBPF datapath carried all of it");
        sh::run(&mut self.netpath(&["stats"]))?;
        Ok(())
    }

    /// Removes everything the demo may have made; quiet about what is not there.
    fn cleanup(&self) {
        if self.run_dir.join("state").exists() && netns_path(HOST).exists() {
            let _ = sh::succeeds(&mut self.netpath(&["network", "rm", "demo", "--force"]));
        }
        for ns in namespaces() {
            if netns_path(ns).exists() {
                let _ = sh::succeeds(Command::new("ip").args(["netns", "del", ns]));
            }
        }
        // netpath mounts bpffs on the pin root itself; an older build mounted its parent.
        for bpffs in [self.run_dir.join("bpffs/netpath"), self.run_dir.join("bpffs")] {
            if bpffs.exists() {
                let _ = sh::succeeds(Command::new("umount").arg(&bpffs));
            }
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Runs `f` on a thread inside the namespace at `path`; sockets it opens stay there.
fn in_netns<T: Send + 'static>(path: &Path, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let ns = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    std::thread::spawn(move || {
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("cannot enter the network namespace: {}", std::io::Error::last_os_error());
        }
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
}

/// A tiny server on port 80 that answers `requests` connections with what it was sent.
fn serve(ns: &Path, requests: usize) -> Result<std::thread::JoinHandle<Result<()>>> {
    let listener = in_netns(ns, || TcpListener::bind("0.0.0.0:80").context("cannot listen on port 80"))?;
    Ok(std::thread::spawn(move || {
        for _ in 0..requests {
            let (mut conn, peer) = listener.accept()?;
            let mut buf = [0u8; 128];
            let n = conn.read(&mut buf)?;
            write!(conn, "c2 answered '{}' (connection from {peer})", String::from_utf8_lossy(&buf[..n]))?;
        }
        Ok(())
    }))
}

fn request(ns: &Path, to: &str, msg: &str) -> Result<String> {
    let to = to.parse()?;
    let msg = msg.to_string();
    in_netns(ns, move || {
        let mut conn =
            TcpStream::connect_timeout(&to, Duration::from_secs(5)).with_context(|| format!("cannot reach {to}"))?;
        conn.write_all(msg.as_bytes())?;
        let mut reply = String::new();
        conn.read_to_string(&mut reply)?;
        Ok(reply)
    })
}
