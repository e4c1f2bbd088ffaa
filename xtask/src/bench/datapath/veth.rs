//! Datapath 1: a veth pair straight between the two namespaces of every path — no bridge, no
//! routing hop, no translation. What this machine can do at best.
use std::net::Ipv4Addr;

use anyhow::Result;

use super::{Datapath, Route, Routes, Target};
use crate::bench::{
    Ctx,
    topology::{Topology, send_as_a_wire},
};

#[derive(Default)]
pub struct Veth {
    topo: Option<Topology>,
    /// Per route: the client's namespace and the server's address on their own pair.
    routes: Routes,
}

impl Datapath for Veth {
    fn name(&self) -> &'static str {
        "veth"
    }

    fn description(&self) -> String {
        "a veth pair between the client's and the server's namespace, for every path: the machine's limit".into()
    }

    fn up(&mut self, ctx: &Ctx) -> Result<()> {
        let topo = self.topo.insert(Topology::new(ctx, self.name())?);
        let c1 = topo.container("c1")?;
        let c2 = topo.container("c2")?;
        let (host, outside) = (topo.host.clone(), topo.outside.clone());
        let pairs = [
            (Route::C2c, &c1, &c2),
            (Route::Egress, &c1, &outside),
            (Route::Ingress, &outside, &c2),
            (Route::HostLocal, &host, &c2),
        ];
        for (subnet, (route, client, server)) in (1u8..).zip(pairs) {
            let (client_ip, server_ip) = (Ipv4Addr::new(10, 250, subnet, 1), Ipv4Addr::new(10, 250, subnet, 2));
            let (client_if, server_if) = (format!("p{subnet}c"), format!("p{subnet}s"));
            client.veth(&client_if, server, &server_if)?;
            client.address(&client_if, &format!("{client_ip}/30"))?;
            if route == Route::Ingress {
                send_as_a_wire(client, &client_if)?;
            }
            server.address(&server_if, &format!("{server_ip}/30"))?;
            let target = Target::direct(client, server_ip);
            let target = if route == Route::Ingress { target.through(server, &server_if) } else { target };
            self.routes.set(route, Ok(target));
        }
        topo.serve(ctx, &c2, "c2")
    }

    fn routes(&self) -> &Routes {
        &self.routes
    }

    fn down(&mut self, _ctx: &Ctx) {
        self.topo = None;
        self.routes = Routes::default();
    }
}
