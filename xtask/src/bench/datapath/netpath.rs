//! Datapath 6: netpath, through its CLI as a user runs it, with its own state directory and
//! a bpffs pin root under the run directory. Four flavours: TC programs everywhere, endpoints
//! on their network's tc block (the reference of every ratio); the same with a TCX link per
//! endpoint (`--endpoint-hook tcx`), which changes only what containers send and how they
//! attach, and so is measured on those paths; and XDP on the uplink as `--xdp` (filter: drops
//! before the stack, published ports on TC) and `--xdp redirect` (published ports redirected
//! by XDP too), which only change inbound traffic and so are measured on the inbound paths.
//!
//! Features still being built (egress masquerade, published ports, the XDP variant) are
//! detected when the bench runs: a refused command or traffic that does not pass makes the
//! cell "missing" with the reason.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, anyhow};
use serde_json::Value;

use super::{
    Attacher, Datapath, Monitor, PortTable, Reading, Resolver, Route, Routes, Scaler, Unavailable, netpath_daemon,
};
use crate::bench::{
    Ctx,
    cost::{PinnedProgram, ProgramStats},
    dns::Lookup,
    netns::Netns,
    process::{Daemon, SETUP_LIMIT, output_within, root_cause, stdout_within},
    scenario::Measured,
    topology::{CONNRATE_PORT, IPERF_PORT, OUTSIDE_IP, PUBLISHED_CONNRATE, PUBLISHED_IPERF, Topology},
};

const NETWORK: &str = "bench";
const SUBNET: &str = "10.201.0.0/16";
/// The dns scenario's containers: the first asks for the second's name.
const NAMED: [&str; 2] = ["web", "db"];
/// Host ports of the sweep's filler endpoint: clear of the measured ones and of the
/// ephemeral range.
const FILLER_BASE_PORT: u32 = 10000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Tc,
    Tcx,
    XdpFilter,
    XdpRedirect,
}

pub struct Netpath {
    mode: Mode,
    topo: Option<Topology>,
    dir: PathBuf,
    routes: Routes,
    /// Filler endpoints of the port sweep, and how many ports they publish.
    fillers: Vec<String>,
    filler_ports: u32,
    /// `from_container` as pinned, once up (TC flavour: the one on the c2c path).
    from_container: Option<PinnedProgram>,
    /// `netpath daemon`, whose resolver answers the dns scenario's names, while it runs.
    daemon: Option<Daemon>,
    /// The named endpoints attached for the dns scenario.
    named: Vec<&'static str>,
}

impl Netpath {
    pub fn tc() -> Self {
        Self::new(Mode::Tc)
    }

    pub fn tcx() -> Self {
        Self::new(Mode::Tcx)
    }

    pub fn xdp_filter() -> Self {
        Self::new(Mode::XdpFilter)
    }

    pub fn xdp_redirect() -> Self {
        Self::new(Mode::XdpRedirect)
    }

    fn new(mode: Mode) -> Self {
        Self {
            mode,
            topo: None,
            dir: PathBuf::new(),
            routes: Routes::default(),
            fillers: Vec::new(),
            filler_ports: 0,
            from_container: None,
            daemon: None,
            named: Vec::new(),
        }
    }

    /// A netpath command bound to this topology's host namespace, state and pins.
    fn netpath(&self, ctx: &Ctx, args: &[&str]) -> Result<Command> {
        let topo = self.topo.as_ref().context("netpath is not up")?;
        Ok(command(ctx, &self.dir, &topo.host, args))
    }

    /// Runs netpath; an error quotes the command as a user would type it and netpath's words.
    fn run(&self, ctx: &Ctx, args: &[&str]) -> Result<String> {
        stdout_within(&mut self.netpath(ctx, args)?, SETUP_LIMIT)
            .map_err(|e| anyhow!("`netpath {}` failed: {}", args.join(" "), root_cause(&e)))
    }

    /// Runs netpath with `--format json` among `args`; its answer.
    fn json(&self, ctx: &Ctx, args: &[&str]) -> Result<Value> {
        let out = self.run(ctx, args)?;
        serde_json::from_str(&out).with_context(|| format!("`netpath {}` printed {out}", args.join(" ")))
    }

    /// `netpath attach`; returns the endpoint's address.
    fn attach_endpoint(&self, ctx: &Ctx, id: &str, ns: &Netns, publish: &[String]) -> Result<Ipv4Addr> {
        let netns = ns.path().to_string_lossy();
        let mut args = vec!["attach", "--network", NETWORK, "--netns", &netns, "--id", id, "--format", "json"];
        for p in publish {
            args.extend(["--publish", p]);
        }
        let endpoint = self.json(ctx, &args)?;
        let ip = endpoint["ip"].as_str().with_context(|| format!("no ip in {endpoint}"))?;
        ip.parse().with_context(|| format!("endpoint address {ip:?}"))
    }

    fn not_applicable() -> Unavailable {
        Unavailable::NotApplicable("the XDP variant only changes the uplink's inbound path".into())
    }
}

impl Datapath for Netpath {
    fn name(&self) -> &'static str {
        match self.mode {
            Mode::Tc => "netpath",
            Mode::Tcx => "netpath-tcx",
            Mode::XdpFilter => "netpath-xdp",
            Mode::XdpRedirect => "netpath-xdp-redirect",
        }
    }

    fn description(&self) -> String {
        match self.mode {
            Mode::Tc => {
                "netpath: bridge and veths, endpoints on their network's tc block, shared pinned maps, no iptables; for dns, `netpath daemon`'s resolver on the gateway"
                    .into()
            }
            Mode::Tcx => {
                "netpath with a TCX link per endpoint (`--endpoint-hook tcx`; container-sent paths and attach only)"
                    .into()
            }
            Mode::XdpFilter => {
                "netpath with XDP on the uplink, native mode, filtering; published ports on TC (inbound paths only)"
                    .into()
            }
            Mode::XdpRedirect => {
                "netpath with XDP on the uplink, native mode, redirecting published ports (inbound paths only)".into()
            }
        }
    }

    fn up(&mut self, ctx: &Ctx) -> Result<()> {
        let xdp_args: &[&str] = match self.mode {
            Mode::Tc | Mode::Tcx => &[],
            Mode::XdpFilter => &["--xdp"],
            Mode::XdpRedirect => &["--xdp", "redirect"],
        };
        let topo = self.topo.insert(Topology::new(ctx, self.name())?);
        self.dir = topo.dir(ctx, "netpath")?;
        let c1 = topo.container("c1")?;
        let c2 = topo.container("c2")?;
        let (host, outside) = (topo.host.clone(), topo.outside.clone());
        let mut create = vec!["network", "create", NETWORK, "--subnet", SUBNET];
        create.extend(xdp_args);
        self.run(ctx, &create).context("netpath network create")?;
        if self.mode == Mode::Tcx {
            self.run(ctx, &["datapath", "configure", "--endpoint-hook", "tcx"])
                .context("netpath datapath configure")?;
        }
        self.attach_endpoint(ctx, "c1", &c1, &[]).context("netpath attach c1")?;
        // iperf3's UDP test sends its datagrams to the port of its TCP control connection.
        let published = [
            format!("{PUBLISHED_IPERF}:{IPERF_PORT}"),
            format!("{PUBLISHED_IPERF}:{IPERF_PORT}/udp"),
            format!("{PUBLISHED_CONNRATE}:{CONNRATE_PORT}"),
        ];
        let (c2_ip, publish_error) = match self.attach_endpoint(ctx, "c2", &c2, &published) {
            Ok(ip) => (ip, None),
            // Published ports may not have landed yet: attach without, measure the rest.
            Err(e) => (self.attach_endpoint(ctx, "c2", &c2, &[]).context("netpath attach c2")?, Some(format!("{e:#}"))),
        };
        self.topo.as_mut().expect("set above").serve(ctx, &c2, "c2")?;
        self.routes = Routes::translated(&host, &outside, &c1, c2_ip);
        if let Some(reason) = publish_error {
            for route in [Route::Ingress, Route::HostLocal] {
                self.routes.set(route, Err(Unavailable::Missing(format!("publishing ports failed: {reason}"))));
            }
        }
        match self.mode {
            Mode::Tc | Mode::Tcx => {
                self.from_container =
                    Some(PinnedProgram { pin_root: self.dir.join("bpffs/netpath"), name: "from_container" });
            }
            Mode::XdpFilter | Mode::XdpRedirect => {
                for route in [Route::C2c, Route::Egress, Route::HostLocal] {
                    self.routes.set(route, Err(Self::not_applicable()));
                }
            }
        }
        if self.mode == Mode::Tcx {
            for route in [Route::Ingress, Route::HostLocal] {
                let why = "the endpoint hook changes only what containers send";
                self.routes.set(route, Err(Unavailable::NotApplicable(why.into())));
            }
        }
        Ok(())
    }

    fn routes(&self) -> &Routes {
        &self.routes
    }

    fn down(&mut self, ctx: &Ctx) {
        // The daemon and the named endpoints first, while the network is there to detach from.
        self.stop(ctx);
        if let Some(topo) = &mut self.topo {
            topo.stop_servers();
            if self.dir.join("state").exists() {
                let _ = self.run(ctx, &["network", "rm", NETWORK, "--force"]);
            }
        }
        unmount(&self.dir.join("bpffs"));
        self.topo = None;
        self.routes = Routes::default();
        self.fillers.clear();
        self.filler_ports = 0;
        self.from_container = None;
    }

    fn port_table(&mut self) -> Option<&mut dyn PortTable> {
        // Only a netpath that is up and publishes ports has a table to grow.
        let publishes = self.topo.is_some() && self.routes.get(Route::Ingress).is_ok();
        if publishes { Some(self) } else { None }
    }

    fn attacher(&self) -> Option<&dyn Attacher> {
        // Attaching does not depend on the uplink program: measured once per endpoint hook.
        if matches!(self.mode, Mode::Tc | Mode::Tcx) && self.topo.is_some() { Some(self) } else { None }
    }

    fn scaler(&self) -> Option<&dyn Scaler> {
        // Like attaching: measured once, with TC.
        if self.mode == Mode::Tc && self.topo.is_some() { Some(self) } else { None }
    }

    fn resolver(&mut self) -> Option<&mut dyn Resolver> {
        // The resolver does not depend on how endpoints hook or what the uplink runs.
        if self.mode == Mode::Tc && self.topo.is_some() { Some(self) } else { None }
    }

    fn c2c_program(&self) -> Option<&dyn ProgramStats> {
        self.from_container.as_ref().map(|p| p as &dyn ProgramStats)
    }

    fn monitor(&self) -> Option<&dyn Monitor> {
        if self.topo.is_some() { Some(self) } else { None }
    }
}

impl Monitor for Netpath {
    fn read(&self, ctx: &Ctx) -> Result<Reading> {
        let inspect = self.json(ctx, &["network", "inspect", NETWORK, "--format", "json"])?;
        let stats = self.json(ctx, &["stats", "--format", "json"])?;
        let drops = |reason: &str| {
            stats["drops"]
                .as_array()
                .and_then(|drops| drops.iter().find(|d| d["reason"] == reason).and_then(|d| d["packets"].as_u64()))
                .with_context(|| format!("`netpath stats`: no {reason} drops"))
        };
        Ok(Reading {
            xdp_mode: inspect["xdp_mode"].as_str().map(String::from),
            redirected: stats["xdp_redirected"]["packets"].as_u64().context("`netpath stats`: no xdp_redirected")?,
            unsolicited: drops("unsolicited")?,
            out_of_window: drops("out-of-window")?,
        })
    }

    fn check(&self, before: &Reading, after: &Reading, measured: &mut Measured) {
        let redirected = after.redirected.saturating_sub(before.redirected);
        measured.saw("xdp_mode", after.xdp_mode.clone().unwrap_or_else(|| "none".into()));
        measured.saw("xdp_redirected (packets)", redirected);
        measured.saw("unsolicited drops (packets)", after.unsolicited.saturating_sub(before.unsolicited));
        measured.saw("out-of-window drops (packets)", after.out_of_window.saturating_sub(before.out_of_window));
        if let Some(why) = refusal(self.mode, after.xdp_mode.as_deref(), redirected) {
            measured.refuse(&why);
        }
    }
}

/// Why a run on the inbound route does not count as `mode`'s, if it does not: XDP in generic
/// mode runs after the skb exists, which is what XDP is meant to save, and a redirecting XDP
/// that redirected nothing left the published ports to TC.
fn refusal(mode: Mode, xdp_mode: Option<&str>, redirected: u64) -> Option<String> {
    match (mode, xdp_mode) {
        (Mode::Tc | Mode::Tcx, _) => None,
        (_, Some("native")) if mode == Mode::XdpRedirect && redirected == 0 => Some(
            "XDP redirected nothing during the run (xdp_redirected +0): the published ports went through TC".into(),
        ),
        (_, Some("native")) => None,
        (_, Some(other)) => Some(format!("XDP runs in {other} mode on the uplink, not native")),
        (_, None) => Some("no XDP program on the uplink (network inspect: xdp_mode null)".into()),
    }
}

impl PortTable for Netpath {
    /// One more filler endpoint per step, publishing the next range of ports.
    fn publish_fillers(&mut self, ctx: &Ctx, fillers: u32) -> Result<()> {
        if fillers <= self.filler_ports {
            return Ok(());
        }
        let id = format!("filler{}", self.fillers.len());
        let ns = self.topo.as_mut().context("netpath is not up")?.container(&id)?;
        let (first, last) = (FILLER_BASE_PORT + self.filler_ports, FILLER_BASE_PORT + fillers - 1);
        let range = if first == last { format!("{first}:{first}") } else { format!("{first}-{last}:{first}-{last}") };
        self.attach_endpoint(ctx, &id, &ns, &[range])
            .with_context(|| format!("publishing {} filler ports", fillers - self.filler_ports))?;
        self.fillers.push(id);
        self.filler_ports = fillers;
        Ok(())
    }

    fn remove_fillers(&mut self, ctx: &Ctx) -> Result<()> {
        for id in std::mem::take(&mut self.fillers) {
            self.run(ctx, &["detach", "--id", &id])?;
        }
        self.filler_ports = 0;
        Ok(())
    }
}

impl Attacher for Netpath {
    fn attach(&self, ctx: &Ctx, index: u32, ns: &Netns) -> Result<Ipv4Addr> {
        self.attach_endpoint(ctx, &format!("e{index}"), ns, &[])
    }

    fn detach(&self, ctx: &Ctx, index: u32, _ns: &Netns) -> Result<()> {
        self.run(ctx, &["detach", "--id", &format!("e{index}")]).map(drop)
    }
}

impl Resolver for Netpath {
    /// Two endpoints with names on the bench's network and the daemon, whose resolver answers
    /// them on the gateway; other names would go to the outside namespace, where nothing
    /// answers DNS (the scenario asks none), never to the machine's own resolver.
    fn start(&mut self, ctx: &Ctx) -> Result<Lookup> {
        let topo = self.topo.as_mut().context("netpath is not up")?;
        let (asker, named) = (topo.container(NAMED[0])?, topo.container(NAMED[1])?);
        let host = topo.host.clone();
        let mut addresses = Vec::new();
        for (name, ns) in NAMED.iter().zip([&asker, &named]) {
            let netns = ns.path().to_string_lossy();
            let args =
                ["attach", "--network", NETWORK, "--netns", &netns, "--id", name, "--name", name, "--format", "json"];
            let endpoint = self.json(ctx, &args)?;
            self.named.push(name);
            let ip = endpoint["ip"].as_str().with_context(|| format!("no ip in {endpoint}"))?;
            addresses.push(ip.parse::<Ipv4Addr>().with_context(|| format!("endpoint address {ip:?}"))?);
        }
        let upstream = OUTSIDE_IP.to_string();
        self.daemon = Some(netpath_daemon::start(
            ctx,
            &self.dir,
            &host,
            &format!("{}-dns", self.name()),
            &["--dns-upstream", &upstream],
        )?);
        let inspect = self.json(ctx, &["network", "inspect", NETWORK, "--format", "json"])?;
        let gateway = inspect["gateway"].as_str().with_context(|| format!("no gateway in {inspect}"))?;
        Ok(Lookup {
            client: asker,
            server: gateway.parse().with_context(|| format!("gateway {gateway:?}"))?,
            name: NAMED[1].into(),
            expected: addresses[1],
        })
    }

    fn stop(&mut self, ctx: &Ctx) {
        // SIGTERM by PID, then wait (`Daemon`'s drop).
        self.daemon = None;
        for id in std::mem::take(&mut self.named) {
            let _ = self.run(ctx, &["detach", "--id", id]);
        }
    }
}

impl Scaler for Netpath {
    fn netpath(&self, ctx: &Ctx, args: &[&str]) -> Result<String> {
        self.run(ctx, args)
    }

    fn datapath_dir(&self) -> Result<PathBuf> {
        let pin = self.from_container.as_ref().context("netpath is not up")?.pin()?;
        pin.parent().map(Path::to_path_buf).context("a pinned program in no directory")
    }
}

/// A netpath command with its state and bpffs pins under `dir`, bound to the host namespace
/// `host`: the CLI and the daemon of a bench datapath share them.
pub(super) fn command(ctx: &Ctx, dir: &Path, host: &Netns, args: &[&str]) -> Command {
    let mut cmd = Command::new(&ctx.netpath);
    cmd.arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--bpffs")
        .arg(dir.join("bpffs/netpath"))
        .arg("--host-netns")
        .arg(host.path())
        .args(args);
    cmd
}

pub(super) fn unmount(path: &Path) {
    if path.exists() {
        let _ = output_within(Command::new("umount").arg(path), SETUP_LIMIT);
    }
}

#[cfg(test)]
mod tests {
    use super::{Mode, refusal};

    #[test]
    fn an_xdp_run_counts_only_native_and_redirecting_where_it_claims_to() {
        assert_eq!(refusal(Mode::Tc, None, 0), None);
        assert_eq!(refusal(Mode::XdpFilter, Some("native"), 0), None, "the filter redirects nothing by design");
        assert_eq!(refusal(Mode::XdpRedirect, Some("native"), 1), None);
        for mode in [Mode::XdpFilter, Mode::XdpRedirect] {
            assert_eq!(
                refusal(mode, Some("generic"), 5).as_deref(),
                Some("XDP runs in generic mode on the uplink, not native"),
                "{mode:?}"
            );
            assert!(refusal(mode, None, 5).unwrap().contains("no XDP program"), "{mode:?}");
        }
        assert!(refusal(Mode::XdpRedirect, Some("native"), 0).unwrap().contains("xdp_redirected +0"));
    }
}
