//! Datapath 5: the CNI reference plugins (Debian's containernetworking-plugins), a
//! `bridge` + `portmap` chain with `host-local` IPAM, invoked through the CNI protocol exactly
//! as a runtime (libcni) does: each plugin of the list in turn with CNI_* variables and its
//! configuration on stdin, the previous plugin's result passed on as `prevResult`, port
//! mappings as `runtimeConfig` to the plugin that declares the capability, and on DEL the
//! list in reverse with the cached result. The plugins run in the host namespace.
use std::{collections::HashMap, net::Ipv4Addr, path::PathBuf, sync::Mutex};

use anyhow::{Context, Result, anyhow};
use serde_json::{Value, json};

use super::{Attacher, Datapath, Routes};
use crate::bench::{
    Ctx,
    netns::Netns,
    process::{SETUP_LIMIT, feed_within},
    topology::{CONNRATE_PORT, IPERF_PORT, PUBLISHED_CONNRATE, PUBLISHED_IPERF, Topology},
};

const NETWORK: &str = "npbench";
const CNI_VERSION: &str = "1.0.0";
const BRIDGE: &str = "cni0";
const SUBNET: &str = "10.22.0.0/16";

#[derive(Default)]
pub struct Cni {
    topo: Option<Topology>,
    ipam_dir: PathBuf,
    routes: Routes,
    /// Container id → its namespace and the chain's result, which DEL needs (libcni caches it).
    /// Shared by the threads of the concurrent attach sweep.
    attached: Mutex<HashMap<String, (Netns, Value)>>,
}

impl Datapath for Cni {
    fn name(&self) -> &'static str {
        "cni"
    }

    fn description(&self) -> String {
        "CNI reference plugins bridge + portmap + host-local (iptables-nft), invoked through the CNI protocol".into()
    }

    fn up(&mut self, ctx: &Ctx) -> Result<()> {
        let topo = self.topo.insert(Topology::new(ctx, self.name())?);
        self.ipam_dir = topo.dir(ctx, "ipam")?;
        let c1 = topo.container("c1")?;
        let c2 = topo.container("c2")?;
        let (host, outside) = (topo.host.clone(), topo.outside.clone());
        self.add(ctx, "c1", &c1, &[])?;
        // iperf3's UDP test sends its datagrams to the port of its TCP control connection.
        let published = [
            (PUBLISHED_IPERF, IPERF_PORT, "tcp"),
            (PUBLISHED_IPERF, IPERF_PORT, "udp"),
            (PUBLISHED_CONNRATE, CONNRATE_PORT, "tcp"),
        ];
        let c2_ip = self.add(ctx, "c2", &c2, &published)?;
        self.topo.as_mut().expect("set above").serve(ctx, &c2, "c2")?;
        self.routes = Routes::translated(&host, &outside, &c1, c2_ip);
        Ok(())
    }

    fn routes(&self) -> &Routes {
        &self.routes
    }

    fn down(&mut self, ctx: &Ctx) {
        if let Some(topo) = &mut self.topo {
            topo.stop_servers();
        }
        let ids: Vec<String> = self.attached.lock().map(|a| a.keys().cloned().collect()).unwrap_or_default();
        for id in ids {
            let _ = self.del(ctx, &id);
        }
        self.topo = None;
        self.routes = Routes::default();
    }

    fn attacher(&self) -> Option<&dyn Attacher> {
        Some(self)
    }
}

impl Attacher for Cni {
    fn attach(&self, ctx: &Ctx, index: u32, ns: &Netns) -> Result<Ipv4Addr> {
        self.add(ctx, &format!("e{index}"), ns, &[])
    }

    fn detach(&self, ctx: &Ctx, index: u32, _ns: &Netns) -> Result<()> {
        self.del(ctx, &format!("e{index}"))
    }
}

impl Cni {
    /// The network configuration list, as it would sit in /etc/cni/net.d.
    fn plugins(&self) -> [Value; 2] {
        [
            json!({
                "type": "bridge", "bridge": BRIDGE, "isGateway": true, "ipMasq": true, "hairpinMode": true,
                "ipam": { "type": "host-local", "ranges": [[{ "subnet": SUBNET }]], "routes": [{ "dst": "0.0.0.0/0" }],
                          "dataDir": self.ipam_dir },
            }),
            json!({ "type": "portmap", "snat": true, "capabilities": { "portMappings": true } }),
        ]
    }

    /// CNI ADD of the whole list; returns the container's address.
    fn add(&self, ctx: &Ctx, id: &str, ns: &Netns, ports: &[(u16, u16, &str)]) -> Result<Ipv4Addr> {
        let mappings: Vec<Value> = ports
            .iter()
            .map(|(host, container, proto)| json!({"hostPort": host, "containerPort": container, "protocol": proto}))
            .collect();
        let mut result = Value::Null;
        for mut conf in self.plugins() {
            if conf["capabilities"]["portMappings"] == true && !mappings.is_empty() {
                conf["runtimeConfig"] = json!({ "portMappings": mappings });
            }
            if !result.is_null() {
                conf["prevResult"] = result;
            }
            let out = self.exec(ctx, "ADD", id, ns, conf)?;
            result = serde_json::from_str(&out).with_context(|| format!("CNI result for {id}: {out}"))?;
        }
        let address = result["ips"][0]["address"]
            .as_str()
            .with_context(|| format!("no address in the CNI result for {id}: {result}"))?;
        let ip =
            address.split('/').next().unwrap_or_default().parse().with_context(|| format!("CNI address {address}"))?;
        self.attached
            .lock()
            .map_err(|_| anyhow!("a thread of the attach sweep panicked"))?
            .insert(id.to_string(), (ns.clone(), result));
        Ok(ip)
    }

    /// CNI DEL of the list in reverse, with the cached result.
    fn del(&self, ctx: &Ctx, id: &str) -> Result<()> {
        let (ns, result) = self
            .attached
            .lock()
            .map_err(|_| anyhow!("a thread of the attach sweep panicked"))?
            .remove(id)
            .with_context(|| format!("{id} is not attached"))?;
        for mut conf in self.plugins().into_iter().rev() {
            conf["prevResult"] = result.clone();
            self.exec(ctx, "DEL", id, &ns, conf)?;
        }
        Ok(())
    }

    /// Runs one plugin with the CNI protocol's environment and its configuration on stdin.
    fn exec(&self, ctx: &Ctx, command: &str, id: &str, ns: &Netns, mut conf: Value) -> Result<String> {
        let host = &self.topo.as_ref().context("cni is not up")?.host;
        conf["cniVersion"] = json!(CNI_VERSION);
        conf["name"] = json!(NETWORK);
        let plugin = conf["type"].as_str().unwrap_or_default().to_string();
        let cni_path = ctx.peers.file("usr/lib/cni");
        let mut cmd = host.cmd(cni_path.join(&plugin), &[] as &[&str]);
        ctx.peers
            .env(&mut cmd)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", ns.path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &cni_path);
        let out = feed_within(&mut cmd, SETUP_LIMIT, conf.to_string().as_bytes())
            .with_context(|| format!("CNI {command} {plugin} for {id}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
