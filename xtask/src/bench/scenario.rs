//! The scenarios: what each measures, on which path, with which tool, in which unit.
use anyhow::{Result, bail};
use serde::Serialize;
use serde_json::Value;

use super::{
    Ctx, attach,
    cost::{self, ProgramStats},
    datapath::{Attacher, Route, Target},
    traffic::{self, BlindAckRun, FloodRun, Work},
};

#[derive(Clone, Copy, Debug)]
pub struct Metric {
    pub name: &'static str,
    pub unit: &'static str,
    pub higher_is_better: bool,
}

const THROUGHPUT: Metric = Metric { name: "throughput", unit: "Gbit/s", higher_is_better: true };
const CONNECTIONS: Metric = Metric { name: "connections", unit: "conn/s", higher_is_better: true };
const PACKETS: Metric = Metric { name: "packets", unit: "kpps", higher_is_better: true };
const P50: Metric = Metric { name: "p50", unit: "µs", higher_is_better: false };
const P99: Metric = Metric { name: "p99", unit: "µs", higher_is_better: false };
const QUERIES: Metric = Metric { name: "queries", unit: "queries/s", higher_is_better: true };
const TIME: Metric = Metric { name: "time", unit: "s", higher_is_better: false };
/// The whole machine's CPU time per unit of work: what transfers to a bigger machine.
const CPU_PER_GB: Metric = Metric { name: "cpu", unit: "CPU-s/GB", higher_is_better: false };
const CPU_PER_MPKT: Metric = Metric { name: "cpu", unit: "CPU-s/Mpkt", higher_is_better: false };
const CPU_PER_KCONN: Metric = Metric { name: "cpu", unit: "CPU-s/kconn", higher_is_better: false };
/// Run time per packet of the eBPF program on the path (for TCP a "packet" is an skb as the
/// program sees it, often many segments), measured in a second pass with the kernel's BPF
/// run-time statistics on, so the other figures do not pay for them.
pub const PROGRAM: Metric = Metric { name: "program", unit: "ns/packet", higher_is_better: false };

/// Bytes in a GB, packets in a Mpkt, connections in a kconn: the units of the CPU metrics.
const GB: f64 = 1e9;
const MPKT: f64 = 1e6;
const KCONN: f64 = 1e3;
const UNDER_FLOOD: Metric = Metric { name: "under flood", unit: "conn/s", higher_is_better: true };
const KEPT: Metric = Metric { name: "kept", unit: "× without flood", higher_is_better: true };
const BLIND_ACKS: Metric = Metric { name: "blind ACKs", unit: "k tuples/s", higher_is_better: true };
const BLIND_ACK_TUPLES: Metric = Metric { name: "tuples", unit: "k", higher_is_better: true };
/// One detach right before the flood and one right after it, with the conntrack tables as
/// full as it left them: a detach must not cost what the tables hold.
const DETACH_BEFORE: Metric = Metric { name: "detach before", unit: "ms", higher_is_better: false };
const DETACH_AFTER: Metric = Metric { name: "detach after", unit: "ms", higher_is_better: false };
/// The metrics that need a datapath that attaches endpoints.
pub const DETACH_METRICS: [&str; 2] = [DETACH_BEFORE.name, DETACH_AFTER.name];
const ATTACH_P50: Metric = Metric { name: "p50", unit: "ms", higher_is_better: false };
const ATTACH_P99: Metric = Metric { name: "p99", unit: "ms", higher_is_better: false };
const SCALE_ATTACH: Metric = Metric { name: "attach p50", unit: "ms", higher_is_better: false };
const SCALE_ATTACH_GROWTH: Metric = Metric { name: "attach growth", unit: "× first point", higher_is_better: false };
const SCALE_DETACH: Metric = Metric { name: "detach p50", unit: "ms", higher_is_better: false };
const SCALE_DETACH_GROWTH: Metric = Metric { name: "detach growth", unit: "× first point", higher_is_better: false };
const SCALE_GC: Metric = Metric { name: "gc", unit: "s", higher_is_better: false };
const SCALE_LIST: Metric = Metric { name: "endpoint ls", unit: "s", higher_is_better: false };
const SCALE_RESTORE: Metric = Metric { name: "restore", unit: "s", higher_is_better: false };
const SCALE_MAPS: Metric = Metric { name: "pinned maps", unit: "MiB", higher_is_better: false };

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Tcp {
        route: Route,
        streams: u32,
    },
    UdpRate {
        route: Route,
    },
    Latency,
    ConnRate,
    /// The inbound connection rate while the outside floods the server's own address with
    /// unsolicited datagrams, and its ratio to the rate without the flood.
    Flood,
    /// An established connection to a published port sits idle through a flood of spoofed
    /// SYNs and blind ACKs (more than the connection table holds) and still carries data: the
    /// flood's rate and size, given only when it did; and a detach timed before and after the
    /// flood, where the datapath attaches endpoints.
    BlindAck,
    /// Inbound throughput and connection rate with N ports published (a sweep over N).
    PortSweep,
    /// N endpoints attached one after another: per-attach p50 and p99, and the whole series
    /// (a sweep over N).
    AttachSweep,
    /// N endpoints attached at once, N commands launched together: time until the last one
    /// returned.
    AttachConcurrent,
    /// One network grows to N endpoints (a sweep over N, built up once per run): what one
    /// more attach, a detach, gc, a listing and a restore then cost, and the maps' memory.
    Scale,
    /// A container asks its resolver for another container's name: latency one query after
    /// another, and the rate with a bounded number in flight (see `dns`).
    Dns,
}

#[derive(Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub title: &'static str,
    pub kind: Kind,
    pub metrics: &'static [Metric],
}

pub const ALL: &[Scenario] = &[
    Scenario {
        name: "c2c-tcp-1",
        title: "container → container, TCP, 1 stream",
        kind: Kind::Tcp { route: Route::C2c, streams: 1 },
        metrics: &[THROUGHPUT, CPU_PER_GB, PROGRAM],
    },
    Scenario {
        name: "c2c-tcp-4",
        title: "container → container, TCP, 4 streams",
        kind: Kind::Tcp { route: Route::C2c, streams: 4 },
        metrics: &[THROUGHPUT, CPU_PER_GB, PROGRAM],
    },
    Scenario {
        name: "egress-tcp",
        title: "container → outside (masquerade), TCP",
        kind: Kind::Tcp { route: Route::Egress, streams: 1 },
        metrics: &[THROUGHPUT, CPU_PER_GB],
    },
    Scenario {
        name: "ingress-tcp",
        title: "outside → published port, TCP",
        kind: Kind::Tcp { route: Route::Ingress, streams: 1 },
        metrics: &[THROUGHPUT, CPU_PER_GB],
    },
    Scenario {
        name: "host-tcp",
        title: "host → published port on 127.0.0.1, TCP",
        kind: Kind::Tcp { route: Route::HostLocal, streams: 1 },
        metrics: &[THROUGHPUT, CPU_PER_GB],
    },
    Scenario {
        name: "latency",
        title: "container ↔ container, UDP ping-pong latency",
        kind: Kind::Latency,
        metrics: &[P50, P99],
    },
    Scenario {
        name: "connrate",
        title: "container → container, TCP connect + request + close",
        kind: Kind::ConnRate,
        metrics: &[CONNECTIONS, CPU_PER_KCONN],
    },
    Scenario {
        name: "udp-rate",
        title: "container → container, UDP 64-byte packets",
        kind: Kind::UdpRate { route: Route::C2c },
        metrics: &[PACKETS, CPU_PER_MPKT, PROGRAM],
    },
    Scenario {
        name: "udp-in",
        title: "outside → published port, UDP 64-byte packets",
        kind: Kind::UdpRate { route: Route::Ingress },
        metrics: &[PACKETS, CPU_PER_MPKT],
    },
    Scenario {
        name: "flood",
        title: "outside → published port, TCP connect + request + close, under an unsolicited flood",
        kind: Kind::Flood,
        metrics: &[UNDER_FLOOD, KEPT],
    },
    Scenario {
        name: "conntrack-pressure",
        title: "outside → published port, an idle connection through a spoofed blind-ACK flood",
        kind: Kind::BlindAck,
        metrics: &[BLIND_ACKS, BLIND_ACK_TUPLES, DETACH_BEFORE, DETACH_AFTER],
    },
    Scenario {
        name: "ports",
        title: "outside → published port, with N ports published",
        kind: Kind::PortSweep,
        metrics: &[THROUGHPUT, CONNECTIONS],
    },
    Scenario {
        name: "attach",
        title: "attach N endpoints one after another (per attach, and all N)",
        kind: Kind::AttachSweep,
        metrics: &[ATTACH_P50, ATTACH_P99, TIME],
    },
    Scenario {
        name: "attach-concurrent",
        title: "attach N endpoints at once, N commands launched together",
        kind: Kind::AttachConcurrent,
        metrics: &[TIME],
    },
    Scenario {
        name: "scale",
        title: "one network grown to N endpoints: what the next operations cost",
        kind: Kind::Scale,
        metrics: &[
            SCALE_ATTACH,
            SCALE_ATTACH_GROWTH,
            SCALE_DETACH,
            SCALE_DETACH_GROWTH,
            SCALE_GC,
            SCALE_LIST,
            SCALE_RESTORE,
            SCALE_MAPS,
        ],
    },
    Scenario {
        name: "dns",
        title: "container → its resolver, an A query for another container's name (UDP)",
        kind: Kind::Dns,
        metrics: &[P50, P99, QUERIES],
    },
];

impl Scenario {
    pub fn by_name(name: &str) -> Result<&'static Scenario> {
        match ALL.iter().find(|s| s.name == name) {
            Some(s) => Ok(s),
            None => {
                bail!("no scenario {name:?}; there are: {}", ALL.iter().map(|s| s.name).collect::<Vec<_>>().join(", "))
            }
        }
    }

    pub fn is_sweep(&self) -> bool {
        matches!(self.kind, Kind::PortSweep | Kind::AttachSweep | Kind::AttachConcurrent | Kind::Scale)
    }

    /// The path the scenario's traffic takes.
    pub fn route(&self) -> Route {
        match self.kind {
            Kind::Tcp { route, .. } | Kind::UdpRate { route } => route,
            Kind::PortSweep | Kind::Flood | Kind::BlindAck => Route::Ingress,
            Kind::Latency | Kind::ConnRate | Kind::AttachSweep | Kind::AttachConcurrent | Kind::Scale | Kind::Dns => {
                Route::C2c
            }
        }
    }

    /// Whether the runner measures it on every datapath's routes (not a sweep, not dns, which
    /// asks a resolver the datapath starts for it).
    pub fn on_routes(&self) -> bool {
        !self.is_sweep() && !matches!(self.kind, Kind::Dns)
    }

    /// Whether one of the metrics is the cost of the eBPF program on the path.
    pub fn has_program_cost(&self) -> bool {
        self.metrics.iter().any(|m| m.name == PROGRAM.name)
    }

    /// Whether one of the metrics times a detach, for which the datapath must attach endpoints.
    pub fn times_detach(&self) -> bool {
        self.metrics.iter().any(|m| DETACH_METRICS.contains(&m.name))
    }

    /// Runs the load generator(s) once against `target`: one outcome per metric, so a metric
    /// that works keeps its figure when another of the same scenario does not. `program` is
    /// the eBPF program on the path, for the program-cost metric; `detacher` the datapath's
    /// attacher (and its name), for the detach metrics.
    pub fn measure(
        &self,
        ctx: &Ctx,
        target: &Target,
        program: Option<&dyn ProgramStats>,
        detacher: Option<(&str, &dyn Attacher)>,
    ) -> Measured {
        let seconds = ctx.cfg.seconds;
        let figure = |work: Result<Work>| work.map(|w| w.figure).map_err(text);
        let outcomes = match self.kind {
            Kind::Tcp { streams, .. } => self.costed(GB, program, || traffic::tcp_throughput(target, streams, seconds)),
            Kind::UdpRate { .. } => self.costed(MPKT, program, || traffic::udp_rate(target, seconds)),
            Kind::Latency => match traffic::latency(target, seconds) {
                Ok(percentiles) => percentiles.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(text(e)); 2],
            },
            Kind::ConnRate => self.costed(KCONN, program, || traffic::conn_rate(ctx, target, seconds)),
            Kind::Flood => match traffic::conn_rate_under_flood(ctx, target, seconds) {
                Ok(run) => return flood_measured(&run),
                Err(e) => vec![Err(text(e)); 2],
            },
            Kind::BlindAck => {
                let detach = |(name, attacher): (&str, &dyn Attacher)| attach::detach_time(ctx, name, attacher);
                let before = detacher.map(detach);
                let flood = traffic::blind_ack_flood(ctx, target);
                let after = detacher.map(detach);
                let mut measured = match flood {
                    Ok(run) => blind_ack_measured(&run),
                    Err(e) => Measured::from(vec![Err(text(e)); 2]),
                };
                measured.outcomes.extend(detach_outcomes(before, after));
                return measured;
            }
            Kind::PortSweep => vec![
                figure(traffic::tcp_throughput(target, 1, seconds)),
                figure(traffic::conn_rate(ctx, target, seconds)),
            ],
            Kind::AttachSweep | Kind::AttachConcurrent | Kind::Scale | Kind::Dns => {
                vec![Err("the attach and scale sweeps and dns are run by the runner, not measured on a path".into())]
            }
        };
        outcomes.into()
    }

    /// A rate and its CPU cost per `unit` of work from one pass of `traffic`, and where the
    /// scenario has one, the program's cost from a second pass with run-time statistics on.
    fn costed(
        &self,
        unit: f64,
        program: Option<&dyn ProgramStats>,
        traffic: impl Fn() -> Result<Work>,
    ) -> Vec<Outcome> {
        let mut outcomes = match cost::metered(unit, &traffic) {
            Ok(figures) => figures.into_iter().map(Ok).collect(),
            Err(e) => vec![Err(text(e)); 2],
        };
        if self.has_program_cost() {
            outcomes.push(match program {
                Some(program) => cost::program_cost(program, &traffic).map_err(text),
                None => Err(NO_PROGRAM.into()),
            });
        }
        outcomes
    }
}

/// The figures under the flood, refused unless the flood lasted the whole measurement, and
/// what shows how big it was.
fn flood_measured(run: &FloodRun) -> Measured {
    let mut measured = Measured::from(vec![Ok(run.flooded), Ok(run.flooded / run.calm)]);
    measured.saw("np-flood sent (datagrams)", run.sent);
    measured.saw("flood began before the measurement (s)", round3(run.measurement.began - run.flood.began));
    measured.saw("flood ended after the measurement (s)", round3(run.flood.ended - run.measurement.ended));
    measured.saw(&format!("{} received during the flood (packets)", run.uplink), run.received);
    if let Some(why) = run.refusal() {
        measured.refuse(&why);
    }
    measured
}

/// The flood's rate and size, refused unless the idle connection still carried data after it.
fn blind_ack_measured(run: &BlindAckRun) -> Measured {
    let mut measured = Measured::from(vec![Ok(run.per_second / 1e3), Ok(run.tuples / 1e3)]);
    measured.saw("np-blindack flooded (tuples, a SYN and a blind ACK each)", run.tuples);
    measured.saw("the idle connection carried data after the flood", run.survived);
    if !run.survived {
        let error = run.error.as_deref().unwrap_or("no reason given");
        measured
            .refuse(&format!("the idle connection carried no data after {} blind-ACKed tuples: {error}", run.tuples));
    }
    measured
}

/// The detach metrics from a detach timed before the flood and one after; none without an
/// attacher (marked not applicable by the runner).
fn detach_outcomes(before: Option<Result<f64>>, after: Option<Result<f64>>) -> Vec<Outcome> {
    [before, after].into_iter().map(|d| d.unwrap_or_else(|| Err(anyhow::anyhow!(NO_ATTACHER))).map_err(text)).collect()
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// A check made during a run, as found: what was looked at and what it showed.
#[derive(Clone, Debug, Serialize)]
pub struct Seen {
    pub what: String,
    pub value: Value,
}

/// One run of a scenario: a figure (or why not) per metric, and the checks behind them.
#[derive(Debug, Default)]
pub struct Measured {
    pub outcomes: Vec<Outcome>,
    pub seen: Vec<Seen>,
}

impl From<Vec<Outcome>> for Measured {
    fn from(outcomes: Vec<Outcome>) -> Self {
        Self { outcomes, seen: Vec::new() }
    }
}

impl Measured {
    pub fn saw(&mut self, what: &str, value: impl Into<Value>) {
        self.seen.push(Seen { what: what.into(), value: value.into() });
    }

    /// Turns every figure of this run into a failure, for `why`: a check behind it failed.
    pub fn refuse(&mut self, why: &str) {
        for outcome in self.outcomes.iter_mut().filter(|o| o.is_ok()) {
            *outcome = Err(why.into());
        }
    }
}

/// Why a datapath has no program-cost figure.
pub const NO_PROGRAM: &str = "no eBPF program on this path";
pub const NO_ATTACHER: &str = "the bench attaches no endpoints of its own on this datapath";

fn text(e: anyhow::Error) -> String {
    format!("{e:#}")
}

/// One metric's figure from one run, or why there is none.
pub type Outcome = Result<f64, String>;
