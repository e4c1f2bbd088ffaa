//! Attaching as a runtime starting many containers does: a hundred `netpath attach` commands
//! launched at once against one network, and such a batch with some of its commands killed
//! half-way. Whatever happens, every endpoint netpath lists must be wired exactly as listed
//! (its host veth on the bridge with a pinned program, its interface in its namespace with
//! its address) and nothing else may exist.
use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::process::ExitStatusExt,
    process::{Child, Stdio},
};

use netpath_tests::Topology;
use serde_json::Value;

/// Launches one attach per namespace, all at once; `fault` names the step (if any) at which
/// the `i`th command stops dead (`NETPATH_FAULT_AT`, honoured by debug builds).
fn launch(t: &Topology, paths: &[String], fault: impl Fn(usize) -> Option<&'static str>) -> Vec<Child> {
    paths
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let mut cmd = t.netpath_cmd(&["attach", "--network", "web", "--netns", path, "--id", &format!("c{i}")]);
            cmd.args(["--format", "json"]).stdout(Stdio::piped()).stderr(Stdio::piped());
            if let Some(step) = fault(i) {
                cmd.env("NETPATH_FAULT_AT", step);
            }
            cmd.spawn().unwrap()
        })
        .collect()
}

/// Every listed endpoint is wired as listed, and the host has no other netpath veth, pinned
/// link or map entry. Returns the listed endpoints by id.
fn assert_listed_matches_kernel(t: &Topology) -> BTreeMap<String, Value> {
    let listed: BTreeMap<String, Value> = t
        .np_json(&["endpoint", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].as_str().unwrap().to_string(), e.clone()))
        .collect();
    for (id, ep) in &listed {
        assert_eq!(ep["state"], "ready", "{id}: {ep}");
        let veth = ep["host_veth"].as_str().unwrap();
        let host = t.link("host", veth).unwrap_or_else(|| panic!("{id}: host veth {veth} missing"));
        assert_eq!(host["master"], "np-web", "{id}: {host}");
        let ns = ep["netns"].as_str().unwrap().rsplit_once(&format!("{}-", t.prefix)).unwrap().1.to_string();
        let addrs = t.exec(&ns, &["ip", "-j", "-4", "addr", "show", "dev", "eth0"]);
        let ip = ep["ip"].as_str().unwrap();
        assert!(addrs.contains(&format!("\"local\":\"{ip}\"")), "{id}: eth0 lacks {ip}: {addrs}");
    }
    let veths: BTreeSet<String> = t
        .exec("host", &["ip", "-j", "link", "show", "type", "veth"])
        .parse::<Value>()
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = listed.values().map(|e| e["host_veth"].as_str().unwrap().to_string()).collect();
    assert_eq!(veths, expected, "host veths");
    let addresses: BTreeSet<&str> = listed.values().map(|e| e["ip"].as_str().unwrap()).collect();
    assert_eq!(addresses.len(), listed.len(), "duplicate addresses");
    assert_eq!(t.map_entries("ENDPOINTS").len(), listed.len());
    assert_eq!(t.map_entries("VETHS").len(), listed.len());
    let blocks = t.tc_blocks();
    let bound: BTreeSet<String> = blocks.keys().filter(|dev| dev.starts_with("npv")).cloned().collect();
    assert_eq!(bound, expected, "host veths bound to a tc block");
    let distinct: BTreeSet<&String> = bound.iter().map(|dev| &blocks[dev]).collect();
    assert_eq!(distinct.len(), 1, "one block for the network: {blocks:?}");
    listed
}

#[test]
fn a_hundred_attaches_at_once_get_distinct_addresses_all_wired() {
    let mut t = Topology::new("bat");
    t.network("web", &["--subnet", "10.36.0.0/24"]);
    let paths: Vec<String> = (0..100).map(|i| t.netns(&format!("c{i}"))).collect();
    let mut answered = BTreeSet::new();
    for child in launch(&t, &paths, |_| None) {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "attach failed: {}", String::from_utf8_lossy(&out.stderr));
        let ep: Value = serde_json::from_slice(&out.stdout).unwrap();
        answered.insert(ep["ip"].as_str().unwrap().to_string());
    }
    assert_eq!(answered.len(), 100, "addresses: {answered:?}");
    let listed = assert_listed_matches_kernel(&t);
    let addresses: BTreeSet<String> = listed.values().map(|e| e["ip"].as_str().unwrap().to_string()).collect();
    assert_eq!(addresses, answered);
    // Every one of them is really wired: each reaches another.
    t.assert_ring_reachable(&listed.into_values().collect::<Vec<_>>());
    t.teardown();
}

#[test]
fn attaches_killed_in_a_concurrent_batch_leave_nothing_half_done() {
    let mut t = Topology::new("bak");
    t.network("web", &["--subnet", "10.37.0.0/24"]);
    let steps: Vec<&'static str> = netpath::fault::STEPS.iter().copied().filter(|s| s.starts_with("attach:")).collect();
    let paths: Vec<String> = (0..40).map(|i| t.netns(&format!("c{i}"))).collect();
    // Every other command is killed, each after another step of the attach.
    let fault = |i: usize| (i % 2 == 1).then(|| steps[(i / 2) % steps.len()]);
    let mut survivors = BTreeSet::new();
    let mut killed = BTreeSet::new();
    for (i, child) in launch(&t, &paths, fault).into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        match fault(i) {
            Some(_) => {
                assert_eq!(out.status.signal(), Some(libc::SIGKILL), "c{i} was not stopped at its step");
                killed.insert(format!("c{i}"));
            }
            None => {
                assert!(out.status.success(), "c{i}: {}", String::from_utf8_lossy(&out.stderr));
                survivors.insert(format!("c{i}"));
            }
        }
    }
    // A killed attach that got as far as marking its row ready is a whole endpoint and stays;
    // one killed after reserving and before that left its row `creating`. The next attach
    // collides with none of those rows and leaves them to gc, which removes them and what
    // they made.
    let step_of = |id: &String| fault(id[1..].parse().unwrap());
    let mut finished = survivors.clone();
    finished.extend(killed.iter().filter(|id| step_of(id) == Some("attach:ready")).cloned());
    let late = t.netns("late");
    t.np(&["attach", "--network", "web", "--netns", &late, "--id", "late"]);
    finished.insert("late".to_string());
    let half_done: BTreeSet<String> =
        killed.iter().filter(|id| !matches!(step_of(id), Some("attach:locked" | "attach:ready"))).cloned().collect();
    let rows: BTreeSet<String> =
        t.np_json(&["endpoint", "ls"]).as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().into()).collect();
    assert_eq!(rows, &finished | &half_done, "the late attach reaped though it collided with nothing");
    let gc = t.np_json(&["gc"]);
    let abandoned: BTreeSet<String> =
        gc["abandoned_endpoints"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().into()).collect();
    assert_eq!(abandoned, half_done, "{gc}");
    let listed = assert_listed_matches_kernel(&t);
    assert_eq!(listed.keys().cloned().collect::<BTreeSet<_>>(), finished);
    for id in killed.iter().filter(|id| !finished.contains(*id)) {
        assert!(t.link(id, "eth0").is_none(), "{id}: its interface outlived its killed attach");
    }
    assert_eq!(t.np(&["gc"]).trim(), "nothing to collect");
    // Every killed attach can be run again and completes.
    for id in killed.iter().filter(|id| !finished.contains(*id)) {
        t.np(&["attach", "--network", "web", "--netns", &t.ns_path(id), "--id", id]);
    }
    let listed = assert_listed_matches_kernel(&t);
    assert_eq!(listed.len(), paths.len() + 1);
    t.assert_ring_reachable(&listed.into_values().collect::<Vec<_>>());
    t.teardown();
}
