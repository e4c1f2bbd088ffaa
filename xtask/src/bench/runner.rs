//! The order of work: bring every datapath up, then run after run, scenario after scenario,
//! every datapath in turn (rotated each run, so none always goes first), then the sweeps.
//! A cell whose feature does not work is settled as missing on its first attempt, with the
//! reason, and not tried again.
use std::collections::HashSet;

use anyhow::Result;

use super::{
    Ctx, attach,
    cost::ProgramStats,
    datapath::{Datapath, Monitor, Reading, Route, Target, Unavailable},
    dns::{self, Lookup},
    process::check_interrupt,
    progress::Progress,
    results::{Results, figure},
    scale,
    scenario::{DETACH_METRICS, Kind, Measured, NO_ATTACHER, NO_PROGRAM, PROGRAM, Scenario},
    traffic,
};

/// Published ports of the measured container; the sweep's N counts them.
const MEASURED_PORTS: u32 = 2;

type Datapaths = [Box<dyn Datapath>];

pub fn run(ctx: &Ctx, datapaths: &mut Datapaths, scenarios: &[&'static Scenario], results: &mut Results) -> Result<()> {
    let runs = ctx.cfg.runs;
    let paths: Vec<&'static Scenario> = scenarios.iter().copied().filter(|s| s.on_routes()).collect();
    let dns = scenarios.iter().copied().find(|s| matches!(s.kind, Kind::Dns));
    let ports = scenarios.iter().copied().find(|s| matches!(s.kind, Kind::PortSweep));
    let attaches: Vec<&'static Scenario> =
        scenarios.iter().copied().filter(|s| matches!(s.kind, Kind::AttachSweep | Kind::AttachConcurrent)).collect();
    let scales = scenarios.iter().copied().find(|s| matches!(s.kind, Kind::Scale));
    let n = datapaths.len();
    let total = n
        * runs
        * (paths.len()
            + ports.map_or(0, |_| ctx.cfg.port_counts.len())
            + attaches.iter().map(|s| attach::counts(&ctx.cfg, s.kind).len()).sum::<usize>()
            + scales.map_or(0, |_| ctx.cfg.scale_counts.len())
            + usize::from(dns.is_some()));
    let mut cells =
        Runner { ctx, results, progress: Progress::new(total), tried: HashSet::new(), failed_up: Vec::new() };

    for dp in datapaths.iter_mut() {
        check_interrupt()?;
        super::step(&format!("setting up {}: {}", dp.name(), dp.description()));
        if let Err(e) = dp.up(ctx) {
            eprintln!("    {} could not be set up: {e:#}", dp.name());
            cells.failed_up.push((dp.name(), format!("setting up {} failed: {e:#}", dp.name())));
            dp.down(ctx);
        }
    }
    for run in 0..runs {
        for scenario in &paths {
            for i in rotation(n, run) {
                cells.measure(&*datapaths[i], scenario, None, run)?;
            }
        }
    }
    if let Some(scenario) = dns {
        cells.dns(datapaths, scenario)?;
    }
    if let Some(scenario) = ports {
        cells.port_sweep(datapaths, scenario)?;
    }
    for scenario in attaches {
        cells.attach_sweep(datapaths, scenario)?;
    }
    if let Some(scenario) = scales {
        cells.scale_sweep(datapaths, scenario)?;
    }
    Ok(())
}

/// Datapath indices for run `run`: all of them, starting one further each run.
fn rotation(n: usize, run: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| (i + run) % n)
}

struct Runner<'a> {
    ctx: &'a Ctx,
    results: &'a mut Results,
    progress: Progress,
    /// Cells already attempted once (scenario, point, datapath).
    tried: HashSet<(&'static str, Option<u32>, &'static str)>,
    /// Datapaths whose set-up failed, and why.
    failed_up: Vec<(&'static str, String)>,
}

impl Runner<'_> {
    /// Settles the cells as unavailable when their datapath is down; returns whether any
    /// metric of this scenario, point and datapath is still to be measured.
    fn open(&mut self, scenario: &'static Scenario, param: Option<u32>, datapath: &'static str) -> bool {
        if let Some((_, why)) = self.failed_up.iter().find(|(d, _)| *d == datapath) {
            let why = Unavailable::Missing(why.clone());
            self.results.mark(scenario, param, datapath, &why);
        }
        self.results.open(scenario, param, datapath).contains(&true)
    }

    fn label(&self, run: usize, scenario: &Scenario, param: Option<u32>, datapath: &str) -> String {
        let point = param.map(|n| format!(" N={n}")).unwrap_or_default();
        format!("run {}/{} {}{point} {datapath}", run + 1, self.ctx.cfg.runs, scenario.name)
    }

    /// One run of one scenario on one datapath's path.
    fn measure(
        &mut self,
        dp: &dyn Datapath,
        scenario: &'static Scenario,
        param: Option<u32>,
        run: usize,
    ) -> Result<()> {
        let label = self.label(run, scenario, param, dp.name());
        let outcome = self.try_measure(dp, scenario, param, run);
        self.progress.step(&label, &outcome);
        check_interrupt()
    }

    fn try_measure(
        &mut self,
        dp: &dyn Datapath,
        scenario: &'static Scenario,
        param: Option<u32>,
        run: usize,
    ) -> String {
        let name = dp.name();
        if !self.open(scenario, param, name) {
            return "skipped (settled)".into();
        }
        let target = match dp.routes().get(scenario.route()) {
            Ok(target) => target,
            Err(why) => {
                self.results.mark(scenario, param, name, &why);
                return describe(&why);
            }
        };
        let first = self.tried.insert((scenario.name, param, name));
        if first {
            if let Err(e) = traffic::probe(self.ctx, &target) {
                let why = Unavailable::Missing(format!("traffic does not pass: {e:#}"));
                self.results.mark(scenario, param, name, &why);
                return describe(&why);
            }
        }
        let program = dp.c2c_program();
        if program.is_none() && scenario.has_program_cost() {
            let whys: Vec<_> = scenario
                .metrics
                .iter()
                .map(|m| (m.name == PROGRAM.name).then(|| Unavailable::NotApplicable(NO_PROGRAM.into())))
                .collect();
            self.results.mark_metrics(scenario, param, name, &whys);
        }
        if dp.attacher().is_none() && scenario.times_detach() {
            let whys: Vec<_> = scenario
                .metrics
                .iter()
                .map(|m| DETACH_METRICS.contains(&m.name).then(|| Unavailable::NotApplicable(NO_ATTACHER.into())))
                .collect();
            self.results.mark_metrics(scenario, param, name, &whys);
        }
        let mut measured = self.attempt(dp, scenario, &target, program);
        // One retry: a single hiccup must not settle a working path as missing.
        let open = self.results.open(scenario, param, name);
        if measured.outcomes.iter().zip(&open).any(|(o, open)| o.is_err() && *open) {
            measured = self.attempt(dp, scenario, &target, program);
        }
        self.settle(scenario, param, name, run, first, measured)
    }

    /// One measurement, with the datapath's own account of just this attempt, checked where
    /// it tells what the path was: inbound.
    fn attempt(
        &self,
        dp: &dyn Datapath,
        scenario: &'static Scenario,
        target: &Target,
        program: Option<&dyn ProgramStats>,
    ) -> Measured {
        let monitor = dp.monitor().filter(|_| scenario.route() == Route::Ingress);
        let before = monitor.map(|m| m.read(self.ctx));
        let detacher = dp.attacher().filter(|_| scenario.times_detach()).map(|a| (dp.name(), a));
        let mut measured = scenario.measure(self.ctx, target, program, detacher);
        if let (Some(monitor), Some(before)) = (monitor, before) {
            account(self.ctx, monitor, before, &mut measured);
        }
        measured
    }

    /// Records the outcomes; a metric that fails on the first attempt is settled as missing.
    fn settle(
        &mut self,
        scenario: &'static Scenario,
        param: Option<u32>,
        name: &'static str,
        run: usize,
        first: bool,
        Measured { outcomes, seen }: Measured,
    ) -> String {
        let open = self.results.open(scenario, param, name);
        self.results.record(scenario, param, name, run, &outcomes);
        self.results.observe(scenario, param, name, run, seen);
        if first {
            let whys: Vec<_> =
                outcomes.iter().map(|o| o.as_ref().err().map(|e| Unavailable::Missing(e.clone()))).collect();
            self.results.mark_metrics(scenario, param, name, &whys);
        }
        let shown = scenario.metrics.iter().zip(&outcomes).zip(open).filter(|(_, open)| *open);
        let text = shown.map(|((m, outcome), _)| match outcome {
            Ok(v) => format!("{} {} {}", m.name, figure(*v), m.unit),
            Err(e) => format!("{} failed: {e}", m.name),
        });
        text.collect::<Vec<_>>().join(", ")
    }

    /// Inbound throughput and connection rate as the published-port table grows. Only the
    /// datapaths with a port table take part (netpath's map, Docker's DNAT rules).
    fn port_sweep(&mut self, datapaths: &mut Datapaths, scenario: &'static Scenario) -> Result<()> {
        let mut counts = self.ctx.cfg.port_counts.clone();
        counts.sort();
        for &count in &counts {
            check_interrupt()?;
            super::step(&format!("publishing {count} ports where there is a port table"));
            for dp in datapaths.iter_mut() {
                let name = dp.name();
                if !self.open(scenario, Some(count), name) {
                    continue;
                }
                let route = dp.routes().get(scenario.route());
                match (dp.port_table(), route) {
                    (Some(table), _) => {
                        if let Err(e) = table.publish_fillers(self.ctx, count.saturating_sub(MEASURED_PORTS)) {
                            let why = Unavailable::Missing(format!("publishing {count} ports failed: {e:#}"));
                            self.results.mark(scenario, Some(count), name, &why);
                        }
                    }
                    (None, Err(why)) => self.results.mark(scenario, Some(count), name, &why),
                    (None, Ok(_)) => {
                        let why = Unavailable::NotApplicable(
                            "the sweep compares netpath's port map with Docker's DNAT rules".into(),
                        );
                        self.results.mark(scenario, Some(count), name, &why);
                    }
                }
            }
            for run in 0..self.ctx.cfg.runs {
                for i in rotation(datapaths.len(), run) {
                    self.measure(&*datapaths[i], scenario, Some(count), run)?;
                }
            }
        }
        for dp in datapaths.iter_mut() {
            let name = dp.name();
            if let Some(Err(e)) = dp.port_table().map(|table| table.remove_fillers(self.ctx)) {
                eprintln!("    removing the filler ports of {name}: {e:#}");
            }
        }
        Ok(())
    }

    /// One network grown through every N once per run (see `scale`); a failure settles the
    /// points not reached yet as missing.
    fn scale_sweep(&mut self, datapaths: &mut Datapaths, scenario: &'static Scenario) -> Result<()> {
        let counts = self.ctx.cfg.scale_counts.clone();
        for run in 0..self.ctx.cfg.runs {
            for i in rotation(datapaths.len(), run) {
                let dp = &datapaths[i];
                let name = dp.name();
                let open: Vec<u32> = counts.iter().copied().filter(|&n| self.open(scenario, Some(n), name)).collect();
                let Some(scaler) = dp.scaler().filter(|_| !open.is_empty()) else {
                    for &count in &counts {
                        let label = self.label(run, scenario, Some(count), name);
                        let outcome = if open.is_empty() {
                            "skipped (settled)".to_string()
                        } else {
                            let why = Unavailable::NotApplicable("the scale sweep measures netpath's CLI".into());
                            self.results.mark(scenario, Some(count), name, &why);
                            describe(&why)
                        };
                        self.progress.step(&label, &outcome);
                    }
                    continue;
                };
                let mut reached = Vec::new();
                let ctx = self.ctx;
                let swept = scale::sweep(ctx, name, scaler, &counts, |count, outcomes| {
                    let first = self.tried.insert((scenario.name, Some(count), name));
                    let outcome = self.settle(scenario, Some(count), name, run, first, outcomes.into());
                    self.progress.step(&self.label(run, scenario, Some(count), name), &outcome);
                    reached.push(count);
                });
                if let Err(e) = swept {
                    for &count in counts.iter().filter(|n| !reached.contains(n)) {
                        let why = Unavailable::Missing(format!("growing the network failed: {e:#}"));
                        self.results.mark(scenario, Some(count), name, &why);
                        self.progress.step(&self.label(run, scenario, Some(count), name), &describe(&why));
                    }
                }
                check_interrupt()?;
            }
        }
        Ok(())
    }

    /// Attaching N endpoints, one command each, as a runtime starting N containers (see
    /// `attach`).
    fn attach_sweep(&mut self, datapaths: &mut Datapaths, scenario: &'static Scenario) -> Result<()> {
        for run in 0..self.ctx.cfg.runs {
            for count in attach::counts(&self.ctx.cfg, scenario.kind) {
                for i in rotation(datapaths.len(), run) {
                    let dp = &mut datapaths[i];
                    let name = dp.name();
                    let label = self.label(run, scenario, Some(count), name);
                    let outcome = if !self.open(scenario, Some(count), name) {
                        "skipped (settled)".to_string()
                    } else if let Some(attacher) = dp.attacher() {
                        let first = self.tried.insert((scenario.name, Some(count), name));
                        let outcomes = attach::measure(self.ctx, name, attacher, scenario.kind, count);
                        self.settle(scenario, Some(count), name, run, first, outcomes.into())
                    } else {
                        let why = Unavailable::NotApplicable(
                            "the attach sweep compares netpath (its CLI and its daemon), the CNI bridge plugin and netavark".into(),
                        );
                        self.results.mark(scenario, Some(count), name, &why);
                        describe(&why)
                    };
                    self.progress.step(&label, &outcome);
                    check_interrupt()?;
                }
            }
        }
        Ok(())
    }

    /// Every resolver started once, asked run after run (rotated), then stopped, whatever
    /// happened: a datapath without one is not applicable, one whose resolver does not start
    /// or does not answer the name right is missing, with the reason.
    fn dns(&mut self, datapaths: &mut Datapaths, scenario: &'static Scenario) -> Result<()> {
        let mut lookups: Vec<Option<Lookup>> = Vec::new();
        for dp in datapaths.iter_mut() {
            let name = dp.name();
            let lookup = if self.open(scenario, None, name) { self.start_resolver(&mut **dp, scenario) } else { None };
            lookups.push(lookup);
        }
        let measured = (|| {
            for run in 0..self.ctx.cfg.runs {
                for i in rotation(datapaths.len(), run) {
                    let name = datapaths[i].name();
                    let label = self.label(run, scenario, None, name);
                    let outcome = match &lookups[i] {
                        Some(lookup) if self.open(scenario, None, name) => {
                            let first = self.tried.insert((scenario.name, None, name));
                            let measured = dns::measure(&self.ctx.cfg, lookup);
                            self.settle(scenario, None, name, run, first, measured)
                        }
                        _ => "skipped (settled)".into(),
                    };
                    self.progress.step(&label, &outcome);
                    check_interrupt()?;
                }
            }
            Ok(())
        })();
        for dp in datapaths.iter_mut() {
            if let Some(resolver) = dp.resolver() {
                resolver.stop(self.ctx);
            }
        }
        measured
    }

    /// Starts `dp`'s resolver and checks it answers; `None`, with the cell settled, when
    /// there is none or it does not work.
    fn start_resolver(&mut self, dp: &mut dyn Datapath, scenario: &'static Scenario) -> Option<Lookup> {
        let name = dp.name();
        let Some(resolver) = dp.resolver() else {
            let why = Unavailable::NotApplicable(
                "the dns scenario compares netpath's resolver (netpath daemon) with Docker's embedded one".into(),
            );
            self.results.mark(scenario, None, name, &why);
            return None;
        };
        super::step(&format!("starting the resolver of {name}"));
        let started = resolver.start(self.ctx).and_then(|lookup| {
            lookup.wait_answered()?;
            Ok(lookup)
        });
        match started {
            Ok(lookup) => Some(lookup),
            Err(e) => {
                eprintln!("    the resolver of {name} does not answer: {e:#}");
                let why = Unavailable::Missing(format!("the resolver does not answer: {e:#}"));
                self.results.mark(scenario, None, name, &why);
                None
            }
        }
    }
}

/// The datapath's account of a run, from `before` to now, into `measured`; a run whose
/// account cannot be read is refused, as nothing shows it took the path it claims.
fn account(ctx: &Ctx, monitor: &dyn Monitor, before: Result<Reading>, measured: &mut Measured) {
    match before.and_then(|before| Ok((before, monitor.read(ctx)?))) {
        Ok((before, after)) => monitor.check(&before, &after, measured),
        Err(e) => measured.refuse(&format!("the datapath's own account could not be read: {e:#}")),
    }
}

fn describe(why: &Unavailable) -> String {
    match why {
        Unavailable::Missing(r) => format!("missing: {r}"),
        Unavailable::NotApplicable(r) => format!("n/a: {r}"),
    }
}
