//! Datapath 4: Podman's network stack. netavark (Debian's, as `podman` pulls it in) is driven
//! the way Podman drives it: `netavark --config DIR setup|teardown NETNS` with the network
//! options JSON on stdin, addresses chosen by the caller (Podman does its own IPAM), run in
//! the host namespace, where it makes its bridge and iptables rules.
use std::{net::Ipv4Addr, path::PathBuf, sync::Mutex};

use anyhow::{Context, Result, anyhow};
use serde_json::{Value, json};

use super::{Attacher, Datapath, Routes, nth_ip};
use crate::bench::{
    Ctx,
    netns::Netns,
    process::{SETUP_LIMIT, feed_within},
    topology::{CONNRATE_PORT, IPERF_PORT, PUBLISHED_CONNRATE, PUBLISHED_IPERF, Topology},
};

const NETWORK: &str = "npbench";
const BRIDGE: &str = "podman1";
const SUBNET: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 0);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 1);
/// The sweep's endpoints get addresses after the two containers'.
const SWEEP_FIRST_INDEX: u32 = 100;

#[derive(Default)]
pub struct Netavark {
    topo: Option<Topology>,
    config_dir: PathBuf,
    routes: Routes,
    /// Containers set up (index, namespace, published), torn down in `down`; shared by the
    /// threads of the concurrent attach sweep.
    containers: Mutex<Vec<(u32, Netns, bool)>>,
}

impl Datapath for Netavark {
    fn name(&self) -> &'static str {
        "netavark"
    }

    fn description(&self) -> String {
        "Podman's netavark (bridge driver, iptables-nft firewall driver) called as Podman calls it".into()
    }

    fn up(&mut self, ctx: &Ctx) -> Result<()> {
        let topo = self.topo.insert(Topology::new(ctx, self.name())?);
        self.config_dir = topo.dir(ctx, "config")?;
        let c1 = topo.container("c1")?;
        let c2 = topo.container("c2")?;
        let (host, outside) = (topo.host.clone(), topo.outside.clone());
        self.netavark(ctx, "setup", 0, &c1, false)?;
        self.netavark(ctx, "setup", 1, &c2, true)?;
        self.topo.as_mut().expect("set above").serve(ctx, &c2, "c2")?;
        self.routes = Routes::translated(&host, &outside, &c1, nth_ip(SUBNET, 1));
        Ok(())
    }

    fn routes(&self) -> &Routes {
        &self.routes
    }

    fn down(&mut self, ctx: &Ctx) {
        if let Some(topo) = &mut self.topo {
            topo.stop_servers();
        }
        let containers = self.containers.lock().map(|mut c| std::mem::take(&mut *c)).unwrap_or_default();
        for (index, ns, published) in containers.into_iter().rev() {
            let _ = self.netavark(ctx, "teardown", index, &ns, published);
        }
        self.topo = None;
        self.routes = Routes::default();
    }

    fn attacher(&self) -> Option<&dyn Attacher> {
        Some(self)
    }
}

impl Attacher for Netavark {
    /// The address is the caller's choice, as Podman's own IPAM makes it.
    fn attach(&self, ctx: &Ctx, index: u32, ns: &Netns) -> Result<Ipv4Addr> {
        self.netavark(ctx, "setup", SWEEP_FIRST_INDEX + index, ns, false)?;
        Ok(nth_ip(SUBNET, SWEEP_FIRST_INDEX + index))
    }

    fn detach(&self, ctx: &Ctx, index: u32, ns: &Netns) -> Result<()> {
        self.netavark(ctx, "teardown", SWEEP_FIRST_INDEX + index, ns, false)
    }
}

impl Netavark {
    /// One `netavark setup|teardown` of container `index` in `ns`, as Podman runs it.
    fn netavark(&self, ctx: &Ctx, command: &str, index: u32, ns: &Netns, published: bool) -> Result<()> {
        let host = &self.topo.as_ref().context("netavark is not up")?.host;
        let options = network_options(index, published);
        let mut cmd = host.cmd(
            ctx.peers.file("usr/lib/podman/netavark"),
            &["--config".as_ref(), self.config_dir.as_os_str(), command.as_ref(), ns.path().as_os_str()],
        );
        feed_within(ctx.peers.env(&mut cmd), SETUP_LIMIT, options.to_string().as_bytes())
            .with_context(|| format!("netavark {command} of container {index}"))?;
        let mut containers = self.containers.lock().map_err(|_| anyhow!("a thread of the attach sweep panicked"))?;
        match command {
            "setup" => containers.push((index, ns.clone(), published)),
            _ => containers.retain(|(i, _, _)| *i != index),
        }
        Ok(())
    }
}

/// The JSON Podman hands netavark for one container on the bench's network.
fn network_options(index: u32, published: bool) -> Value {
    let port = |host: u16, container: u16, protocol: &str| json!({"host_ip": "", "container_port": container, "host_port": host, "range": 1, "protocol": protocol});
    let ports = if published {
        // iperf3's UDP test sends its datagrams to the port of its TCP control connection.
        vec![
            port(PUBLISHED_IPERF, IPERF_PORT, "tcp"),
            port(PUBLISHED_IPERF, IPERF_PORT, "udp"),
            port(PUBLISHED_CONNRATE, CONNRATE_PORT, "tcp"),
        ]
    } else {
        vec![]
    };
    json!({
        "container_id": format!("{index:064x}"),
        "container_name": format!("c{index}"),
        "port_mappings": ports,
        "networks": { NETWORK: { "static_ips": [nth_ip(SUBNET, index).to_string()], "interface_name": "eth0" } },
        "network_info": { NETWORK: {
            "name": NETWORK,
            "id": format!("{:064x}", 0xbe4c_u32),
            "driver": "bridge",
            "network_interface": BRIDGE,
            "subnets": [{ "subnet": format!("{SUBNET}/16"), "gateway": GATEWAY.to_string() }],
            "ipv6_enabled": false,
            "internal": false,
            "dns_enabled": false,
            "ipam_options": { "driver": "host-local" },
        }},
    })
}
