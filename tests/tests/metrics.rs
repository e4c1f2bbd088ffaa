//! `netpath daemon --metrics`: Prometheus scrapes `/metrics` over TCP on the loopback of the
//! topology's host namespace. Every page is read with a strict parser of the text format
//! (`netpath_tests::prometheus`) and checked by `promtool check metrics`; the counters must follow traffic, drops, conntrack and the
//! daemon's own operations, and bad requests must be refused without stopping the service.
use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    time::Duration,
};

use netpath_tests::{
    OUTSIDE_ADDR, Topology,
    daemon::{Daemon, call, ok},
    in_netns,
    prometheus::{self, Page},
};
use serde_json::json;

const METRICS: &str = "127.0.0.1:9464";

/// Sends `request` to the metrics port in the host namespace, half-closes, and returns the
/// status, the head and the body.
fn exchange(t: &Topology, request: &[u8]) -> (u16, String, String) {
    let addr: SocketAddr = METRICS.parse().unwrap();
    let mut conn = in_netns(&t.ns_path("host"), || TcpStream::connect_timeout(&addr, Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("connect to {METRICS}: {e}"));
    conn.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    // The server may answer (and close) before it has read everything of a refused request.
    let _ = conn.write_all(request);
    let _ = conn.shutdown(Shutdown::Write);
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    let answer = String::from_utf8(answer).expect("a UTF-8 answer");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// `GET /metrics`, which must succeed, parse, and pass promtool's checks.
fn scrape(t: &Topology) -> Page {
    let (status, head, body) = exchange(t, b"GET /metrics HTTP/1.1\r\nHost: netpath\r\nAccept: */*\r\n\r\n");
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(head.contains("\r\nContent-Type: text/plain; version=0.0.4"), "{head}");
    if let Err(e) = prometheus::promtool_check(&body) {
        panic!("promtool check metrics: {e}\n{body}");
    }
    prometheus::parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"))
}

#[test]
fn metrics_follow_traffic_drops_conntrack_and_docker_calls() {
    let mut t = Topology::with_outside("met");
    let socket = t.run_dir.join("plugin.sock");
    let daemon = Daemon::start_with(&t, &socket, &["--metrics", METRICS]);
    let empty = scrape(&t);
    assert_eq!(empty.value("netpath_networks", &[]), 0.0);

    t.network("web", &["--subnet", "10.83.0.0/24"]);
    t.network("dark", &["--subnet", "10.83.1.0/24", "--internal"]);
    let a = t.container("a", "web", &[]);
    let b = t.container("b", "web", &[]);
    let c = t.container("c", "dark", &["--name", "cache"]);
    let ep = |e: &serde_json::Value| e["id"].as_str().unwrap().to_string();
    let (a_id, b_id) = (ep(&a), ep(&b));
    let before = scrape(&t);
    assert_eq!(before.value("netpath_networks", &[]), 2.0);
    assert_eq!(before.value("netpath_endpoints", &[("network", "web")]), 2.0);
    assert_eq!(before.value("netpath_endpoints", &[("network", "dark")]), 1.0);
    assert_eq!(before.value("netpath_datapath_loaded", &[]), 1.0);
    assert_eq!(before.value("netpath_conntrack_entries_limit", &[("table", "CT")]), 262_144.0);
    assert_eq!(before.types["netpath_endpoint_transmit_packets_total"], "counter");

    assert!(t.ping("a", b["ip"].as_str().unwrap(), 3), "a cannot ping b");
    assert!(t.ping("a", OUTSIDE_ADDR, 2), "a cannot reach the outside");
    assert!(t.no_reply("c", OUTSIDE_ADDR, 2), "an internal network reached the outside");
    let after = scrape(&t);

    let sent = |page: &Page, id: &str, metric: &str| page.value(metric, &[("network", "web"), ("endpoint", id)]);
    for (id, metric, at_least) in [
        (&a_id, "netpath_endpoint_transmit_packets_total", 5.0),
        (&a_id, "netpath_endpoint_transmit_bytes_total", 5.0 * 84.0),
        (&b_id, "netpath_endpoint_receive_packets_total", 3.0),
        (&b_id, "netpath_endpoint_transmit_packets_total", 3.0),
    ] {
        let (was, is) = (sent(&before, id, metric), sent(&after, id, metric));
        assert!(is >= was + at_least, "{metric} of {id} went from {was} to {is}, not up by {at_least}");
    }
    let named = [("network", "dark"), ("endpoint", c["id"].as_str().unwrap()), ("name", "cache")];
    assert!(after.value("netpath_endpoint_transmit_packets_total", &named) >= 2.0, "c's pings, under its name");
    let denied = |page: &Page| page.value("netpath_dropped_packets_total", &[("reason", "egress-denied")]);
    assert!(denied(&after) >= denied(&before) + 2.0, "{} -> {}", denied(&before), denied(&after));
    assert_eq!(
        after.value("netpath_dropped_packets_total", &[("reason", "egress-denied")]),
        t.drop_count("egress-denied") as f64,
        "the page and `netpath stats` disagree"
    );
    // a's pings to the outside were masqueraded: a connection, two entries.
    let entries = |page: &Page| {
        page.value("netpath_conntrack_entries", &[("table", "CT")])
            + page.value("netpath_conntrack_entries", &[("table", "CT_NEW")])
    };
    assert!(entries(&after) >= entries(&before) + 2.0, "{} -> {}", entries(&before), entries(&after));

    // The daemon's own operations: a call that works, and one that fails for want of its
    // endpoint.
    ok(&socket, "Plugin.Activate", json!({}));
    let missing = "ab".repeat(32);
    let (status, answer) =
        call(&socket, "NetworkDriver.Join", &json!({"NetworkID": "x", "EndpointID": missing, "SandboxKey": "/x"}));
    assert_eq!(status, 500, "{answer}");
    let ops = scrape(&t);
    let duration = "netpath_daemon_operation_duration_seconds";
    assert_eq!(ops.types[duration], "histogram");
    assert_eq!(ops.value(&format!("{duration}_count"), &[("operation", "activate")]), 1.0);
    assert_eq!(ops.value(&format!("{duration}_count"), &[("operation", "join")]), 1.0);
    assert_eq!(ops.value(&format!("{duration}_bucket"), &[("operation", "join"), ("le", "+Inf")]), 1.0);
    let errors = "netpath_daemon_operation_errors_total";
    assert_eq!(ops.value(errors, &[("operation", "join"), ("class", "not_found")]), 1.0);
    assert_eq!(ops.get(errors, &[("operation", "activate"), ("class", "not_found")]), None);

    // The resolver's queries: a name nobody has, asked from a.
    let query = [&[0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0][..], b"\x06nobody\x00\x00\x01\x00\x01"].concat();
    let reply = netpath_tests::in_netns(&t.ns_path("a"), || {
        let sock = std::net::UdpSocket::bind(("0.0.0.0", 0)).unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        sock.send_to(&query, ("10.83.0.1", 53)).unwrap();
        let mut buf = [0u8; 512];
        sock.recv(&mut buf).map(|n| buf[..n].to_vec())
    });
    assert_eq!(reply.expect("the resolver's answer")[3] & 0x0f, 3, "NXDOMAIN");
    let queries = scrape(&t);
    let dns = "netpath_dns_queries_total";
    assert_eq!(queries.types[dns], "counter");
    assert_eq!(queries.value(dns, &[("result", "nxdomain")]), 1.0);
    assert_eq!(queries.value(dns, &[("result", "answered")]), 0.0);

    assert!(daemon.stop().success());
    t.teardown();
}

#[test]
fn bad_requests_are_refused_and_the_daemon_keeps_serving() {
    let t = Topology::new("mab");
    let socket = t.run_dir.join("plugin.sock");
    let refused = t.np_err(&["daemon", "--docker-socket", socket.to_str().unwrap(), "--metrics", "localhost"]);
    assert!(refused.contains("--metrics 'localhost': expected ADDRESS:PORT such as 127.0.0.1:9464"), "{refused}");
    let daemon = Daemon::start_with(&t, &socket, &["--metrics", METRICS]);
    // The port is taken: a second daemon says so and leaves no plugin socket of its own.
    let other = t.run_dir.join("other.sock");
    let taken = t.np_err(&["daemon", "--docker-socket", other.to_str().unwrap(), "--metrics", METRICS]);
    assert!(taken.contains(&format!("cannot serve metrics on {METRICS}")), "{taken}");
    assert!(!other.exists(), "a daemon that could not serve metrics left {}", other.display());

    // A client that says nothing holds no one up...
    let addr: SocketAddr = METRICS.parse().unwrap();
    let mut silent = in_netns(&t.ns_path("host"), || TcpStream::connect(addr)).unwrap();
    let long_header = format!("GET /metrics HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(64 * 1024));
    for (request, status) in [
        (&b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n"[..], 405),
        (b"GET /metric HTTP/1.1\r\n\r\n", 404),
        (b"GET / HTTP/1.1\r\n\r\n", 404),
        (b"\x00\x01garbage\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET /metrics HTTP/2.0\r\n\r\n", 505),
        (b"GET /metrics HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413),
        (long_header.as_bytes(), 431),
    ] {
        let (got, head, _) = exchange(&t, request);
        assert_eq!(got, status, "{:?} was answered {head}", String::from_utf8_lossy(&request[..request.len().min(60)]));
    }
    // A request cut short gets no answer.
    let (got, head, _) = exchange(&t, b"GET /metrics HTTP/1.1\r\nHost: x");
    assert_eq!(got, 0, "{head}");
    scrape(&t);
    // ... and is dropped after its time.
    silent.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut late = String::new();
    let _ = silent.read_to_string(&mut late);
    assert!(late.starts_with("HTTP/1.1 408 "), "a silent client is timed out: {late:?}");
    scrape(&t);
    ok(&socket, "Plugin.Activate", json!({}));

    assert!(daemon.stop().success());
    t.teardown();
}
