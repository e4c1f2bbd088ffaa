//! The load generators, run in the client's namespace against a [`Target`], each returning
//! its figure (and, for the rates, the work behind it): iperf3 (TCP throughput, UDP packet
//! rate), sockperf (latency percentiles) and the workspace's np-connrate (connection rate, and
//! a reachability probe) and np-blindack (an idle connection under spoofed blind ACKs).
use std::{
    process::Command,
    thread,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use super::{
    Ctx,
    datapath::{Target, Uplink},
    process::{root_cause, stdout_within},
};

/// Fewer bytes than this in a whole TCP run means the path does not carry bulk data.
const STALLED_BYTES: f64 = 1024.0 * 1024.0;
/// UDP payload of the packet-rate scenario: small packets make the per-packet cost show.
const UDP_PAYLOAD: &str = "64";
/// The flood's bounds: at most this many datagrams, to ports nothing publishes.
const FLOOD_PACKETS: &str = "20000000";
const FLOOD_PORTS: &str = "20000-29999";
/// The blind-ACK flood's bounds: more tuples than a 262,144-entry connection table holds
/// connections (two entries each), within this many seconds; the idle connection first sits
/// this long.
const BLIND_ACK_TUPLES: &str = "150000";
const BLIND_ACK_SECONDS: &str = "30";
const BLIND_ACK_IDLE: &str = "3";
/// Concurrent connections of the connection-rate client: one per core.
const CONNRATE_THREADS: &str = "2";
/// The CPU both ends of the latency test run on. Across CPUs, this VM's wake-up of the other
/// CPU (~30 µs, and bimodal) would swamp the path's own cost of a few microseconds.
pub const LATENCY_CPU: &str = "0";

/// A rate and the work done to reach it (bytes, packets, connections), for the CPU cost per
/// unit of work.
#[derive(Clone, Copy, Debug)]
pub struct Work {
    pub figure: f64,
    pub amount: f64,
}

/// Whether a request and its response pass over the target's path (np-connrate's port).
pub fn probe(ctx: &Ctx, target: &Target) -> Result<()> {
    let addr = format!("{}:{}", target.addr, target.connrate_port);
    let mut cmd = target.client.cmd(&ctx.connrate, &["probe", "--addr", &addr, "--timeout-ms", "2000"]);
    run("a TCP request/response", target, target.connrate_port, &mut cmd, Duration::from_secs(10)).map(drop)
}

/// Runs a load generator; an error says what went from where to where, and the tool's words.
fn run(what: &str, target: &Target, port: u16, cmd: &mut Command, limit: Duration) -> Result<String> {
    stdout_within(cmd, limit).map_err(|e| {
        anyhow!("{what} from {} to {}:{port} failed: {}", target.client.path().display(), target.addr, root_cause(&e))
    })
}

/// A time limit for a tool asked to run `seconds`: the run, its set-up and a margin.
fn limit(seconds: u32) -> Duration {
    Duration::from_secs(u64::from(seconds) + 20)
}

fn iperf3(target: &Target, seconds: u32, extra: &[&str]) -> Result<Value> {
    let (addr, port, time) = (target.addr.to_string(), target.iperf_port.to_string(), seconds.to_string());
    let mut args = vec!["-c", &addr, "-p", &port, "-t", &time, "-J", "--connect-timeout", "2000"];
    args.extend(extra);
    let out = run("iperf3", target, target.iperf_port, &mut target.client.cmd("iperf3", &args), limit(seconds))?;
    let json: Value = serde_json::from_str(&out).context("iperf3 -J output")?;
    if let Some(error) = json["error"].as_str() {
        bail!("iperf3: {error}");
    }
    Ok(json)
}

/// TCP throughput in Gbit/s as the receiver counted it, over `streams` parallel streams, and
/// the bytes received.
pub fn tcp_throughput(target: &Target, streams: u32, seconds: u32) -> Result<Work> {
    let json = iperf3(target, seconds, &["-P", &streams.to_string()])?;
    // A path that passes the handshake and a few segments but stalls is broken, not slow:
    // any working path here moves gigabytes a second, this is under 1 MiB in the whole run.
    let bytes = json["end"]["sum_received"]["bytes"].as_f64().unwrap_or(0.0);
    if bytes < STALLED_BYTES {
        bail!(
            "iperf3 connected to {}:{} but bulk data stalls: {bytes} bytes arrived in {seconds} s",
            target.addr,
            target.iperf_port
        );
    }
    let bps = json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3: no end.sum_received.bits_per_second")?;
    Ok(Work { figure: bps / 1e9, amount: bytes })
}

/// Small UDP datagrams as fast as the sender can go; thousands of packets per second that
/// arrived (sent minus lost, as the receiver reported them), and the packets that arrived.
pub fn udp_rate(target: &Target, seconds: u32) -> Result<Work> {
    let json = iperf3(target, seconds, &["-u", "-l", UDP_PAYLOAD, "-b", "0"])?;
    let sum = &json["end"]["sum"];
    let (packets, lost, secs) = (sum["packets"].as_f64(), sum["lost_packets"].as_f64(), sum["seconds"].as_f64());
    let (Some(packets), Some(lost), Some(secs)) = (packets, lost, secs) else {
        bail!("iperf3: no packets, lost_packets, seconds in end.sum: {sum}");
    };
    if packets - lost <= 0.0 {
        bail!("iperf3: no UDP datagram arrived");
    }
    Ok(Work { figure: (packets - lost) / secs / 1e3, amount: packets - lost })
}

/// sockperf ping-pong (UDP, one message in flight, both ends on [`LATENCY_CPU`]): the 50th
/// and 99th percentile of the one-way latency (half the round trip) in microseconds.
pub fn latency(target: &Target, seconds: u32) -> Result<[f64; 2]> {
    let (addr, port, time) = (target.addr.to_string(), target.sockperf_port.to_string(), seconds.to_string());
    let mut cmd = target
        .client
        .cmd("taskset", &["-c", LATENCY_CPU, "sockperf", "ping-pong", "-i", &addr, "-p", &port, "-t", &time]);
    let out = run("sockperf", target, target.sockperf_port, &mut cmd, limit(seconds))?;
    let percentile = |which: &str| {
        out.lines()
            .find_map(|l| l.split_once(&format!("percentile {which} =")).map(|(_, v)| v.trim().parse::<f64>()))
            .with_context(|| {
                format!("sockperf printed no {which} percentile; last line: {}", out.lines().last().unwrap_or_default())
            })?
            .with_context(|| format!("sockperf's {which} percentile"))
    };
    Ok([percentile("50.000")?, percentile("99.000")?])
}

/// New connections per second, each: connect, a 64-byte request, a 64-byte response, close;
/// and how many completed.
pub fn conn_rate(ctx: &Ctx, target: &Target, seconds: u32) -> Result<Work> {
    let addr = format!("{}:{}", target.addr, target.connrate_port);
    let time = seconds.to_string();
    let mut cmd = target
        .client
        .cmd(&ctx.connrate, &["client", "--addr", &addr, "--seconds", &time, "--threads", CONNRATE_THREADS]);
    let out = run("np-connrate", target, target.connrate_port, &mut cmd, limit(seconds))?;
    let json: Value = serde_json::from_str(&out).with_context(|| format!("np-connrate output: {out}"))?;
    let field = |name: &str| json[name].as_f64().with_context(|| format!("np-connrate printed no {name}: {out}"));
    Ok(Work { figure: field("per_second")?, amount: field("connections")? })
}

/// One run of the blind-ACK scenario, as np-blindack reported it.
#[derive(Clone, Debug)]
pub struct BlindAckRun {
    /// Spoofed tuples flooded (a SYN and a blind ACK each), and how many a second.
    pub tuples: f64,
    pub per_second: f64,
    /// Whether the connection that sat idle through the flood still got its response, and
    /// what went wrong when it did not.
    pub survived: bool,
    pub error: Option<String>,
}

/// An established connection to the target's np-connrate port sits idle while the client's
/// namespace floods that port with spoofed SYNs and blind ACKs, from addresses of its own
/// subnet that nobody holds; then it makes its request.
pub fn blind_ack_flood(ctx: &Ctx, target: &Target) -> Result<BlindAckRun> {
    probe(ctx, target)?;
    let addr = target.addr.to_string();
    let route: Value = serde_json::from_str(&target.client.run(&["ip", "-j", "route", "get", &addr])?)?;
    let field = |name: &str| route[0][name].as_str().with_context(|| format!("`ip route get {addr}` has no {name}"));
    let (dev, source) = (field("dev")?, field("prefsrc")?);
    let next_hop = route[0]["gateway"].as_str().unwrap_or(&addr);
    let neigh: Value =
        serde_json::from_str(&target.client.run(&["ip", "-j", "neigh", "show", "to", next_hop, "dev", dev])?)?;
    let mac = neigh[0]["lladdr"].as_str().with_context(|| format!("no neighbour entry for {next_hop} on {dev}"))?;
    let spoof = source.rsplit_once('.').map(|(net, _)| net).context("a source address without dots")?;
    let to = format!("{addr}:{}", target.connrate_port);
    let args = [
        "--addr",
        &to,
        "--iface",
        dev,
        "--dst-mac",
        mac,
        "--spoof",
        spoof,
        "--tuples",
        BLIND_ACK_TUPLES,
        "--seconds",
        BLIND_ACK_SECONDS,
        "--idle",
        BLIND_ACK_IDLE,
    ];
    let mut cmd = target.client.cmd(ctx.connrate.with_file_name("np-blindack"), &args);
    let out = run("np-blindack", target, target.connrate_port, &mut cmd, Duration::from_secs(60))?;
    let json: Value = serde_json::from_str(out.trim()).with_context(|| format!("np-blindack output: {out}"))?;
    let number = |name: &str| json[name].as_f64().with_context(|| format!("np-blindack printed no {name}: {out}"));
    Ok(BlindAckRun {
        tuples: number("tuples")?,
        per_second: number("per_second")?,
        survived: json["survived"].as_bool().with_context(|| format!("np-blindack printed no survived: {out}"))?,
        error: json["error"].as_str().map(String::from),
    })
}

/// One run of the flood scenario: the rates with and without the flood, and what shows the
/// flood was there.
#[derive(Clone, Debug)]
pub struct FloodRun {
    /// Connections per second under the flood, and just before it.
    pub flooded: f64,
    pub calm: f64,
    /// What np-flood reported: datagrams sent, and when it began and ended.
    pub sent: u64,
    pub flood: Span,
    /// When the measurement under the flood ran, from before np-connrate started until after
    /// it returned.
    pub measurement: Span,
    /// The uplink's name and the packets it received while the flood ran.
    pub uplink: String,
    pub received: u64,
}

/// A stretch of wall-clock time, Unix seconds: the bench and np-flood read the same clock.
#[derive(Clone, Copy, Debug)]
pub struct Span {
    pub began: f64,
    pub ended: f64,
}

impl FloodRun {
    /// Why the figure under the flood does not count, if it does not: a flood that began after
    /// the measurement or ended before it loaded only part of it.
    pub fn refusal(&self) -> Option<String> {
        let (flood, measured) = (self.flood, self.measurement);
        let what = format!("np-flood sent {} datagrams in {:.2} s", self.sent, flood.ended - flood.began);
        if flood.began > measured.began {
            Some(format!("the flood began {:.2} s after the measurement did ({what})", flood.began - measured.began))
        } else if flood.ended < measured.ended {
            Some(format!("the flood ended {:.2} s before the measurement did ({what})", measured.ended - flood.ended))
        } else {
            None
        }
    }
}

/// The connection rate to the target's published port while the outside floods the server
/// container's own address (which nothing outside may reach unasked) with 64-byte datagrams,
/// and the rate without the flood, measured just before; with np-flood's account of the flood
/// and the uplink's received packets while it ran.
pub fn conn_rate_under_flood(ctx: &Ctx, target: &Target, seconds: u32) -> Result<FloodRun> {
    let uplink = target.uplink.as_ref().context("the inbound route names no uplink to count the flood on")?;
    let calm = conn_rate(ctx, target, seconds)?.figure;
    // The outside reaches the server's address through the host, as a LAN peer that guesses
    // the host routes the containers' subnet would; removed again below.
    let (server, via) = (format!("{}/32", target.server), target.addr.to_string());
    let routed = target.server != target.addr;
    if routed {
        target.client.run(&["ip", "route", "replace", &server, "via", &via])?;
    }
    let flood = target.client.cmd(
        ctx.connrate.with_file_name("np-flood"),
        &[
            "--addr",
            &target.server.to_string(),
            "--ports",
            FLOOD_PORTS,
            "--packets",
            FLOOD_PACKETS,
            "--seconds",
            &(seconds + 2).to_string(),
        ],
    );
    let received_before = rx_packets(uplink);
    let flooded = thread::scope(|scope| {
        let mut flood = flood;
        let flooding = scope.spawn(move || stdout_within(&mut flood, limit(seconds + 2)));
        // Let the flood reach full speed first.
        thread::sleep(Duration::from_millis(500));
        let began = unix_now();
        let rate = conn_rate(ctx, target, seconds);
        (rate, Span { began, ended: unix_now() }, flooding.join())
    });
    let received = rx_packets(uplink).and_then(|after| {
        after.checked_sub(received_before?).with_context(|| format!("{}'s received count went back", uplink.name))
    });
    if routed {
        let _ = target.client.run(&["ip", "route", "del", &server]);
    }
    let (rate, measurement, flooding) = flooded;
    let report = match flooding {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => bail!("np-flood to {}: {}", target.server, root_cause(&e)),
        Err(_) => bail!("np-flood's thread panicked"),
    };
    let (sent, flood) = flood_report(&report)?;
    Ok(FloodRun {
        flooded: rate?.figure,
        calm,
        sent,
        flood,
        measurement,
        uplink: uplink.name.clone(),
        received: received?,
    })
}

/// np-flood's line: datagrams sent, and when the flood began and ended.
fn flood_report(line: &str) -> Result<(u64, Span)> {
    let json: Value = serde_json::from_str(line.trim()).with_context(|| format!("np-flood output: {line}"))?;
    let field = |name: &str| json[name].as_f64().with_context(|| format!("np-flood printed no {name}: {line}"));
    Ok((field("sent")? as u64, Span { began: field("began")?, ended: field("ended")? }))
}

/// Packets the link has received, from its namespace's /proc/net/dev.
fn rx_packets(link: &Uplink) -> Result<u64> {
    let table = link.ns.run(&["cat", "/proc/net/dev"])?;
    received_packets(&table, &link.name).with_context(|| format!("no {} in /proc/net/dev: {table}", link.name))
}

/// The received-packets column of `ifname` in a /proc/net/dev table.
fn received_packets(table: &str, ifname: &str) -> Option<u64> {
    let line = table.lines().find_map(|l| l.trim_start().strip_prefix(ifname)?.strip_prefix(':'))?;
    // Receive: bytes, packets, errs, …
    line.split_whitespace().nth(1)?.parse().ok()
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flood(flood: (f64, f64), measurement: (f64, f64)) -> FloodRun {
        FloodRun {
            flooded: 900.0,
            calm: 1000.0,
            sent: 1_000_000,
            flood: Span { began: flood.0, ended: flood.1 },
            measurement: Span { began: measurement.0, ended: measurement.1 },
            uplink: "uplink0".into(),
            received: 990_000,
        }
    }

    #[test]
    fn a_flood_that_does_not_last_the_measurement_refuses_its_figure() {
        assert_eq!(flood((100.0, 103.0), (100.5, 101.6)).refusal(), None);
        let early = flood((100.0, 101.0), (100.5, 101.6)).refusal().unwrap();
        assert_eq!(
            early,
            "the flood ended 0.60 s before the measurement did (np-flood sent 1000000 datagrams in 1.00 s)"
        );
        let late = flood((100.7, 103.0), (100.5, 101.6)).refusal().unwrap();
        assert!(late.starts_with("the flood began 0.20 s after the measurement did"), "{late}");
    }

    #[test]
    fn np_flood_and_proc_net_dev_are_read() {
        let (sent, span) =
            flood_report("{\"sent\":42,\"seconds\":1.0,\"per_second\":42,\"began\":5.5,\"ended\":6.5}\n").unwrap();
        assert_eq!((sent, span.began, span.ended), (42, 5.5, 6.5));
        assert!(flood_report("{\"sent\":42}").is_err(), "a line without the times is refused");
        let table = "Inter-|   Receive\n face |bytes    packets errs\n    lo:       0       0    0\nuplink0: 9000 123 0 0 0 0 0 0 77 3 0\n  uplink01: 1 999 0\n";
        assert_eq!(received_packets(table, "uplink0"), Some(123));
        assert_eq!(received_packets(table, "lo"), Some(0));
        assert_eq!(received_packets(table, "eth0"), None);
    }
}
