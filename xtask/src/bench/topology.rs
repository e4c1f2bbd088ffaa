//! The topology every datapath is measured in: a "host" namespace (where the datapath lives),
//! an "outside" namespace joined to it by an uplink veth (the host's default route points
//! there), container namespaces, and the servers the load generators talk to.
use std::{net::Ipv4Addr, path::PathBuf, thread, time::Duration};

use anyhow::{Context, Result, bail};

use super::{
    Ctx,
    netns::Netns,
    process::{Daemon, check_interrupt},
    traffic::LATENCY_CPU,
};

/// RFC 2544's benchmarking range: on the uplink only, between the bench's own namespaces.
pub const HOST_UPLINK_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const UPLINK_PREFIX: u8 = 24;
/// The uplink's name in the host namespace (netpath finds it as the default route's device).
pub const UPLINK: &str = "uplink0";

/// Where the servers listen, in every server namespace.
pub const IPERF_PORT: u16 = 5201;
pub const CONNRATE_PORT: u16 = 8000;
pub const SOCKPERF_PORT: u16 = 11111;
/// Host ports published to the server container's iperf3 and np-connrate.
pub const PUBLISHED_IPERF: u16 = 8080;
pub const PUBLISHED_CONNRATE: u16 = 8081;

pub struct Topology {
    /// The datapath's name; prefixes its namespaces and names its directory.
    label: String,
    pub host: Netns,
    pub outside: Netns,
    /// Namespaces the bench created, deleted in reverse order.
    namespaces: Vec<Netns>,
    servers: Vec<(Daemon, PathBuf)>,
}

/// The outside sends as a NIC delivers, whole checksums and no TSO (turning tx checksumming
/// off turns TSO off too), for every datapath alike: XDP rewrites checksums by hand and needs
/// whole ones, and the TC paths and the references are measured on the same frames.
pub fn send_as_a_wire(ns: &Netns, ifname: &str) -> Result<()> {
    ns.run(&["ethtool", "-K", ifname, "tx", "off"])
        .with_context(|| format!("turning off tx checksumming on {ifname}"))?;
    Ok(())
}

impl Topology {
    /// Host and outside namespaces joined by the uplink, the host's default route through it,
    /// and servers in the outside namespace for egress scenarios.
    pub fn new(ctx: &Ctx, label: &str) -> Result<Self> {
        let host = Netns::create(&format!("{label}-host"))?;
        let outside = Netns::create(&format!("{label}-outside")).inspect_err(|_| host.delete())?;
        let namespaces = vec![host.clone(), outside.clone()];
        let mut topo = Self { label: label.to_string(), host, outside, namespaces, servers: Vec::new() };
        topo.host.veth(UPLINK, &topo.outside, "eth0")?;
        topo.host.address(UPLINK, &format!("{HOST_UPLINK_IP}/{UPLINK_PREFIX}"))?;
        topo.outside.address("eth0", &format!("{OUTSIDE_IP}/{UPLINK_PREFIX}"))?;
        send_as_a_wire(&topo.outside, "eth0")?;
        topo.host.run(&["ip", "route", "add", "default", "via", &OUTSIDE_IP.to_string()])?;
        let outside = topo.outside.clone();
        topo.serve(ctx, &outside, "outside")?;
        Ok(topo)
    }

    /// A container namespace of this topology, `npbench-<label>-<role>`.
    pub fn container(&mut self, role: &str) -> Result<Netns> {
        let ns = Netns::create(&format!("{}-{role}", self.label))?;
        self.namespaces.push(ns.clone());
        Ok(ns)
    }

    /// A directory of this datapath's own under the run directory.
    pub fn dir(&self, ctx: &Ctx, name: &str) -> Result<PathBuf> {
        let dir = ctx.run_dir.join(&self.label).join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    /// Starts iperf3, np-connrate and sockperf servers in `ns` and waits until they listen.
    pub fn serve(&mut self, ctx: &Ctx, ns: &Netns, role: &str) -> Result<()> {
        let iperf = IPERF_PORT.to_string();
        let connrate = CONNRATE_PORT.to_string();
        let sockperf = SOCKPERF_PORT.to_string();
        let servers: [(&str, Vec<&str>); 3] = [
            ("iperf3", vec!["iperf3", "-s", "-p", &iperf]),
            ("np-connrate", vec![ctx.connrate.to_str().unwrap_or_default(), "server", "--port", &connrate]),
            ("sockperf", vec!["taskset", "-c", LATENCY_CPU, "sockperf", "server", "-p", &sockperf]),
        ];
        for (name, args) in servers {
            let log = ctx.log(&format!("{}-{role}-{name}", self.label));
            let daemon =
                Daemon::spawn(&format!("{name} in {}", ns.path().display()), &mut ns.cmd(args[0], &args[1..]), &log)?;
            self.servers.push((daemon, log));
        }
        wait_listening(ns, "tcp", IPERF_PORT)?;
        wait_listening(ns, "tcp", CONNRATE_PORT)?;
        wait_listening(ns, "udp", SOCKPERF_PORT)?;
        for (daemon, log) in &mut self.servers {
            daemon.check_alive(log)?;
        }
        Ok(())
    }

    /// Stops the servers (before their namespaces' owner removes them).
    pub fn stop_servers(&mut self) {
        self.servers.clear();
    }

    /// Stops the servers and deletes the namespaces; safe to call twice.
    pub fn teardown(&mut self) {
        self.stop_servers();
        for ns in self.namespaces.drain(..).rev() {
            ns.delete();
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Waits until something in `ns` has a `proto` socket bound to `port` (and, for TCP,
/// listening), read from the namespace's own /proc/net tables (v4 and v6: iperf3 listens on
/// a dual-stack socket).
pub fn wait_listening(ns: &Netns, proto: &str, port: u16) -> Result<()> {
    let suffix = format!(":{port:04X}");
    for _ in 0..100 {
        check_interrupt()?;
        let tables = ns.run(&["cat", &format!("/proc/net/{proto}"), &format!("/proc/net/{proto}6")])?;
        // Columns: slot, local address:port (hex), remote, state (0A is TCP's LISTEN).
        let bound = tables.lines().any(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            cols.len() > 3 && cols[1].ends_with(&suffix) && (proto != "tcp" || cols[3] == "0A")
        });
        if bound {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on {proto} port {port} in {} after 5s", ns.path().display())
}
