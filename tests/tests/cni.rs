//! The CNI plugin driven directly with the CNI protocol, as a runtime drives it: ADD, CHECK,
//! DEL, GC, STATUS, VERSION, capability arguments, chaining, concurrency and bad input.
use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddr},
    process::Command,
    time::{Duration, Instant},
};

use netpath_tests::{
    OUTSIDE_ADDR, Topology, UPLINK_ADDR,
    cni::{Call, Reply},
    fetch, reboot_host, serve_once,
};
use serde_json::{Value, json};

fn conf(name: &str, subnet: &str) -> Value {
    json!({ "cniVersion": "1.1.0", "name": name, "type": "netpath", "subnet": subnet })
}

fn call<'a>(command: &'a str, container_id: &'a str, netns: &'a str) -> Call<'a> {
    Call { command, container_id, netns, ifname: "eth0" }
}

/// ADD for a new container namespace `name`; returns the result.
fn add(t: &mut Topology, name: &str, config: &Value) -> Value {
    let ns = t.netns(name);
    let reply = t.cni(&call("ADD", name, &ns), config);
    assert!(reply.ok, "ADD {name}: {}", reply.stdout);
    reply.json
}

fn address(result: &Value) -> String {
    result["ips"][0]["address"].as_str().expect("ips[0].address").to_string()
}

fn endpoint_ids(t: &Topology) -> BTreeSet<String> {
    let eps = t.np_json(&["endpoint", "ls"]);
    eps.as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn add_check_del_del() {
    let mut t = Topology::with_outside("cni");
    let mut config = conf("cninet", "10.91.0.0/24");
    config["runtimeConfig"] = json!({ "portMappings": [{ "hostPort": 8080, "containerPort": 80, "protocol": "tcp" }] });
    let a = add(&mut t, "a", &config);
    let a_ns = t.ns_path("a");

    // The result names the bridge first, then both ends of the veth, the address, its route
    // and the gateway as the nameserver.
    assert_eq!(a["cniVersion"], "1.1.0");
    let interfaces = a["interfaces"].as_array().unwrap();
    assert_eq!(interfaces.len(), 3, "{a}");
    for host_side in &interfaces[..2] {
        assert_eq!(host_side["mac"].as_str().unwrap().len(), 17, "{a}");
        assert!(host_side.get("sandbox").is_none(), "{a}");
    }
    assert!(interfaces[1]["name"].as_str().unwrap().starts_with("npv"), "{a}");
    assert_eq!(interfaces[2]["name"], "eth0");
    assert_eq!(interfaces[2]["sandbox"], a_ns.as_str());
    assert_eq!(address(&a), "10.91.0.2/24");
    assert_eq!(a["ips"][0]["gateway"], "10.91.0.1");
    assert_eq!(a["ips"][0]["interface"], 2);
    assert_eq!(a["routes"], json!([{ "dst": "0.0.0.0/0", "gw": "10.91.0.1" }]));
    assert_eq!(a["dns"], json!({}), "no nameserver netpath does not run");
    // …and they are what the kernel has.
    let eth0 = t.link("a", "eth0").expect("eth0 in a");
    assert_eq!(eth0["address"], interfaces[2]["mac"]);
    assert!(t.exec("a", &["ip", "-4", "addr", "show", "eth0"]).contains("10.91.0.2/24"));
    let host = t.link("host", interfaces[1]["name"].as_str().unwrap()).expect("host veth");
    assert_eq!(host["address"], interfaces[1]["mac"]);

    // The network was created on the first ADD, with the configuration's settings; the
    // result's first interface is its bridge.
    let net = t.np_json(&["network", "inspect", "cninet"]);
    assert_eq!(net["subnet"], "10.91.0.0/24", "{net}");
    assert_eq!(interfaces[0]["name"], net["bridge"], "{a}");
    let bridge = t.link("host", net["bridge"].as_str().unwrap()).expect("bridge");
    assert_eq!(bridge["address"], interfaces[0]["mac"]);

    // A second container talks to the first; the outside reaches the published port.
    let b = add(&mut t, "b", &config_without_ports(&config));
    assert_eq!(address(&b), "10.91.0.3/24");
    assert!(t.ping("b", "10.91.0.2", 1));
    let server = serve_once(&t, "a", 80);
    assert_eq!(
        fetch(&t, "outside", SocketAddr::from((UPLINK_ADDR.parse::<Ipv4Addr>().unwrap(), 8080))),
        "hello from a"
    );
    server.join().unwrap();
    assert!(t.ping("a", OUTSIDE_ADDR, 1), "egress from a CNI container");

    // CHECK passes while everything is in place, and names what is not.
    let check = t.cni(&call("CHECK", "a", &a_ns), &with_prev(&config, &a));
    assert!(check.ok, "CHECK: {}", check.stdout);
    assert_eq!(check.json, Value::Null, "CHECK prints nothing on success");
    t.exec("a", &["ip", "route", "del", "default"]);
    let check = t.cni(&call("CHECK", "a", &a_ns), &with_prev(&config, &a));
    assert_eq!(check.code(), 105, "{}", check.stdout);
    assert!(check.msg().contains("default route"), "{}", check.msg());
    t.exec("a", &["ip", "route", "add", "default", "via", "10.91.0.1"]);
    assert!(t.cni(&call("CHECK", "a", &a_ns), &with_prev(&config, &a)).ok);
    // A datapath entry gone behind netpath's back: ENDPOINTS no longer knows a's address.
    let key = "0x0a 0x5b 0x00 0x02";
    let endpoints = t.datapath_dir().join("ENDPOINTS");
    let mut del = Command::new("bpftool");
    del.args(["map", "delete", "pinned"]).arg(&endpoints).arg("key").args(key.split(' '));
    netpath_tests::run(&mut del);
    let check = t.cni(&call("CHECK", "a", &a_ns), &with_prev(&config, &a));
    assert_eq!(check.code(), 105, "{}", check.stdout);
    assert!(check.msg().contains("ENDPOINTS"), "{}", check.msg());
    // A prevResult that does not list the endpoint's address fails CHECK too.
    let check = t.cni(&call("CHECK", "b", &t.ns_path("b")), &with_prev(&config, &a));
    assert_eq!(check.code(), 105, "{}", check.stdout);

    // DEL releases everything, and DEL is idempotent: again, for an unknown id, and for a
    // container whose namespace is gone.
    let del = t.cni(&call("DEL", "a", &a_ns), &config);
    assert!(del.ok && del.json == Value::Null, "DEL: {}", del.stdout);
    assert!(t.link("host", interfaces[1]["name"].as_str().unwrap()).is_none(), "host veth left");
    assert!(t.np_json(&["port", "ls"]).as_array().unwrap().is_empty(), "published port left");
    assert!(t.cni(&call("DEL", "a", &a_ns), &config).ok, "second DEL");
    assert!(t.cni(&call("DEL", "nosuch", ""), &config).ok, "DEL of an unknown id");
    let check = t.cni(&call("CHECK", "a", &a_ns), &config);
    assert_eq!(check.code(), 105, "CHECK after DEL: {}", check.stdout);
    netpath_tests::run(Command::new("ip").args(["netns", "del", &format!("{}-b", t.prefix)]));
    assert!(t.cni(&call("DEL", "b", &t.ns_path("b")), &config).ok, "DEL with the namespace gone");
    assert!(t.cni(&call("DEL", "b", ""), &config).ok, "DEL without CNI_NETNS");
    assert!(endpoint_ids(&t).is_empty());
    t.teardown();
}

fn config_without_ports(config: &Value) -> Value {
    let mut config = config.clone();
    config.as_object_mut().unwrap().remove("runtimeConfig");
    config
}

fn with_prev(config: &Value, result: &Value) -> Value {
    let mut config = config.clone();
    config["prevResult"] = result.clone();
    config
}

#[test]
fn status_before_and_after_the_datapath() {
    let mut t = Topology::with_outside("cst");
    let config = conf("stat", "10.92.0.0/24");
    let status = t.cni(&call("STATUS", "", ""), &config);
    assert_eq!(status.code(), 50, "STATUS before the datapath: {}", status.stdout);
    assert!(status.msg().contains("not loaded"), "{}", status.msg());

    add(&mut t, "a", &config);
    let status = t.cni(&call("STATUS", "", ""), &config);
    assert!(status.ok, "STATUS with the datapath: {}", status.stdout);
    // A network that does not exist yet is created on ADD: ready as well.
    assert!(t.cni(&call("STATUS", "", ""), &conf("other", "10.93.0.0/24")).ok);

    // After a reboot (links and pins gone, the database kept) attached containers are
    // affected until `netpath restore`.
    reboot_host(&t);
    let status = t.cni(&call("STATUS", "", ""), &config);
    assert_eq!(status.code(), 51, "STATUS after a reboot: {}", status.stdout);
    assert!(status.msg().contains("netpath restore"), "{}", status.msg());
    t.np(&["restore"]);
    assert!(t.cni(&call("STATUS", "", ""), &config).ok);
    t.teardown();
}

#[test]
fn gc_releases_every_attachment_not_listed() {
    let mut t = Topology::new("cgc");
    let config = conf("gcnet", "10.94.0.0/24");
    for name in ["a", "b", "c"] {
        add(&mut t, name, &config);
    }
    let mut gc = config.clone();
    gc["cni.dev/valid-attachments"] =
        json!([{ "containerID": "a", "ifname": "eth0" }, { "containerID": "b", "ifname": "eth0" }]);
    let reply = t.cni(&call("GC", "", ""), &gc);
    assert!(reply.ok, "GC: {}", reply.stdout);
    assert_eq!(endpoint_ids(&t), BTreeSet::from(["a-eth0".to_string(), "b-eth0".to_string()]));
    assert!(t.link("c", "eth0").is_none(), "c's interface is released");
    assert!(t.ping("a", "10.94.0.3", 1), "a and b still talk");
    // Without the list GC would release everything: it refuses instead.
    assert_eq!(t.cni(&call("GC", "", ""), &config).code(), 7);
    assert_eq!(endpoint_ids(&t).len(), 2);
    // An empty list releases the rest; GC of a network that does not exist succeeds.
    gc["cni.dev/valid-attachments"] = json!([]);
    assert!(t.cni(&call("GC", "", ""), &gc).ok);
    assert!(endpoint_ids(&t).is_empty());
    gc["name"] = json!("nosuch");
    assert!(t.cni(&call("GC", "", ""), &gc).ok);
    t.teardown();
}

/// GC collects what CNI made, nothing else: the CLI's endpoints on the same network stay,
/// also one whose id has the CNI form (`attach --id` takes any id).
#[test]
fn gc_releases_only_what_cni_made() {
    let mut t = Topology::new("cgco");
    let config = conf("shared", "10.94.1.0/24");
    add(&mut t, "viacni", &config);
    let mut by_cli = Vec::new();
    for id in ["cli1", "lookalike-eth0"] {
        let ns = t.netns(id);
        by_cli.push(t.np_json(&["attach", "--network", "shared", "--netns", &ns, "--id", id]));
    }
    let mut gc = config.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    let reply = t.cni(&call("GC", "", ""), &gc);
    assert!(reply.ok, "GC: {}", reply.stdout);
    assert_eq!(endpoint_ids(&t), BTreeSet::from(["cli1".to_string(), "lookalike-eth0".to_string()]));
    assert!(t.link("viacni", "eth0").is_none(), "the CNI attachment is released");
    assert!(t.ping("cli1", by_cli[1]["ip"].as_str().unwrap(), 1), "the CLI's endpoints still talk");
    t.teardown();
}

#[test]
fn version_and_older_result_formats() {
    let mut t = Topology::new("cvr");
    for version in ["0.4.0", "1.0.0", "1.1.0"] {
        let reply = t.cni(&call("VERSION", "", ""), &json!({ "cniVersion": version }));
        assert!(reply.ok, "{}", reply.stdout);
        assert_eq!(reply.json["cniVersion"], version);
        assert_eq!(reply.json["supportedVersions"], json!(["0.4.0", "1.0.0", "1.1.0"]));
    }
    // VERSION needs no configuration.
    let reply = t.cni_with(t.cni_cmd(&call("VERSION", "", "")), b"");
    assert!(reply.ok && reply.json["supportedVersions"].is_array(), "{}", reply.stdout);

    let mut config = conf("old", "10.95.0.0/24");
    config["cniVersion"] = json!("0.4.0");
    let result = add(&mut t, "a", &config);
    assert_eq!(result["cniVersion"], "0.4.0");
    assert_eq!(result["ips"][0]["version"], "4", "0.4.0 results carry the IP version: {result}");
    config["cniVersion"] = json!("1.0.0");
    let result = add(&mut t, "b", &config);
    assert!(result["ips"][0].get("version").is_none(), "{result}");
    t.teardown();
}

#[test]
fn static_address_and_chaining() {
    let mut t = Topology::new("cch");
    let mut config = conf("chain", "10.96.0.0/24");
    config["runtimeConfig"] = json!({ "ips": ["10.96.0.50/24"] });
    let a = add(&mut t, "a", &config);
    assert_eq!(address(&a), "10.96.0.50/24");

    // After a plugin that produced a result, netpath appends its own to it and passes it on.
    let prev = json!({
        "cniVersion": "1.1.0",
        "interfaces": [{ "name": "dummy0" }],
        "ips": [{ "address": "192.0.2.7/24", "interface": 0 }],
        "routes": [],
        "dns": { "nameservers": ["192.0.2.53"] }
    });
    let mut chained = conf("chain", "10.96.0.0/24");
    chained["prevResult"] = prev;
    let b = add(&mut t, "b", &chained);
    assert_eq!(b["interfaces"].as_array().unwrap().len(), 4, "{b}");
    assert_eq!(b["interfaces"][0]["name"], "dummy0");
    assert_eq!(b["interfaces"][1]["name"], "np-chain", "netpath's bridge comes first of its interfaces");
    assert_eq!(b["ips"][0]["address"], "192.0.2.7/24");
    assert_eq!(b["ips"][1]["address"], "10.96.0.2/24");
    assert_eq!(b["ips"][1]["interface"], 3, "{b}");
    assert_eq!(b["dns"]["nameservers"], json!(["192.0.2.53"]), "the chain's");
    // CHECK of the chain's result, as the runtime passes it.
    let check = t.cni(&call("CHECK", "b", &t.ns_path("b")), &with_prev(&conf("chain", "10.96.0.0/24"), &b));
    assert!(check.ok, "{}", check.stdout);

    // The address of another container, or one outside the subnet, is refused.
    let c = t.netns("c");
    config["runtimeConfig"] = json!({ "ips": ["10.96.0.50"] });
    assert_eq!(t.cni(&call("ADD", "c", &c), &config).code(), 103);
    config["runtimeConfig"] = json!({ "ips": ["10.97.0.5/24"] });
    assert_eq!(t.cni(&call("ADD", "c", &c), &config).code(), 101);
    assert_eq!(endpoint_ids(&t).len(), 2);
    t.teardown();
}

#[test]
fn fifty_parallel_adds_get_fifty_addresses() {
    let mut t = Topology::new("cpa");
    let config = conf("par", "10.98.0.0/24");
    let names: Vec<String> = (0..50).map(|i| format!("p{i}")).collect();
    let paths: Vec<String> = names.iter().map(|n| t.netns(n)).collect();
    let started = Instant::now();
    let replies: Vec<Reply> = std::thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .zip(&paths)
            .map(|(name, path)| {
                let (t, config) = (&t, &config);
                s.spawn(move || t.cni(&call("ADD", name, path), config))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    eprintln!("50 parallel ADDs took {:?}", started.elapsed());
    let addresses: BTreeSet<String> = replies
        .iter()
        .map(|r| {
            assert!(r.ok, "ADD: {}", r.stdout);
            address(&r.json)
        })
        .collect();
    assert_eq!(addresses.len(), 50, "two ADDs got one address: {addresses:?}");
    assert_eq!(t.np_json(&["network", "ls"]).as_array().unwrap().len(), 1, "one network made by the first ADDs");
    assert!(t.ping("p0", address(&replies[49].json).split('/').next().unwrap(), 1));

    std::thread::scope(|s| {
        for (name, path) in names.iter().zip(&paths) {
            let (t, config) = (&t, &config);
            s.spawn(move || assert!(t.cni(&call("DEL", name, path), config).ok));
        }
    });
    assert!(endpoint_ids(&t).is_empty());
    t.teardown();
}

/// Every malformed configuration or environment gets the spec's code and a message, and
/// creates nothing but, for a good configuration, its network.
#[test]
fn malformed_input_gets_the_right_code() {
    let mut t = Topology::new("cbd");
    let ns = t.netns("a");
    let base = conf("bad", "10.99.10.0/24");
    let with = |key: &str, value: Value| {
        let mut c = base.clone();
        c[key] = value;
        c
    };
    let without = |key: &str| {
        let mut c = base.clone();
        c.as_object_mut().unwrap().remove(key);
        c
    };
    let configs: Vec<(&str, Vec<u8>, u64)> = vec![
        ("not JSON", b"{\"cniVersion\": ".to_vec(), 6),
        ("empty", Vec::new(), 6),
        ("an array", b"[1, 2]".to_vec(), 6),
        ("mtu of the wrong type", with("mtu", json!("big")).to_string().into_bytes(), 6),
        ("name of the wrong type", with("name", json!(5)).to_string().into_bytes(), 6),
        ("runtimeConfig of the wrong type", with("runtimeConfig", json!("x")).to_string().into_bytes(), 6),
        (
            "hostPort out of range",
            with("runtimeConfig", json!({ "portMappings": [{ "hostPort": 70000, "containerPort": 80 }] }))
                .to_string()
                .into_bytes(),
            6,
        ),
        ("unknown version", with("cniVersion", json!("9.9.9")).to_string().into_bytes(), 1),
        ("version 0.3.1", with("cniVersion", json!("0.3.1")).to_string().into_bytes(), 1),
        ("no cniVersion", without("cniVersion").to_string().into_bytes(), 7),
        ("no name", without("name").to_string().into_bytes(), 7),
        ("no type", without("type").to_string().into_bytes(), 7),
        ("another type", with("type", json!("bridge")).to_string().into_bytes(), 7),
        ("bad subnet", with("subnet", json!("10.0.0.0/33")).to_string().into_bytes(), 7),
        ("bad gateway", with("gateway", json!("10.99.10.300")).to_string().into_bytes(), 7),
        ("gateway outside the subnet", with("gateway", json!("10.1.1.1")).to_string().into_bytes(), 7),
        (
            "gateway without subnet",
            {
                let mut c = without("subnet");
                c["gateway"] = json!("10.1.1.1");
                c.to_string().into_bytes()
            },
            7,
        ),
        ("mtu too small", with("mtu", json!(20)).to_string().into_bytes(), 7),
        ("bad network name", with("network", json!("no/slash")).to_string().into_bytes(), 7),
        (
            "internal with ipMasq",
            {
                let mut c = with("internal", json!(true));
                c["ipMasq"] = json!(true);
                c.to_string().into_bytes()
            },
            7,
        ),
        (
            "sctp port",
            with(
                "runtimeConfig",
                json!({ "portMappings": [{ "hostPort": 80, "containerPort": 80, "protocol": "sctp" }] }),
            )
            .to_string()
            .into_bytes(),
            7,
        ),
        (
            "bad hostIP",
            with("runtimeConfig", json!({ "portMappings": [{ "hostPort": 80, "containerPort": 80, "hostIP": "x" }] }))
                .to_string()
                .into_bytes(),
            7,
        ),
        ("IPv6 static address", with("runtimeConfig", json!({ "ips": ["fe80::1/64"] })).to_string().into_bytes(), 7),
        (
            "two static addresses",
            with("runtimeConfig", json!({ "ips": ["10.99.10.5", "10.99.10.6"] })).to_string().into_bytes(),
            7,
        ),
    ];
    for (what, config, code) in &configs {
        let reply = t.cni_with(t.cni_cmd(&call("ADD", "a", &ns)), config);
        assert_eq!(reply.code(), *code, "{what}: {}", reply.stdout);
        eprintln!("{what}: {}", reply.stdout.trim());
    }
    // Refused configurations made nothing, not even their network.
    let bridges = |t: &Topology| -> Vec<String> {
        let links = t.exec("host", &["ip", "-o", "link", "show"]);
        links.lines().filter_map(|l| l.split(": ").nth(1)).filter(|n| n.starts_with("np")).map(String::from).collect()
    };
    assert_eq!(t.np_json(&["network", "ls"]), json!([]), "a refused configuration made a network");
    assert_eq!(bridges(&t), Vec::<String>::new(), "a refused configuration made a link");

    let good = base.to_string().into_bytes();
    let envs: Vec<(&str, Call, u64)> = vec![
        ("unknown command", Call { command: "FROB", container_id: "a", netns: &ns, ifname: "eth0" }, 4),
        ("no container id", Call { command: "ADD", container_id: "", netns: &ns, ifname: "eth0" }, 4),
        ("no netns", Call { command: "ADD", container_id: "a", netns: "", ifname: "eth0" }, 4),
        ("no ifname", Call { command: "ADD", container_id: "a", netns: &ns, ifname: "" }, 4),
        ("container id with a slash", Call { command: "ADD", container_id: "../a", netns: &ns, ifname: "eth0" }, 4),
        ("ifname too long", Call { command: "ADD", container_id: "a", netns: &ns, ifname: "abcdefghijklmnopq" }, 4),
        ("CHECK without netns", Call { command: "CHECK", container_id: "a", netns: "", ifname: "eth0" }, 4),
        (
            "netns that does not exist",
            Call { command: "ADD", container_id: "a", netns: "/run/netns/nosuch", ifname: "eth0" },
            102,
        ),
        (
            "netns that is not one",
            Call { command: "ADD", container_id: "a", netns: "/etc/hostname", ifname: "eth0" },
            101,
        ),
    ];
    for (what, call, code) in &envs {
        let reply = t.cni_with(t.cni_cmd(call), &good);
        assert_eq!(reply.code(), *code, "{what}: {}", reply.stdout);
        eprintln!("{what}: {}", reply.stdout.trim());
    }
    assert!(endpoint_ids(&t).is_empty(), "a refused ADD attached something");
    // A good configuration's network is made before the container's namespace is looked at,
    // and stays when the namespace is refused: that network, as configured, is all there is.
    let created = t.np_json(&["network", "ls"]);
    let nets: Vec<(&str, &str, &str)> = created
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["name"].as_str().unwrap(), n["subnet"].as_str().unwrap(), n["state"].as_str().unwrap()))
        .collect();
    assert_eq!(nets, [("bad", "10.99.10.0/24", "ready")], "{created}");
    assert_eq!(bridges(&t), ["np-bad"], "a refused ADD left a link other than the network's bridge");

    // A network that exists must match the configuration.
    let c = add(&mut t, "b", &base);
    assert_eq!(address(&c), "10.99.10.2/24", "{created}");
    for (key, value) in [
        ("subnet", json!("10.99.11.0/24")),
        ("mtu", json!(1400)),
        ("internal", json!(true)),
        ("ipMasq", json!(false)),
        ("xdp", json!(true)),
    ] {
        let reply = t.cni(&call("ADD", "a", &ns), &with(key, value));
        assert_eq!(reply.code(), 7, "{key}: {}", reply.stdout);
        assert!(reply.msg().contains(key), "{key}: {}", reply.msg());
    }
    // Keys left out are not compared: a routed network made with the CLI takes a
    // configuration that does not mention ipMasq.
    t.network("routed", &["--subnet", "10.99.12.0/24", "--no-masquerade"]);
    let quiet = t.netns("quiet");
    let reply = t.cni(&call("ADD", "quiet", &quiet), &conf("routed", "10.99.12.0/24"));
    assert!(reply.ok, "{}", reply.stdout);
    t.teardown();
}

/// Input nobody should send: binary garbage, an oversized configuration, nesting deep
/// enough to overflow a naive parser's stack. Each is refused with code 6, quickly.
#[test]
fn hostile_input_is_refused() {
    let mut t = Topology::new("cab");
    let ns = t.netns("a");
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut huge = br#"{"cniVersion":"1.1.0","name":"x","type":"netpath","pad":""#.to_vec();
    huge.resize(huge.len() + (4 << 20), b'a');
    huge.extend_from_slice(b"\"}");
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes();
    let deep_object = format!(
        r#"{{"cniVersion":"1.1.0","name":"x","type":"netpath","args":{}1{}}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    for (what, input) in [
        ("garbage", garbage),
        ("4 MiB", huge),
        ("deep nesting", deep),
        ("deep nesting in a key", deep_object.into_bytes()),
    ] {
        let started = Instant::now();
        let reply = t.cni_with(t.cni_cmd(&call("ADD", "a", &ns)), &input);
        assert_eq!(reply.code(), 6, "{what}: {}", reply.stdout);
        assert!(started.elapsed() < Duration::from_secs(10), "{what} took {:?}", started.elapsed());
    }
    // Unknown keys are allowed (runtimes add their own); unknown capability keys too.
    let mut config = conf("ok", "10.99.20.0/24");
    config["someRuntimeKey"] = json!({ "nested": [1, 2, 3] });
    config["runtimeConfig"] = json!({ "bandwidth": { "ingressRate": 1 } });
    assert!(t.cni(&call("ADD", "a", &ns), &config).ok);
    t.teardown();
}

#[test]
fn cni_install_puts_the_plugin_where_runtimes_look() {
    let t = Topology::new("cin");
    let dirs = [t.run_dir.join("opt-cni-bin"), t.run_dir.join("usr-lib-cni")];
    let out = t.np(&["cni", "install", "--dir", dirs[0].to_str().unwrap(), "--dir", dirs[1].to_str().unwrap()]);
    for dir in &dirs {
        let plugin = dir.join("netpath");
        assert!(out.contains(plugin.to_str().unwrap()), "{out}");
        let mut cmd = Command::new(&plugin);
        cmd.env("CNI_COMMAND", "VERSION");
        let reply = t.cni_with(cmd, br#"{"cniVersion":"1.0.0"}"#);
        assert!(reply.ok && reply.json["cniVersion"] == "1.0.0", "{}", reply.stdout);
    }
    t.teardown();
}
