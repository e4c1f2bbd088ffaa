//! Datapath 2: a plain Linux bridge in the host namespace, routing to the outside, and not a
//! single netfilter rule: no masquerade and no published ports, so the inbound paths reach
//! the container's own address. What the kernel's bridge costs by itself.
use std::net::Ipv4Addr;

use anyhow::Result;

use super::{Datapath, Route, Routes, Target, nth_ip};
use crate::bench::{
    Ctx,
    topology::{HOST_UPLINK_IP, OUTSIDE_IP, Topology, UPLINK},
};

const BRIDGE: &str = "br0";
const SUBNET: Ipv4Addr = Ipv4Addr::new(10, 90, 0, 0);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 90, 0, 1);

#[derive(Default)]
pub struct Bridge {
    topo: Option<Topology>,
    routes: Routes,
}

impl Datapath for Bridge {
    fn name(&self) -> &'static str {
        "bridge"
    }

    fn description(&self) -> String {
        format!(
            "Linux bridge {BRIDGE} with veths, kernel routing, no netfilter rule (no NAT: inbound paths dial the container)"
        )
    }

    fn up(&mut self, ctx: &Ctx) -> Result<()> {
        let topo = self.topo.insert(Topology::new(ctx, self.name())?);
        let host = topo.host.clone();
        host.run(&["ip", "link", "add", BRIDGE, "type", "bridge"])?;
        host.address(BRIDGE, &format!("{GATEWAY}/16"))?;
        host.run(&["ip", "link", "set", BRIDGE, "up"])?;
        host.sysctl("net.ipv4.ip_forward", "1")?;
        // Without translation the outside needs a way back to the containers.
        topo.outside.run(&["ip", "route", "add", &format!("{SUBNET}/16"), "via", &HOST_UPLINK_IP.to_string()])?;
        let mut containers = Vec::new();
        for (index, role) in ["c1", "c2"].into_iter().enumerate() {
            let ns = topo.container(role)?;
            let ip = nth_ip(SUBNET, index as u32);
            let host_if = format!("v{role}");
            host.veth(&host_if, &ns, "eth0")?;
            host.run(&["ip", "link", "set", &host_if, "master", BRIDGE])?;
            ns.address("eth0", &format!("{ip}/16"))?;
            ns.run(&["ip", "route", "add", "default", "via", &GATEWAY.to_string()])?;
            containers.push((ns, ip));
        }
        let (c2, c2_ip) = containers.pop().expect("two containers");
        let (c1, _) = containers.pop().expect("two containers");
        topo.serve(ctx, &c2, "c2")?;
        self.routes.set(Route::C2c, Ok(Target::direct(&c1, c2_ip)));
        self.routes.set(Route::Egress, Ok(Target::direct(&c1, OUTSIDE_IP)));
        self.routes.set(Route::Ingress, Ok(Target::direct(&topo.outside, c2_ip).through(&host, UPLINK)));
        self.routes.set(Route::HostLocal, Ok(Target::direct(&host, c2_ip)));
        Ok(())
    }

    fn routes(&self) -> &Routes {
        &self.routes
    }

    fn down(&mut self, _ctx: &Ctx) {
        self.topo = None;
        self.routes = Routes::default();
    }
}
