//! The datapaths compared, one implementation each, all built in the same kind of topology
//! (see `topology`): a client container `c1`, a server container `c2` with its ports
//! published where the datapath can publish, the host and the outside namespace.
mod bridge;
mod cni;
mod docker;
mod netavark;
mod netpath;
mod netpath_daemon;
mod redirect_ref;
mod veth;

use std::{net::Ipv4Addr, path::PathBuf};

use anyhow::Result;

use super::{
    Ctx,
    cost::ProgramStats,
    dns::Lookup,
    netns::Netns,
    scenario::Measured,
    topology::{
        CONNRATE_PORT, HOST_UPLINK_IP, IPERF_PORT, OUTSIDE_IP, PUBLISHED_CONNRATE, PUBLISHED_IPERF, SOCKPERF_PORT,
        UPLINK,
    },
};

/// The paths a scenario can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Container to container on the same network.
    C2c,
    /// Container to a server in the outside namespace (masquerade where the datapath has it).
    Egress,
    /// The outside namespace to a port published on the host's uplink address.
    Ingress,
    /// The host namespace to a published port on 127.0.0.1.
    HostLocal,
}

/// Where a load generator runs and what it dials.
#[derive(Clone, Debug)]
pub struct Target {
    pub client: Netns,
    pub addr: Ipv4Addr,
    pub iperf_port: u16,
    pub connrate_port: u16,
    pub sockperf_port: u16,
    /// The server container's own address (the target of unsolicited floods): `addr` itself
    /// when nothing translates.
    pub server: Ipv4Addr,
    /// On the inbound route, the link traffic from the outside arrives by (the host's uplink;
    /// for `veth`, the server's end), whose counters show what a flood delivered.
    pub uplink: Option<Uplink>,
}

#[derive(Clone, Debug)]
pub struct Uplink {
    pub ns: Netns,
    pub name: String,
}

impl Target {
    /// The servers' own ports, no translation on the way.
    pub fn direct(client: &Netns, addr: Ipv4Addr) -> Self {
        Self {
            client: client.clone(),
            addr,
            iperf_port: IPERF_PORT,
            connrate_port: CONNRATE_PORT,
            sockperf_port: SOCKPERF_PORT,
            server: addr,
            uplink: None,
        }
    }

    /// Arriving by link `name` in `ns`.
    fn through(self, ns: &Netns, name: &str) -> Self {
        Self { uplink: Some(Uplink { ns: ns.clone(), name: name.into() }), ..self }
    }

    /// The host ports published to the server container.
    fn published(client: &Netns, addr: Ipv4Addr, server: Ipv4Addr) -> Self {
        Self { iperf_port: PUBLISHED_IPERF, connrate_port: PUBLISHED_CONNRATE, server, ..Self::direct(client, addr) }
    }
}

/// Why a datapath has no figure for a scenario.
#[derive(Clone, Debug)]
pub enum Unavailable {
    /// The scenario does not apply to this datapath (e.g. XDP only acts on uplink ingress).
    NotApplicable(String),
    /// The feature it needs does not work (yet): the reason, never an estimate.
    Missing(String),
}

pub trait Datapath {
    /// Short name, used for namespaces, columns and `--datapath`.
    fn name(&self) -> &'static str;
    /// One line for the report: what this datapath is and how it is set up.
    fn description(&self) -> String;
    /// Builds the topology and the datapath, and starts the servers.
    fn up(&mut self, ctx: &Ctx) -> Result<()>;
    /// Where the client of each route runs and what it dials, as `up` found it.
    fn routes(&self) -> &Routes;
    /// Removes everything `up` made; best effort, and safe after a failed `up`.
    fn down(&mut self, ctx: &Ctx);
    /// For the published-port sweep: the datapaths whose port table grows with it.
    fn port_table(&mut self) -> Option<&mut dyn PortTable> {
        None
    }
    /// For the attach-time sweep: the datapaths that attach endpoints as a runtime would.
    fn attacher(&self) -> Option<&dyn Attacher> {
        None
    }
    /// For the scale sweep: netpath's own commands, where this is netpath's CLI.
    fn scaler(&self) -> Option<&dyn Scaler> {
        None
    }
    /// For the dns scenario: the datapaths whose containers have a resolver for each other's
    /// names.
    fn resolver(&mut self) -> Option<&mut dyn Resolver> {
        None
    }
    /// For the program-cost metric: the eBPF program container-to-container traffic runs
    /// through on its way out of the sending container, where there is one.
    fn c2c_program(&self) -> Option<&dyn ProgramStats> {
        None
    }
    /// For the checks around each run on the inbound route: the datapath's own account of
    /// what it did, where it keeps one.
    fn monitor(&self) -> Option<&dyn Monitor> {
        None
    }
}

/// A datapath's own account of itself, read before and after each run on the inbound route,
/// so that a figure is refused when the datapath did not do what it is measured as doing.
pub trait Monitor {
    fn read(&self, ctx: &Ctx) -> Result<Reading>;
    /// Puts what changed from `before` to `after` into `measured`, and refuses its figures
    /// if the run did not take the path it claims.
    fn check(&self, before: &Reading, after: &Reading, measured: &mut Measured);
}

/// What netpath reports of itself: how XDP runs on the uplink (`network inspect`), and the
/// packets XDP redirected and the unsolicited ones dropped (`stats`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reading {
    pub xdp_mode: Option<String>,
    pub redirected: u64,
    pub unsolicited: u64,
    /// TCP segments refused as their connection's sequence numbers refute them (the blind ACKs
    /// of the conntrack-pressure scenario).
    pub out_of_window: u64,
}

/// Publishes ports to a filler container, so the measured ports sit among many others.
pub trait PortTable {
    /// Grows the table to `fillers` extra published ports (it only ever grows within a sweep).
    fn publish_fillers(&mut self, ctx: &Ctx, fillers: u32) -> Result<()>;
    /// Back to the two measured ports.
    fn remove_fillers(&mut self, ctx: &Ctx) -> Result<()>;
}

/// What the scale sweep runs: netpath commands with this datapath's state, pins and host
/// namespace.
pub trait Scaler {
    /// `netpath args…`; its standard output.
    fn netpath(&self, ctx: &Ctx, args: &[&str]) -> Result<String>;
    /// The pinned datapath's directory (`<pin root>/<version>`), for the maps' memory.
    fn datapath_dir(&self) -> Result<PathBuf>;
}

/// What answers containers' names: two containers of one network, one asking for the other.
pub trait Resolver {
    /// Starts the resolver and the two containers; what the asking one asks whom.
    fn start(&mut self, ctx: &Ctx) -> Result<Lookup>;
    /// Removes what `start` made; best effort, and safe after a failed `start`.
    fn stop(&mut self, ctx: &Ctx);
}

/// Attaches and detaches endpoint `index` in namespace `ns`, one command per endpoint, from
/// many threads at once in the concurrent sweep.
pub trait Attacher: Sync {
    /// Returns the endpoint's address. This is what is timed.
    fn attach(&self, ctx: &Ctx, index: u32, ns: &Netns) -> Result<Ipv4Addr>;
    /// The rest of an attach that is not the datapath's (a container engine's own work after
    /// its driver answered), run after the clock stopped; the method text says what it is.
    fn complete(&self, _ctx: &Ctx, _index: u32, _ns: &Netns) -> Result<()> {
        Ok(())
    }
    fn detach(&self, ctx: &Ctx, index: u32, ns: &Netns) -> Result<()>;
}

/// Every datapath, in the order of the report's columns; netpath first, the reference of
/// every ratio.
pub fn all() -> Vec<Box<dyn Datapath>> {
    vec![
        Box::new(netpath::Netpath::tc()),
        Box::new(netpath::Netpath::xdp_filter()),
        Box::new(netpath::Netpath::xdp_redirect()),
        Box::new(netpath::Netpath::tcx()),
        Box::new(netpath_daemon::NetpathDaemon::driver_calls()),
        Box::new(netpath_daemon::NetpathDaemon::with_engine()),
        Box::new(veth::Veth::default()),
        Box::new(bridge::Bridge::default()),
        Box::new(docker::Docker::default()),
        Box::new(netavark::Netavark::default()),
        Box::new(cni::Cni::default()),
        Box::new(redirect_ref::RedirectRef::default()),
    ]
}

/// The reference datapath of every ratio.
pub const REFERENCE: &str = "netpath";

/// What each route of a datapath dials, or why it cannot be measured.
#[derive(Default)]
pub struct Routes(Vec<(Route, Result<Target, Unavailable>)>);

impl Routes {
    /// A datapath that translates: containers reach each other directly, egress goes to the
    /// outside server, and inbound traffic uses the published ports.
    fn translated(host: &Netns, outside: &Netns, c1: &Netns, c2_ip: Ipv4Addr) -> Self {
        let mut routes = Self::default();
        routes.set(Route::C2c, Ok(Target::direct(c1, c2_ip)));
        routes.set(Route::Egress, Ok(Target::direct(c1, OUTSIDE_IP)));
        routes.set(Route::Ingress, Ok(Target::published(outside, HOST_UPLINK_IP, c2_ip).through(host, UPLINK)));
        routes.set(Route::HostLocal, Ok(Target::published(host, Ipv4Addr::LOCALHOST, c2_ip)));
        routes
    }

    fn set(&mut self, route: Route, target: Result<Target, Unavailable>) {
        self.0.retain(|(r, _)| *r != route);
        self.0.push((route, target));
    }

    pub fn get(&self, route: Route) -> Result<Target, Unavailable> {
        self.0
            .iter()
            .find(|(r, _)| *r == route)
            .map(|(_, t)| t.clone())
            .unwrap_or(Err(Unavailable::Missing("not set up".into())))
    }
}

/// Container `index`'s address in a /16: .0.1 is the gateway, endpoints count up from .0.2.
fn nth_ip(base: Ipv4Addr, index: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base) + 2 + index)
}
