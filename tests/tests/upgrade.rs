//! An upgrade: the state database of the previous release (schema 4) is restored by this one.
//! `netpath/tests/fixtures/schema-v4.db` was written by that release's binary in a host
//! namespace with this suite's uplink: `network create web --subnet 10.61.0.0/24`, `network
//! create db --internal`, `attach --network web --id c1 -p 18080:80 -p 127.0.0.1:5353:53/udp`.
use std::net::SocketAddr;

use netpath_tests::{OUTSIDE_ADDR, Topology, UPLINK_ADDR, fetch, ip_of, serve_once};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../netpath/tests/fixtures/schema-v4.db");

#[test]
fn restore_takes_the_database_of_the_previous_release() {
    let mut t = Topology::with_outside("upg");
    std::fs::create_dir_all(t.state_dir()).unwrap();
    std::fs::copy(FIXTURE, t.state_dir().join("netpath.db")).unwrap();

    let report = t.np_json(&["restore"]);
    let endpoints = report["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1, "{report}");
    // The namespace c1 lived in belongs to the machine that wrote the database.
    assert_eq!((endpoints[0]["id"].as_str(), endpoints[0]["action"].as_str()), (Some("c1"), Some("released")));
    let networks = report["networks"].as_array().unwrap();
    assert_eq!(networks.len(), 2, "{report}");
    for net in networks {
        assert!(net["created"].as_array().unwrap().iter().any(|c| c.as_str().unwrap().starts_with("created bridge")));
    }

    let nets = t.np_json(&["network", "ls"]);
    let summary: Vec<(String, String, bool)> = nets
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["name"].as_str().unwrap().into(), n["subnet"].as_str().unwrap().into(), n["internal"] == true))
        .collect();
    assert_eq!(summary, [("db".into(), "10.200.0.0/22".into(), true), ("web".into(), "10.61.0.0/24".into(), false)]);
    assert_eq!(t.np_json(&["port", "ls"]), serde_json::json!([]), "c1's ports went with it");

    // The rebuilt datapath carries traffic: a new container gets the address c1 freed, reaches
    // the outside, and the host port c1 held can be published again and answers.
    let a = t.container("a", "web", &["-p", "18080:80"]);
    assert_eq!(ip_of(&a).to_string(), "10.61.0.2");
    assert!(t.ping("a", OUTSIDE_ADDR, 1), "no egress after restoring the old database");
    let server = serve_once(&t, "a", 80);
    let to: SocketAddr = format!("{UPLINK_ADDR}:18080").parse().unwrap();
    assert_eq!(fetch(&t, "outside", to), "hello from a");
    server.join().unwrap();
    t.teardown();
}
