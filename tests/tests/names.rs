//! The names containers answer to on their network, from every frontend: `attach --name
//! --alias`, the CNI plugin (`K8S_POD_NAME` in CNI_ARGS, the `aliases` capability) and the OCI
//! hook (an annotation, or the bundle's hostname). A name is unique on its network, an alias
//! may be shared; a refused name leaves nothing behind, and of parallel attaches with one
//! name exactly one wins.
use std::{
    io::Write,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use netpath_tests::{Topology, cni::Call};
use serde_json::{Value, json};

/// What a refused attach must not have left: rows, host veths, addresses in use.
fn leftovers(t: &Topology) -> (String, Vec<String>) {
    let rows = t.np(&["endpoint", "ls", "--format", "json"]);
    let links: Value = serde_json::from_str(&t.exec("host", &["ip", "-j", "link", "show"])).unwrap();
    let veths = links.as_array().unwrap().iter().filter_map(|l| l["ifname"].as_str());
    (rows, veths.filter(|name| name.starts_with("npv")).map(String::from).collect())
}

fn endpoint(t: &Topology, id: &str) -> Value {
    t.np_json(&["endpoint", "inspect", id])
}

#[test]
fn names_are_shown_unique_per_network_and_freed_by_detach() {
    let mut t = Topology::new("nam");
    t.network("web", &["--subnet", "10.72.0.0/24"]);
    t.network("db", &["--subnet", "10.73.0.0/24"]);
    let a = t.container("a", "web", &["--name", "web1", "--alias", "www", "--alias", "Front", "--alias", "WWW"]);
    assert_eq!((&a["name"], &a["aliases"]), (&json!("web1"), &json!(["www", "Front"])), "{a}");
    let listed = t.np_json(&["endpoint", "ls"]);
    assert_eq!((&listed[0]["name"], &listed[0]["aliases"]), (&json!("web1"), &json!(["www", "Front"])));
    assert!(t.np(&["endpoint", "ls"]).contains("web1 (+2)"));
    let text = t.np(&["endpoint", "inspect", "a", "--format", "text"]);
    assert!(text.contains("web1") && text.contains("www, Front"), "{text}");

    // The same name on the same network, whatever its case: refused, naming the holder, and
    // nothing is left of the attempt (no row, no veth, its address still free).
    let before = leftovers(&t);
    let b = t.netns("b");
    let err = t.np_err(&["attach", "--network", "web", "--netns", &b, "--id", "b", "--name", "WEB1"]);
    assert_eq!(
        err,
        "netpath: --name 'WEB1' is the name of endpoint 'a' on network 'web'; pick another, or detach 'a' first"
    );
    let err = t.np_err(&["attach", "--network", "web", "--netns", &b, "--id", "b", "--name", "www"]);
    assert!(err.contains("--name 'www' is an alias of endpoint 'a'"), "{err}");
    let err = t.np_err(&["attach", "--network", "web", "--netns", &b, "--id", "b", "--alias", "Web1"]);
    assert!(err.contains("--alias 'Web1' is the name of endpoint 'a'"), "{err}");
    assert_eq!(t.netpath(&["attach", "--network", "web", "--netns", &b, "--name", "web1"]).status.code(), Some(4));
    assert_eq!(leftovers(&t), before, "a refused name left something");

    // An alias is shared; the same name on another network is another name.
    let b = t.np_json(&["attach", "--network", "web", "--netns", &b, "--id", "b", "--name", "web2", "--alias", "www"]);
    assert_eq!(b["ip"], "10.72.0.3", "the refused attaches took no address");
    let d = t.container("d", "db", &["--name", "web1"]);
    assert_eq!(d["name"], "web1");

    // Attaching an id again with other names is refused; with the same ones it is the same
    // endpoint.
    let b_ns = t.ns_path("b");
    let again = ["attach", "--network", "web", "--netns", &b_ns, "--id", "b"];
    let err = t.np_err(&[&again[..], &["--name", "web2"]].concat());
    assert!(err.contains("attached with --alias www, not none; detach it first"), "{err}");
    let err = t.np_err(&[&again[..], &["--name", "other", "--alias", "www"]].concat());
    assert!(err.contains("--name web2, not other"), "{err}");
    assert_eq!(t.np_json(&[&again[..], &["--name", "WEB2", "--alias", "WWW"]].concat())["ip"], "10.72.0.3");

    // Detach frees the name and the aliases.
    t.np(&["detach", "--id", "a"]);
    let c = t.container("c", "web", &["--name", "Web1", "--alias", "front"]);
    assert_eq!(c["name"], "Web1");
    let unnamed = t.container("e", "web", &[]);
    assert_eq!((&unnamed["name"], &unnamed["aliases"]), (&Value::Null, &json!([])));
    t.teardown();
}

#[test]
fn bad_names_are_refused_with_one_line_and_change_nothing() {
    let mut t = Topology::new("nbad");
    t.network("web", &["--subnet", "10.74.0.0/24"]);
    t.container("used", "web", &["--name", "used"]);
    let free = t.netns("free");
    let before = leftovers(&t);
    let rule = "a container name is letters, digits, '-' and '.'";
    let long_label = "a".repeat(64);
    let too_long = ["b".repeat(63), "b".repeat(63), "b".repeat(63), "b".repeat(63)].join(".");
    let huge = "c".repeat(100_000);
    let bad = [
        ("web_1!", "'web_1!'"),
        ("", "''"),
        ("-web", "'-web'"),
        ("web-", "'web-'"),
        ("a..b", "'a..b'"),
        ("web.", "'web.'"),
        (long_label.as_str(), "'aaaa"),
        (too_long.as_str(), "(255 bytes)"),
        (huge.as_str(), "(100000 bytes)"),
        ("wéb", "'wéb'"),
        ("we\u{7}b\nx", "'we\\u{7}b\\nx'"),
        ("\u{1b}[31mred", "'\\u{1b}[31mred'"),
        ("'; DROP TABLE endpoints; --", "'\\'; DROP TABLE endpoints; --'"),
        ("a%' OR name LIKE '%", "'a%\\' OR name LIKE \\'%'"),
    ];
    for (name, shown) in &bad {
        for flag in ["--name", "--alias"] {
            // `--name=-web`: clap would take a separate `-web` for a flag.
            let out = t.netpath(&["attach", "--network", "web", "--netns", &free, &format!("{flag}={name}")]);
            let err = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
            assert_eq!(out.status.code(), Some(2), "{flag} {name:?}: {err}");
            assert!(err.starts_with(&format!("netpath: {flag} '")), "{flag} {name:?}: {err}");
            assert!(err.contains(shown) && err.contains(rule) && !err.contains('\n'), "{flag} {name:?}: {err}");
            assert!(err.len() < 400, "the message repeats a long name whole: {}", err.len());
        }
    }
    let err = t.np_err(&["attach", "--network", "web", "--netns", &free, "--name", "10.74.0.9"]);
    assert!(err.contains("an IPv4 address is not a container name"), "{err}");
    let mut many = vec!["attach", "--network", "web", "--netns", &free];
    let aliases: Vec<String> = (0..65).map(|i| format!("alias{i}")).collect();
    many.extend(aliases.iter().flat_map(|a| ["--alias", a.as_str()]));
    let err = t.np_err(&many);
    assert!(err.contains("65 names given as --alias; an endpoint may have 64 at most"), "{err}");
    assert_eq!(leftovers(&t), before, "a bad name changed something");
    let tables = t.np_json(&["endpoint", "ls"]);
    assert_eq!(tables.as_array().unwrap().len(), 1, "{tables}");
    t.teardown();
}

#[test]
fn of_parallel_attaches_with_one_name_exactly_one_wins() {
    let mut t = Topology::new("npar");
    t.network("web", &["--subnet", "10.75.0.0/24"]);
    let paths: Vec<String> = (0..6).map(|i| t.netns(&format!("c{i}"))).collect();
    let children: Vec<Child> = paths
        .iter()
        .map(|path| {
            t.netpath_cmd(&["attach", "--network", "web", "--netns", path, "--name", "api"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outcomes: Vec<_> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    let won = outcomes.iter().filter(|o| o.status.success()).count();
    assert_eq!(won, 1, "{outcomes:?}");
    for lost in outcomes.iter().filter(|o| !o.status.success()) {
        let err = String::from_utf8_lossy(&lost.stderr);
        assert!(err.contains("--name 'api' is the name of endpoint"), "{err}");
    }
    let (rows, veths) = leftovers(&t);
    let rows: Value = serde_json::from_str(&rows).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    assert_eq!(rows[0]["name"], "api");
    assert_eq!(veths.len(), 1, "{veths:?}");
    t.teardown();
}

fn cni_add(t: &Topology, container: &str, netns: &str, args: &str, config: &Value) -> netpath_tests::cni::Reply {
    let mut cmd = t.cni_cmd(&Call { command: "ADD", container_id: container, netns, ifname: "eth0" });
    cmd.env("CNI_ARGS", args);
    t.cni_with(cmd, config.to_string().as_bytes())
}

#[test]
fn cni_takes_the_pod_name_and_the_aliases_capability() {
    let mut t = Topology::new("ncni");
    let mut config = json!({ "cniVersion": "1.1.0", "name": "cninames", "type": "netpath", "subnet": "10.76.0.0/24" });
    config["runtimeConfig"] = json!({ "aliases": { "cninames": ["api", "v1.api"], "elsewhere": ["x"] } });
    let a = t.netns("a");
    let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=web;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=a";
    let added = cni_add(&t, "a", &a, args, &config);
    assert!(added.ok, "{}", added.stdout);
    let ep = endpoint(&t, "a-eth0");
    assert_eq!((&ep["name"], &ep["aliases"]), (&json!("web"), &json!(["api", "v1.api"])), "{ep}");
    // The result lists the bridge first.
    let result = &added.json;
    assert_eq!(result["interfaces"][0]["name"], "np-cninames", "{result}");
    assert_eq!(result["interfaces"][2]["sandbox"], a.as_str(), "{result}");
    assert_eq!(result["ips"][0]["interface"], 2, "{result}");

    // The pod's name is derived, not chosen: another pod of the same name (of another
    // Kubernetes namespace) and one whose name cannot be a host name (Podman's generated
    // ones) get no name rather than failing to start. An alias that cannot be one was asked
    // for and is refused.
    let b = t.netns("b");
    let added = cni_add(&t, "b", &b, "K8S_POD_NAME=web", &config_without_aliases(&config));
    assert!(added.ok, "{}", added.stdout);
    assert_eq!(endpoint(&t, "b-eth0")["name"], Value::Null);
    let x = t.netns("x");
    let added = cni_add(&t, "x", &x, "K8S_POD_NAME=eager_tesla", &config_without_aliases(&config));
    assert!(added.ok, "{}", added.stdout);
    assert_eq!(endpoint(&t, "x-eth0")["name"], Value::Null);
    let c = t.netns("c");
    config["runtimeConfig"]["aliases"]["cninames"] = json!(["bad_alias"]);
    let refused = cni_add(&t, "c", &c, "K8S_POD_NAME=c", &config);
    assert_eq!(refused.code(), 7, "{}", refused.stdout);
    assert!(refused.msg().starts_with("the aliases capability 'bad_alias': a container name is"), "{}", refused.msg());
    assert_eq!(t.netpath(&["endpoint", "inspect", "c-eth0"]).status.code(), Some(3), "c-eth0 was attached");

    // DEL frees the name; aliases are ADD's, so a bad one does not stop a DEL.
    let del = t.cni(&Call { command: "DEL", container_id: "a", netns: &a, ifname: "eth0" }, &config);
    assert!(del.ok, "{}", del.stdout);
    assert!(cni_add(&t, "c", &c, "K8S_POD_NAME=web", &config_without_aliases(&config)).ok);
    assert_eq!(endpoint(&t, "c-eth0")["name"], "web");
    t.teardown();
}

fn config_without_aliases(config: &Value) -> Value {
    let mut config = config.clone();
    config.as_object_mut().unwrap().remove("runtimeConfig");
    config
}

/// Runs `netpath oci-hook attach` with `state` on stdin; returns (exit code, stderr).
fn oci_attach(t: &Topology, state: &Value) -> (i32, String) {
    let mut child = t
        .netpath_cmd(&["oci-hook", "attach", "--network", "web"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(state.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).trim().to_string())
}

/// A process in namespace `name`, standing in for a container's init; its pid.
fn sleeper(t: &mut Topology, name: &str) -> (Child, u32) {
    t.netns(name);
    let ns = format!("{}-{name}", t.prefix);
    let child = Command::new("ip").args(["netns", "exec", &ns, "sleep", "60"]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let pid = loop {
        let out = Command::new("ip").args(["netns", "pids", &ns]).output().unwrap();
        if let Some(pid) = String::from_utf8_lossy(&out.stdout).split_whitespace().next() {
            break pid.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "no process in {ns}");
        std::thread::sleep(Duration::from_millis(20));
    };
    (child, pid)
}

#[test]
fn the_oci_hook_takes_the_annotation_or_else_the_hostname() {
    let mut t = Topology::new("noci");
    t.network("web", &["--subnet", "10.77.0.0/24"]);
    let bundle = t.run_dir.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(bundle.join("config.json"), json!({ "ociVersion": "1.0.2", "hostname": "box" }).to_string())
        .unwrap();
    let (mut a, a_pid) = sleeper(&mut t, "a");
    let (mut b, b_pid) = sleeper(&mut t, "b");
    let (mut c, c_pid) = sleeper(&mut t, "c");
    let (mut d, d_pid) = sleeper(&mut t, "d");
    let state = |id: &str, pid: u32, annotations: Value| json!({ "ociVersion": "1.0.2", "id": id, "pid": pid, "bundle": bundle, "annotations": annotations });

    // A bad annotation is refused, naming the annotation; nothing is attached.
    let bad = state("a", a_pid, json!({ "io.netpath.name": "no_underscores" }));
    let (code, err) = oci_attach(&t, &bad);
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("netpath: annotation io.netpath.name 'no_underscores': a container name is"), "{err}");
    assert!(t.np_json(&["endpoint", "ls"]).as_array().unwrap().is_empty());

    let annotated = state("a", a_pid, json!({ "io.netpath.name": "db", "io.netpath.aliases": "primary, pg" }));
    assert_eq!(oci_attach(&t, &annotated).0, 0);
    let ep = endpoint(&t, "a");
    assert_eq!((&ep["name"], &ep["aliases"]), (&json!("db"), &json!(["primary", "pg"])), "{ep}");
    assert_eq!(oci_attach(&t, &state("b", b_pid, json!({}))).0, 0);
    assert_eq!(endpoint(&t, "b")["name"], "box", "the bundle's hostname");
    // A name taken is refused in the hook's words, not by `attach`'s flags.
    let (code, err) = oci_attach(&t, &state("c", c_pid, json!({ "io.netpath.name": "DB" })));
    assert_eq!(code, 4, "{err}");
    assert!(
        err.starts_with("netpath: the container's name 'DB' is the name of endpoint 'a' on network 'web'"),
        "{err}"
    );
    let (code, err) = oci_attach(&t, &state("c", c_pid, json!({ "io.netpath.aliases": "box" })));
    assert_eq!(code, 4, "{err}");
    assert!(err.starts_with("netpath: annotation io.netpath.aliases 'box' is the name of endpoint 'b'"), "{err}");
    assert_eq!(t.netpath(&["endpoint", "inspect", "c"]).status.code(), Some(3), "c was attached");
    // The hostname is derived, not chosen: taken, it is left out (`runc spec` gives every
    // container the hostname "runc").
    assert_eq!(oci_attach(&t, &state("c", c_pid, json!({}))).0, 0);
    assert_eq!(endpoint(&t, "c")["name"], Value::Null);
    // A FIFO in place of config.json is not read (it would hold the hook forever).
    let fifo_bundle = t.run_dir.join("fifo-bundle");
    std::fs::create_dir_all(&fifo_bundle).unwrap();
    netpath_tests::run(Command::new("mkfifo").arg(fifo_bundle.join("config.json")));
    let fifo_state = json!({ "ociVersion": "1.0.2", "id": "d", "pid": d_pid, "bundle": fifo_bundle });
    assert_eq!(oci_attach(&t, &fifo_state).0, 0);
    assert_eq!(endpoint(&t, "d")["name"], Value::Null);

    let _ = (a.kill(), b.kill(), c.kill(), d.kill());
    let _ = (a.wait(), b.wait(), c.wait(), d.wait());
    t.teardown();
}
