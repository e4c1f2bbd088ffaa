//! The `dns` scenario: how fast a container's resolver answers the name of another container
//! of its network. A client of the bench's own, on a thread inside the asking container's
//! namespace, sends A queries over UDP: first one after another, each waiting for its answer
//! (latency), then for a fixed window with a bounded number in flight (rate). Every answer
//! must carry the other container's address; anything else, and every timeout, is a failure,
//! counted and reported.
mod message;

use std::{
    collections::HashMap,
    io::ErrorKind,
    net::{Ipv4Addr, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};

use super::{
    Config,
    attach::percentile,
    netns::{self, Netns},
    scenario::{Measured, Outcome},
};

/// Queries of the latency series, one after another.
const QUERIES: usize = 2000;
const QUICK_QUERIES: usize = 500;
/// How long one query waits for its answer before it counts as lost.
const TIMEOUT: Duration = Duration::from_millis(500);
/// The latency series stops here, whatever is left: a resolver that times out on every query
/// would otherwise take QUERIES × TIMEOUT.
const SERIES_LIMIT: Duration = Duration::from_secs(20);
/// Queries in flight at once in the rate window.
const OUTSTANDING: usize = 16;
/// Above this share of failed queries, the figures are refused: the percentiles of the
/// answered ones would hide the lost.
const FAILURE_LIMIT: f64 = 0.01;
/// How long a resolver just started gets to answer its first query correctly.
const READY_LIMIT: Duration = Duration::from_secs(10);
/// Queries asked, unmeasured, once a resolver answers: its first queries pay for what one
/// that has run for a while paid long ago (a runtime growing its stacks and pools, a page
/// cache filling), which would land in the first run's figures alone.
const WARM_UP: u16 = 200;

/// A name a container asks its resolver, and the address the answer must carry.
#[derive(Clone, Debug)]
pub struct Lookup {
    /// The asking container's namespace.
    pub client: Netns,
    pub server: Ipv4Addr,
    pub name: String,
    pub expected: Ipv4Addr,
}

impl Lookup {
    /// Runs `f` with a UDP socket connected to the resolver, on a thread inside the client's
    /// namespace (the socket is made there, and so sends from there).
    fn asking<T: Send>(&self, f: impl FnOnce(&Asker) -> Result<T> + Send) -> Result<T> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    netns::enter(self.client.path())?;
                    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
                    socket.connect((self.server, 53))?;
                    f(&Asker { socket, lookup: self })
                })
                .join()
                .unwrap_or_else(|_| Err(anyhow!("the DNS client thread panicked")))
        })
        .with_context(|| format!("asking {} for {:?} from {}", self.server, self.name, self.client.path().display()))
    }

    /// Waits until the resolver answers the name with the expected address (a resolver just
    /// started may not listen yet), then warms it up.
    pub fn wait_answered(&self) -> Result<()> {
        self.asking(|asker| {
            let deadline = Instant::now() + READY_LIMIT;
            while let Err(e) = asker.ask(0) {
                if Instant::now() > deadline {
                    bail!("no right answer within {}s: {e:#}", READY_LIMIT.as_secs());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (1..=WARM_UP).try_for_each(|id| asker.ask(id).map(drop).context("warming up"))
        })
    }
}

/// The socket of one client thread, and what it asks.
struct Asker<'a> {
    socket: UdpSocket,
    lookup: &'a Lookup,
}

impl Asker<'_> {
    fn send(&self, id: u16) -> Result<()> {
        self.socket.send(&message::query(id, &self.lookup.name)?)?;
        Ok(())
    }

    /// The next answer within `wait`, its ID and whether it carried the expected address;
    /// `None` on a timeout.
    fn receive(&self, wait: Duration) -> Result<Option<(u16, Result<()>)>> {
        self.socket.set_read_timeout(Some(wait.max(Duration::from_micros(1))))?;
        let mut buf = [0u8; 512];
        let len = match self.socket.recv(&mut buf) {
            Ok(len) => len,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return Ok(None),
            // A port unreachable comes back on the connected socket: nobody answers there.
            Err(e) => return Err(e.into()),
        };
        let answer = &buf[..len];
        let id = message::id(answer).context("an answer shorter than a header")?;
        let checked = message::first_a(answer).and_then(|ip| match ip == self.lookup.expected {
            true => Ok(()),
            false => Err(anyhow!("answered {ip}, not {}", self.lookup.expected)),
        });
        Ok(Some((id, checked)))
    }

    /// One query, waiting for its own answer (a late answer to an earlier one is skipped).
    fn ask(&self, id: u16) -> Result<Duration> {
        let sent = Instant::now();
        self.send(id)?;
        loop {
            let left = TIMEOUT.saturating_sub(sent.elapsed());
            match self.receive(left)? {
                Some((got, checked)) if got == id => return checked.map(|()| sent.elapsed()),
                Some(_) if !left.is_zero() => continue,
                _ => bail!("no answer within {} ms", TIMEOUT.as_millis()),
            }
        }
    }
}

/// What a series of queries one after another gave.
struct Series {
    /// Round trips of the answered queries, µs, sorted.
    round_trips: Vec<f64>,
    failed: usize,
    first_failure: Option<String>,
}

fn series(asker: &Asker, count: usize) -> Series {
    let started = Instant::now();
    let mut series = Series { round_trips: Vec::with_capacity(count), failed: 0, first_failure: None };
    for i in 0..count {
        if started.elapsed() > SERIES_LIMIT {
            series.failed += count - i;
            series.first_failure.get_or_insert(format!(
                "{} queries not asked within {}s",
                count - i,
                SERIES_LIMIT.as_secs()
            ));
            break;
        }
        match asker.ask(i as u16) {
            Ok(took) => series.round_trips.push(took.as_secs_f64() * 1e6),
            Err(e) => {
                series.failed += 1;
                series.first_failure.get_or_insert(format!("{e:#}"));
            }
        }
    }
    series.round_trips.sort_by(f64::total_cmp);
    series
}

/// What the rate window gave.
struct Window {
    sent: usize,
    answered: usize,
    /// Wrong answers, and queries whose answer did not come within the timeout.
    failed: usize,
    first_failure: Option<String>,
    seconds: f64,
}

/// Queries for `length`, at most OUTSTANDING in flight, answers matched by ID; what is still
/// in flight when the window closes counts for nothing.
fn window(asker: &Asker, length: Duration) -> Result<Window> {
    let started = Instant::now();
    let mut w = Window { sent: 0, answered: 0, failed: 0, first_failure: None, seconds: 0.0 };
    let mut in_flight: HashMap<u16, Instant> = HashMap::new();
    let mut next: u16 = 0;
    while started.elapsed() < length {
        while in_flight.len() < OUTSTANDING {
            asker.send(next)?;
            in_flight.insert(next, Instant::now());
            next = next.wrapping_add(1);
            w.sent += 1;
        }
        let oldest = in_flight.values().min().copied().unwrap_or_else(Instant::now);
        let wait = (oldest + TIMEOUT).saturating_duration_since(Instant::now());
        match asker.receive(wait.min(length.saturating_sub(started.elapsed())))? {
            Some((id, checked)) if in_flight.remove(&id).is_some() => match checked {
                Ok(()) => w.answered += 1,
                Err(e) => {
                    w.failed += 1;
                    w.first_failure.get_or_insert(format!("{e:#}"));
                }
            },
            // An answer to a query already given up on.
            Some(_) => {}
            None => {
                let now = Instant::now();
                let before = in_flight.len();
                in_flight.retain(|_, sent| now.duration_since(*sent) < TIMEOUT);
                if in_flight.len() < before {
                    w.failed += before - in_flight.len();
                    w.first_failure.get_or_insert(format!("no answer within {} ms", TIMEOUT.as_millis()));
                }
            }
        }
    }
    w.seconds = started.elapsed().as_secs_f64();
    Ok(w)
}

/// Queries of the latency series in a run.
fn queries(cfg: &Config) -> usize {
    if cfg.quick { QUICK_QUERIES } else { QUERIES }
}

/// The method, in words, for the report.
pub fn method(cfg: &Config) -> String {
    format!(
        "dns: two containers of one network, one asking its resolver over UDP for the other's name (an A query built by the bench, xtask/src/bench/dns), from a thread inside the asking container's namespace; netpath: endpoints attached with `--name`, `netpath daemon` running (its upstream the outside namespace, where nothing answers DNS), the network's gateway asked; Docker: a user-defined network, `docker run --network`, 127.0.0.11 asked (dockerd's embedded resolver); each resolver is started once and must answer the name with the other container's address before it is measured (then {WARM_UP} queries warm it up, unmeasured), and so must every answer; latency: {} queries one after another, each waiting at most {} ms for its answer, p50 and p99 of the round trip; rate: answers per second over {} s with {OUTSTANDING} queries in flight, answers matched by ID; timeouts and wrong answers are counted, and a run with more than {}% of them gives no figure",
        queries(cfg),
        TIMEOUT.as_millis(),
        cfg.seconds,
        FAILURE_LIMIT * 100.0
    )
}

/// One run of the scenario: p50 and p99 of the series (µs), and the window's answers per
/// second, with the counts behind them.
pub fn measure(cfg: &Config, lookup: &Lookup) -> Measured {
    let count = queries(cfg);
    let length = Duration::from_secs(cfg.seconds.into());
    let ran = lookup.asking(|asker| Ok((series(asker, count), window(asker, length)?)));
    let (series, window) = match ran {
        Ok(ran) => ran,
        Err(e) => return Measured::from(vec![Err(format!("{e:#}")); 3]),
    };
    let answered = series.round_trips.len();
    let outcomes: Vec<Outcome> = if answered == 0 {
        vec![Err(format!("no query of {count} answered: {}", series.first_failure.clone().unwrap_or_default())); 2]
    } else {
        vec![Ok(percentile(&series.round_trips, 0.50)), Ok(percentile(&series.round_trips, 0.99))]
    };
    let rate = match window.answered {
        0 => Err(format!("no query answered in the window: {}", window.first_failure.clone().unwrap_or_default())),
        n => Ok(n as f64 / window.seconds),
    };
    let mut measured = Measured::from(outcomes.into_iter().chain([rate]).collect::<Vec<_>>());
    measured.saw("latency: queries asked one after another", count as u64);
    measured.saw("latency: queries failed (timeout or wrong answer)", series.failed as u64);
    measured.saw("rate: queries sent", window.sent as u64);
    measured.saw("rate: queries answered", window.answered as u64);
    measured.saw("rate: queries failed (timeout or wrong answer)", window.failed as u64);
    for failure in [&series.first_failure, &window.first_failure].into_iter().flatten() {
        measured.saw("first failure", failure.as_str());
    }
    let failed = series.failed as f64 / count as f64;
    let window_failed = window.failed as f64 / window.sent.max(1) as f64;
    if failed > FAILURE_LIMIT || window_failed > FAILURE_LIMIT {
        measured.refuse(&format!(
            "{:.1}% of the series' queries and {:.1}% of the window's failed (more than {}%): {}",
            failed * 100.0,
            window_failed * 100.0,
            FAILURE_LIMIT * 100.0,
            series.first_failure.or(window.first_failure).unwrap_or_default()
        ));
    }
    measured
}
