//! Crash safety and concurrency: commands killed at any instant, and many at once.
//!
//! The fault test runs 1,000 attach/detach operations in a few workers, some stopped dead
//! after a chosen step (`NETPATH_FAULT_AT`, honoured by debug builds), some SIGKILLed at a
//! random instant. Every later command must still work, every killed attach must be redoable,
//! and after `gc` nothing may be left: no link, pin, map entry, counter or row.
use std::{
    collections::BTreeSet,
    os::unix::process::ExitStatusExt,
    process::{Output, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use netpath_tests::Topology;
use serde_json::Value;

/// The steps a command of each kind can be stopped after.
fn steps(prefix: &str) -> Vec<&'static str> {
    netpath::fault::STEPS.iter().copied().filter(|s| s.starts_with(prefix)).collect()
}

const WORKERS: usize = 4;
const IDS_PER_WORKER: usize = 5;
const OPERATIONS: usize = 1000;

/// xorshift64*: reproducible randomness without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The attach of worker `w`'s `i`th id: always the same request, so a repeat is the same
/// endpoint; every other id publishes a port of its own.
fn attach_args(w: usize, i: usize, id: &str, path: &str) -> Vec<String> {
    let mut args: Vec<String> =
        ["attach", "--network", "web", "--netns", path, "--id", id].iter().map(|s| s.to_string()).collect();
    if i.is_multiple_of(2) {
        args.extend(["-p".to_string(), format!("{}:80", 20000 + w * 10 + i)]);
    }
    args
}

#[derive(Default)]
struct Figures {
    operations: AtomicUsize,
    step_kills: AtomicUsize,
    random_kills: AtomicUsize,
}

fn killed(out: &Output) -> bool {
    out.status.signal() == Some(libc::SIGKILL)
}

#[test]
fn a_thousand_killed_operations_leave_nothing_behind() {
    let started = Instant::now();
    let mut t = Topology::new("flt");
    t.network("web", &["--subnet", "10.87.0.0/24"]);
    let ids: Vec<Vec<(String, String)>> = (0..WORKERS)
        .map(|w| {
            (0..IDS_PER_WORKER)
                .map(|i| {
                    let id = format!("w{w}i{i}");
                    let path = t.netns(&id);
                    (id, path)
                })
                .collect()
        })
        .collect();
    let figures = Figures::default();
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    println!("seed {seed}");
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(w, mine)| {
                let (t, figures) = (&t, &figures);
                s.spawn(move || {
                    let mut rng = Rng(seed.wrapping_add(w as u64 * 0x9e37_79b9));
                    let (attach_steps, detach_steps) = (steps("attach:"), steps("detach:"));
                    let mut failures = Vec::new();
                    for _ in 0..OPERATIONS / WORKERS {
                        let i = rng.below(IDS_PER_WORKER as u64) as usize;
                        let (id, path) = &mine[i];
                        let attaching = rng.below(2) == 0;
                        let args = match attaching {
                            true => attach_args(w, i, id, path),
                            false => vec!["detach".to_string(), "--id".into(), id.clone()],
                        };
                        let args: Vec<&str> = args.iter().map(String::as_str).collect();
                        let mut cmd = t.netpath_cmd(&args);
                        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
                        figures.operations.fetch_add(1, Ordering::Relaxed);
                        match rng.below(6) {
                            0 | 1 => {
                                let steps = if attaching { &attach_steps } else { &detach_steps };
                                let step = steps[rng.below(steps.len() as u64) as usize];
                                let out = cmd.env("NETPATH_FAULT_AT", step).output().unwrap();
                                if killed(&out) {
                                    figures.step_kills.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            2 => {
                                let mut child = cmd.spawn().unwrap();
                                std::thread::sleep(Duration::from_micros(rng.below(40_000)));
                                let _ = child.kill();
                                if killed(&child.wait_with_output().unwrap()) {
                                    figures.random_kills.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            _ => {
                                let out = cmd.output().unwrap();
                                let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
                                let fine = out.status.success() || (!attaching && err.contains("does not exist"));
                                if !fine {
                                    failures.push(format!("{args:?}: {err}"));
                                }
                            }
                        }
                    }
                    failures
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert!(failures.is_empty(), "commands failed after kills: {failures:#?}");

    // Every id can be attached (whatever a kill left of it) and is really wired.
    let mut addresses = BTreeSet::new();
    for (w, mine) in ids.iter().enumerate() {
        for (i, (id, path)) in mine.iter().enumerate() {
            let args = attach_args(w, i, id, path);
            let ep = t.np_json(&args.iter().map(String::as_str).collect::<Vec<_>>());
            let ip = ep["ip"].as_str().unwrap().to_string();
            let addrs = t.exec(id, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
            assert!(addrs.contains(&format!("inet {ip}/")), "{id}: {addrs}");
            addresses.insert(ip);
        }
    }
    assert_eq!(addresses.len(), WORKERS * IDS_PER_WORKER);
    // Every re-attached endpoint is reachable: each reaches another.
    t.assert_ring_reachable(t.np_json(&["endpoint", "ls"]).as_array().unwrap());
    for (id, _) in ids.iter().flatten() {
        t.np(&["detach", "--id", id]);
    }

    let gc = t.np_json(&["gc"]);
    let found =
        ["abandoned_networks", "abandoned_endpoints", "released_endpoints", "links", "pinned_links", "map_entries"]
            .iter()
            .map(|k| gc[k].as_array().unwrap().len() as u64)
            .sum::<u64>();
    println!(
        "fault injection: {} operations, {} stopped after a step, {} killed at a random instant, {found} object(s) \
         only gc removed ({gc}), {:.1}s",
        figures.operations.load(Ordering::Relaxed),
        figures.step_kills.load(Ordering::Relaxed),
        figures.random_kills.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    assert!(figures.step_kills.load(Ordering::Relaxed) > 100, "the fault switch did not stop commands");

    // Nothing leaked: rows, links, pins, map entries.
    assert_eq!(t.np_json(&["endpoint", "ls"]), Value::Array(vec![]));
    let links = t.exec("host", &["ip", "-o", "link", "show"]);
    assert!(!links.contains(": npv"), "veths left: {links}");
    for map in ["ENDPOINTS", "VETHS", "PORTMAP", "CT", "CT_NEW"] {
        assert_eq!(t.map_entries(map), Vec::<Value>::new(), "{map}");
    }
    let pins = std::fs::read_dir(t.datapath_dir().join("links")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(pins, 0, "pinned links left");
    assert_eq!(t.np(&["gc"]).trim(), "nothing to collect");
    t.teardown();
}

#[test]
fn a_hundred_concurrent_attaches_and_detaches_on_one_network() {
    let mut t = Topology::new("hun");
    t.network("web", &["--subnet", "10.88.0.0/24"]);
    let old: Vec<String> = (0..50).map(|i| t.netns(&format!("o{i}"))).collect();
    let new: Vec<String> = (0..50).map(|i| t.netns(&format!("n{i}"))).collect();
    for (i, path) in old.iter().enumerate() {
        t.np(&["attach", "--network", "web", "--netns", path, "--id", &format!("o{i}")]);
    }
    // 50 detaches and 50 attaches at once, interleaved.
    let ids: Vec<String> = (0..50).flat_map(|i| [format!("o{i}"), format!("n{i}")]).collect();
    let children: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(k, id)| {
            let args = match k % 2 {
                0 => vec!["detach", "--id", id],
                _ => vec!["attach", "--network", "web", "--netns", &new[k / 2], "--id", id, "--format", "json"],
            };
            (id, t.netpath_cmd(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap())
        })
        .collect();
    let mut addresses = BTreeSet::new();
    for (id, child) in children {
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{id}: {err}");
        assert!(!err.contains("locked"), "{id}: {err}");
        if id.starts_with('n') {
            let ep: Value = serde_json::from_slice(&out.stdout).unwrap();
            addresses.insert(ep["ip"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(addresses.len(), 50, "distinct addresses: {addresses:?}");
    let listed = t.np_json(&["endpoint", "ls"]);
    let listed: BTreeSet<String> =
        listed.as_array().unwrap().iter().map(|e| e["ip"].as_str().unwrap().to_string()).collect();
    assert_eq!(listed, addresses);
    assert_eq!(t.map_entries("ENDPOINTS").len(), 50);
    t.assert_ring_reachable(t.np_json(&["endpoint", "ls"]).as_array().unwrap());
    t.teardown();
}

/// Whether a child is still running after `wait`.
fn still_running(child: &mut std::process::Child, wait: Duration) -> bool {
    std::thread::sleep(wait);
    child.try_wait().unwrap().is_none()
}

#[test]
fn detach_and_network_rm_wait_for_an_attach_in_progress() {
    let mut t = Topology::new("race");
    t.network("web", &["--subnet", "10.90.0.0/24"]);
    t.network("other", &["--subnet", "10.90.1.0/24"]);
    let path = t.netns("a");
    // An attach held half-way: its veth exists, its row is still `creating`.
    let attach = t.hold_at(
        "attach:veth",
        &["attach", "--network", "web", "--netns", &path, "--id", "a", "-p", "8098:80", "--format", "json"],
    );
    let row = |t: &Topology| {
        let rows = t.np_json(&["endpoint", "ls"]);
        rows.as_array().unwrap().iter().find(|e| e["id"] == "a").cloned()
    };
    let held = row(&t).expect("the paused attach's row");
    assert_eq!(held["state"], "creating", "{held}");
    let host_veth = held["host_veth"].as_str().unwrap().to_string();
    assert!(t.link("host", &host_veth).is_some(), "the paused attach made its veth");

    let mut detach = t.netpath_cmd(&["detach", "--id", "a"]).stderr(Stdio::piped()).spawn().unwrap();
    let mut rm = t.netpath_cmd(&["network", "rm", "web"]).stderr(Stdio::piped()).spawn().unwrap();
    assert!(still_running(&mut detach, Duration::from_millis(500)), "detach acted on a row being created");
    assert!(still_running(&mut rm, Duration::from_millis(10)), "network rm acted while an attach ran");
    // An attach that collides with the row being created (here on its published port, from
    // another network) reaps before it gives up: the reap must leave that row (its creator
    // holds its lock) and its veth alone, so the attach still finds the port taken.
    let b_path = t.netns("b");
    let err = t.np_err(&["attach", "--network", "other", "--netns", &b_path, "--id", "b", "-p", "8098:80"]);
    assert!(err.contains("already published by endpoint 'a'"), "{err}");
    let after = row(&t).expect("the reap of a colliding attach removed a row being created");
    assert_eq!(after["state"], "creating", "{after}");
    assert!(t.link("host", &host_veth).is_some(), "the reap of a colliding attach removed a veth being wired");
    // `netpath gc` waits for the attach: it takes the global lock exclusively.
    let mut gc = t.netpath_cmd(&["gc", "--format", "json"]).stdout(Stdio::piped()).spawn().unwrap();
    assert!(still_running(&mut gc, Duration::from_millis(500)), "gc ran while an attach was half-way");
    assert!(attach.is_stopped(), "the attach was held until gc had started");
    let attached = attach.resume().wait_with_output().unwrap();
    assert!(attached.status.success());
    let ep: Value = serde_json::from_slice(&attached.stdout).unwrap();
    assert_eq!(ep["state"], "ready");
    let gc = gc.wait_with_output().unwrap();
    assert!(gc.status.success());
    let report: Value = serde_json::from_slice(&gc.stdout).unwrap();
    assert_eq!(report["abandoned_endpoints"], serde_json::json!([]), "gc took a live attach for dead: {report}");
    // Then the detach runs on the finished endpoint, and the network rm sees it either attached
    // (refused: no --force) or gone (removed).
    assert!(detach.wait_with_output().unwrap().status.success());
    let rm = rm.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&rm.stderr);
    assert!(rm.status.success() || err.contains("has 1 endpoint(s) attached"), "{err}");
    assert!(t.link("a", "eth0").is_none());
    t.teardown();
}
