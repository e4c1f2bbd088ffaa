//! Datapath 3: Docker's own, set up by a real Docker engine (Debian's docker.io) running in
//! the topology's host namespace: its default bridge, its iptables rules (MASQUERADE, DNAT
//! chains), its docker-proxy for 127.0.0.1, all as `docker run -p` makes them.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{Datapath, PortTable, Resolver, Routes};
use crate::bench::{
    Ctx,
    dns::Lookup,
    leftovers,
    netns::Netns,
    process::{Daemon, SETUP_LIMIT, check_interrupt, feed_within, output_within, stdout_within},
    topology::{CONNRATE_PORT, IPERF_PORT, PUBLISHED_CONNRATE, PUBLISHED_IPERF, Topology},
};

const IMAGE: &str = "npbench/busybox";
/// Container names; Docker's own state lives under the run directory, so they cannot clash.
const CONTAINERS: [&str; 2] = ["c1", "c2"];
const FILLER: &str = "filler";
/// The dns scenario's user-defined network (the default bridge has no embedded resolver) and
/// its containers: the first asks for the second's name.
const DNS_NETWORK: &str = "npbench-dns";
const NAMED: [&str; 2] = ["web", "db"];
/// The address every container of a user-defined network asks, which dockerd's embedded
/// resolver answers from inside the container's namespace (an iptables redirect there).
const EMBEDDED_DNS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
/// Host ports of the sweep's filler rules: clear of the measured ones and of the ephemeral range.
const FILLER_BASE_PORT: u32 = 10000;
/// The cgroup under which dockerd puts containers (cgroupfs driver), removed afterwards.
const CGROUP_PARENT: &str = "npbench-docker";
/// Paths dockerd 20.10 and its containerd write outside --data-root/--exec-root, whatever
/// their flags: the trust key, the plugin socket directory, the shims' socket directory.
const STRAY_PATHS: [&str; 4] = ["/etc/docker/key.json", "/etc/docker", "/run/docker", "/run/containerd"];

#[derive(Default)]
pub struct Docker {
    topo: Option<Topology>,
    dockerd: Option<(Daemon, PathBuf)>,
    /// dockerd's directory: config, data root, exec root, socket.
    engine: PathBuf,
    routes: Routes,
    /// The stray paths that did not exist before dockerd started, to remove after it.
    strays: Vec<PathBuf>,
    /// The nat and filter tables before the sweep's filler rules, the container the filler
    /// rules point to, and how many there are.
    saved_rules: Option<String>,
    filler_ip: Option<Ipv4Addr>,
    fillers: u32,
}

impl Datapath for Docker {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn description(&self) -> String {
        "Docker engine (dockerd, docker.io package) in the host namespace: default bridge docker0, iptables-nft rules, docker-proxy, `docker run -p`; for dns, a user-defined network and dockerd's embedded resolver (127.0.0.11)".into()
    }

    fn up(&mut self, ctx: &Ctx) -> Result<()> {
        let topo = Topology::new(ctx, "docker")?;
        let host = topo.host.clone();
        let dir = topo.dir(ctx, "engine")?;
        self.topo = Some(topo);
        self.engine = dir.clone();
        self.strays = STRAY_PATHS.iter().map(PathBuf::from).filter(|p| !p.exists()).collect();
        let config = dir.join("daemon.json");
        std::fs::write(&config, "{}\n")?;
        let mut args: Vec<String> = vec!["--config-file".into(), config.display().to_string()];
        for (flag, path) in [("--data-root", "data"), ("--exec-root", "exec"), ("--pidfile", "dockerd.pid")] {
            args.extend([flag.to_string(), dir.join(path).display().to_string()]);
        }
        args.extend(["-H".into(), self.host_arg(), "--cgroup-parent".into(), CGROUP_PARENT.into()]);
        let log = ctx.log("docker-dockerd");
        let mut cmd = host.cmd(ctx.peers.file("usr/sbin/dockerd"), &args);
        let mut daemon = Daemon::spawn("dockerd", ctx.peers.env(&mut cmd), &log)?;
        let ready = wait_for_engine(ctx, &self.host_arg(), &mut daemon, &log);
        self.dockerd = Some((daemon, log));
        ready?;

        let rootfs = busybox_rootfs(ctx, &dir)?;
        let import = format!(
            "tar -C {} -c . | {} -H {} import - {IMAGE}",
            rootfs.display(),
            docker_bin(ctx).display(),
            self.host_arg()
        );
        output_within(Command::new("sh").args(["-c", &import]), SETUP_LIMIT)
            .context("docker import of the busybox rootfs")?;
        let c1 = self.run_container(ctx, CONTAINERS[0], None, &[])?;
        // iperf3's UDP test sends its datagrams to the port of its TCP control connection.
        let published = [
            format!("{PUBLISHED_IPERF}:{IPERF_PORT}"),
            format!("{PUBLISHED_IPERF}:{IPERF_PORT}/udp"),
            format!("{PUBLISHED_CONNRATE}:{CONNRATE_PORT}"),
        ];
        let c2 = self.run_container(ctx, CONTAINERS[1], None, &published)?;
        let topo = self.topo.as_mut().expect("set above");
        topo.serve(ctx, &c2.0, "c2")?;
        self.routes = Routes::translated(&topo.host, &topo.outside, &c1.0, c2.1);
        Ok(())
    }

    fn routes(&self) -> &Routes {
        &self.routes
    }

    fn down(&mut self, ctx: &Ctx) {
        if let Some(topo) = &mut self.topo {
            // The servers run inside the containers' namespaces: stop them before the containers.
            topo.stop_servers();
        }
        if self.dockerd.is_some() {
            let names: Vec<&str> = CONTAINERS.iter().copied().chain([FILLER]).collect();
            let _ = output_within(self.docker(ctx).args(["rm", "-f"]).args(&names), SETUP_LIMIT);
            self.stop(ctx);
        }
        self.dockerd = None;
        // The shims and containerd outlive dockerd by a moment; their socket directories with them.
        if !self.engine.as_os_str().is_empty() {
            leftovers::wait_for_exit(&self.engine, Duration::from_secs(10));
        }
        for stray in &self.strays {
            remove_stray(stray);
        }
        for controller in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            let _ = std::fs::remove_dir(controller.path().join(CGROUP_PARENT));
        }
        self.topo = None;
        self.engine = PathBuf::new();
        self.routes = Routes::default();
        self.saved_rules = None;
        self.filler_ip = None;
        self.fillers = 0;
    }

    fn port_table(&mut self) -> Option<&mut dyn PortTable> {
        Some(self)
    }

    fn resolver(&mut self) -> Option<&mut dyn Resolver> {
        if self.dockerd.is_some() { Some(self) } else { None }
    }
}

impl Resolver for Docker {
    /// A user-defined network and two containers on it, as `docker network create` and
    /// `docker run --network` make them.
    fn start(&mut self, ctx: &Ctx) -> Result<Lookup> {
        output_within(self.docker(ctx).args(["network", "create", DNS_NETWORK]), SETUP_LIMIT)
            .with_context(|| format!("docker network create {DNS_NETWORK}"))?;
        let (client, _) = self.run_container(ctx, NAMED[0], Some(DNS_NETWORK), &[])?;
        let (_, expected) = self.run_container(ctx, NAMED[1], Some(DNS_NETWORK), &[])?;
        Ok(Lookup { client, server: EMBEDDED_DNS, name: NAMED[1].into(), expected })
    }

    fn stop(&mut self, ctx: &Ctx) {
        let _ = output_within(self.docker(ctx).args(["rm", "-f"]).args(NAMED), SETUP_LIMIT);
        let _ = output_within(self.docker(ctx).args(["network", "rm", DNS_NETWORK]), SETUP_LIMIT);
    }
}

impl Docker {
    /// `-H`'s value: dockerd's socket in the engine directory.
    fn host_arg(&self) -> String {
        format!("unix://{}", self.engine.join("docker.sock").display())
    }

    fn docker(&self, ctx: &Ctx) -> Command {
        let mut cmd = Command::new(docker_bin(ctx));
        cmd.arg("-H").arg(self.host_arg());
        cmd
    }

    /// `docker run -d` a sleeping busybox, as a user would, on `network` (the default bridge
    /// when `None`), and returns its namespace (the SandboxKey, under the exec root) and
    /// address.
    fn run_container(
        &self,
        ctx: &Ctx,
        name: &str,
        network: Option<&str>,
        publish: &[String],
    ) -> Result<(Netns, Ipv4Addr)> {
        let mut cmd = self.docker(ctx);
        cmd.args(["run", "-d", "--name", name]);
        if let Some(network) = network {
            cmd.args(["--network", network]);
        }
        for p in publish {
            cmd.args(["-p", p]);
        }
        output_within(cmd.args([IMAGE, "sleep", "2000000000"]), SETUP_LIMIT)
            .with_context(|| format!("docker run {name}"))?;
        let inspect = stdout_within(
            self.docker(ctx).args([
                "inspect",
                "-f",
                // The address on its one network, whichever: IPAddress is the default bridge's only.
                "{{.NetworkSettings.SandboxKey}} {{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                name,
            ]),
            SETUP_LIMIT,
        )?;
        let (key, ip) =
            inspect.trim().split_once(' ').with_context(|| format!("docker inspect {name}: {inspect:?}"))?;
        Ok((Netns::existing(key), ip.parse().with_context(|| format!("address of {name}: {ip:?}"))?))
    }

    /// Runs one of the prefix's iptables tools in the host namespace, `input` on its stdin.
    fn iptables(&self, ctx: &Ctx, program: &str, args: &[&str], input: &str) -> Result<String> {
        let host = &self.topo.as_ref().context("docker is not up")?.host;
        let mut cmd = host.cmd(ctx.peers.file(&format!("usr/sbin/{program}")), args);
        let out = feed_within(ctx.peers.env(&mut cmd), SETUP_LIMIT, input.as_bytes())?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl PortTable for Docker {
    /// Adds the rules `docker run -p` would add for each filler port, in Docker's own format
    /// and chains, ahead of the measured container's (as if it had been started last, since
    /// Docker appends). They are loaded with one iptables-restore: Docker adds them with a
    /// few iptables calls per port, which would take many minutes for 10,000 ports.
    fn publish_fillers(&mut self, ctx: &Ctx, fillers: u32) -> Result<()> {
        if self.saved_rules.is_none() {
            let nat = self.iptables(ctx, "iptables-save", &["-t", "nat"], "")?;
            self.saved_rules = Some(nat + &self.iptables(ctx, "iptables-save", &["-t", "filter"], "")?);
        }
        let filler_ip = match self.filler_ip {
            Some(ip) => ip,
            None => *self.filler_ip.insert(self.run_container(ctx, FILLER, None, &[])?.1),
        };
        let ports = (FILLER_BASE_PORT + self.fillers)..(FILLER_BASE_PORT + fillers);
        let (mut nat, mut filter) = (String::from("*nat\n"), String::from("*filter\n"));
        for port in ports {
            nat += &format!(
                "-I DOCKER 2 ! -i docker0 -p tcp -m tcp --dport {port} -j DNAT --to-destination {filler_ip}:{port}\n"
            );
            nat += &format!(
                "-I POSTROUTING 2 -s {filler_ip}/32 -d {filler_ip}/32 -p tcp -m tcp --dport {port} -j MASQUERADE\n"
            );
            filter += &format!(
                "-I DOCKER 1 -d {filler_ip}/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport {port} -j ACCEPT\n"
            );
        }
        self.iptables(ctx, "iptables-restore", &["--noflush"], &format!("{nat}COMMIT\n{filter}COMMIT\n"))?;
        self.fillers = fillers;
        Ok(())
    }

    fn remove_fillers(&mut self, ctx: &Ctx) -> Result<()> {
        if let Some(saved) = self.saved_rules.take() {
            self.iptables(ctx, "iptables-restore", &[], &saved)?;
        }
        self.fillers = 0;
        Ok(())
    }
}

fn docker_bin(ctx: &Ctx) -> PathBuf {
    ctx.peers.file("usr/bin/docker")
}

/// Waits until dockerd answers on `host` (a `-H` value), or fails with the end of its log.
fn wait_for_engine(ctx: &Ctx, host: &str, daemon: &mut Daemon, log: &Path) -> Result<()> {
    let deadline = Instant::now() + SETUP_LIMIT;
    while Instant::now() < deadline {
        check_interrupt()?;
        daemon.check_alive(log)?;
        let mut version = Command::new(docker_bin(ctx));
        version.args(["-H", host, "version", "-f", "{{.Server.Version}}"]);
        if output_within(&mut version, Duration::from_secs(5)).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(200));
    }
    bail!("dockerd did not answer on {host} within {}s; see {}", SETUP_LIMIT.as_secs(), log.display())
}

/// A root filesystem of busybox-static alone: enough for `sleep`, imported offline.
fn busybox_rootfs(ctx: &Ctx, dir: &Path) -> Result<PathBuf> {
    let rootfs = dir.join("rootfs");
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::copy(ctx.peers.file("bin/busybox"), bin.join("busybox")).context("copying busybox from busybox-static")?;
    for applet in ["sh", "sleep"] {
        let _ = std::fs::remove_file(bin.join(applet));
        std::os::unix::fs::symlink("busybox", bin.join(applet))?;
    }
    Ok(rootfs)
}

/// Removes a file dockerd left, or a directory tree it left if nothing but empty directories
/// remain in it: anything else there is someone else's.
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
