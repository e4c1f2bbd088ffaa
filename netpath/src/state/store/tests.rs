use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

use super::{schema::*, *};
use crate::{
    error::Field,
    types::{
        creator::Creator,
        identity::NsIdentity,
        name::{Hostname, Naming},
        net::Ipv4Net,
    },
};

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("netpath-store-{}-{}", std::process::id(), now_nanos()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn now_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

fn net(name: &str, subnet: Option<&str>) -> NewNetwork {
    NewNetwork {
        name: name.into(),
        bridge: format!("np-{name}"),
        subnet: subnet.map(|s| s.parse().unwrap()),
        gateway: None,
        mtu: 1500,
        internal: false,
        masquerade: true,
        uplink: None,
        xdp: Xdp::Off,
        external_id: None,
    }
}

fn endpoint(id: &str, network: &NetworkRecord, ip: Option<&str>) -> NewEndpoint {
    NewEndpoint {
        id: id.into(),
        network: network.clone(),
        ip: ip.map(|s| s.parse().unwrap()),
        mac: None,
        ifname: "eth0".into(),
        host_veth: format!("npv{id}"),
        netns_path: "/run/netns/x".into(),
        netns_id: NsIdentity { dev: 1, ino: 2, cookie: 3, boot: "b".into() },
        ports: Vec::new(),
        name: None,
        aliases: Vec::new(),
        handed: false,
        creator: Creator::Cli,
    }
}

#[test]
fn a_version_1_database_is_migrated_and_keeps_its_rows() {
    let dir = tempdir();
    {
        let conn = Connection::open(dir.join("netpath.db")).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute_batch(
            "INSERT INTO networks VALUES (1, 'web', 'np-web', '10.9.0.0/24', '10.9.0.1', 1500, 0, 1, NULL, 0, 'ready', 1, 0);
             INSERT INTO endpoints VALUES ('a', 1, '10.9.0.2', '02:4e:0a:09:00:02', 'eth0', 'npva', '/run/netns/a',
                 7, 8, 'ready', 1, 0);
             INSERT INTO endpoints VALUES ('b', 1, '10.9.0.3', '02:4e:0a:09:00:03', 'eth0', 'npvb', '/run/netns/b',
                 7, 9, 'ready', 1, 0);",
        )
        .unwrap();
    }
    let store = Store::open(&dir).unwrap();
    let ep = store.endpoint("a").unwrap().unwrap();
    assert_eq!(ep.netns_id, NsIdentity { dev: 7, ino: 8, cookie: 0, boot: String::new() });
    assert_eq!(ep.state, State::Ready);
    let slots: Vec<u16> = store.endpoints(None).unwrap().iter().map(|e| e.slot).collect();
    assert_eq!(slots, [0, 1], "each migrated endpoint gets a counter slot of its own");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn networks_get_disjoint_subnets_and_unique_names() {
    let dir = tempdir();
    let mut store = Store::open(&dir).unwrap();
    let routes = ["10.200.0.0/24".parse().unwrap()];
    let a = store.create_network(&net("a", None), &routes).unwrap();
    let b = store.create_network(&net("b", None), &routes).unwrap();
    assert_eq!(a.subnet.to_string(), "10.200.4.0/22");
    assert_eq!(b.subnet.to_string(), "10.200.8.0/22");
    assert_eq!(a.gateway.to_string(), "10.200.4.1");
    let err = store.create_network(&net("c", Some("10.200.8.0/24")), &[]).unwrap_err();
    // The store names the field; a frontend names it its way (here as the CLI does).
    let flag = |f: crate::error::Field| format!("--{}", f.noun()).into();
    assert_eq!(err.render(&flag), "network 'b' already uses 10.200.8.0/22; pick another --subnet");
    let err = store.create_network(&net("a", Some("10.9.0.0/24")), &[]).unwrap_err().to_string();
    assert!(err.contains("already exists"), "{err}");
    // A refused request leaves no row.
    assert_eq!(store.networks().unwrap().len(), 2);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn engine_ipam_and_attach_share_one_allocator() {
    let dir = tempdir();
    let mut store = Store::open(&dir).unwrap();
    let pool: Ipv4Net = "10.9.0.0/24".parse().unwrap();
    assert_eq!(store.request_pool(Some(pool), &[]).unwrap(), pool);
    assert!(store.request_pool(Some("10.9.0.128/25".parse().unwrap()), &[]).is_err(), "overlap");
    let auto = store.request_pool(None, &["10.200.0.0/22".parse().unwrap()]).unwrap();
    assert_eq!(auto.to_string(), "10.200.4.0/22");
    assert_eq!(store.request_address(pool, None, true).unwrap().to_string(), "10.9.0.1");
    assert_eq!(store.request_address(pool, None, false).unwrap().to_string(), "10.9.0.2");
    let n = store.create_network(&NewNetwork { external_id: Some("d1".into()), ..net("a", Some("10.9.0.0/24")) }, &[]);
    let n = n.unwrap();
    store.set_network_ready(n.id).unwrap();
    assert_eq!(store.network_by_external_id("d1").unwrap().unwrap().id, n.id);
    // An attach without --ip skips what the engine holds, and the engine sees the attach.
    let Reservation::New(e) = store.reserve_endpoint(&endpoint("e1", &n, None)).unwrap() else { panic!() };
    assert_eq!(e.ip.to_string(), "10.9.0.3");
    assert!(store.request_address(pool, Some(e.ip), false).is_err());
    assert_eq!(store.request_address(pool, None, false).unwrap().to_string(), "10.9.0.4");
    store.release_address(pool, "10.9.0.2".parse().unwrap()).unwrap();
    assert_eq!(store.request_address(pool, None, false).unwrap().to_string(), "10.9.0.2");
    store.release_pool(pool).unwrap();
    assert!(store.request_address(pool, None, false).is_err(), "a released pool hands out nothing");
    std::fs::remove_dir_all(dir).unwrap();
}

fn new_slot(store: &mut Store, id: &str, n: &NetworkRecord) -> u16 {
    match store.reserve_endpoint(&endpoint(id, n, None)).unwrap() {
        Reservation::New(e) => e.slot,
        Reservation::Existing(_) => panic!("{id} existed"),
    }
}

#[test]
fn counter_slots_are_unique_across_networks_and_reused_lowest_first() {
    let dir = tempdir();
    let mut store = Store::open(&dir).unwrap();
    let a = store.create_network(&net("a", Some("10.9.0.0/24")), &[]).unwrap();
    let b = store.create_network(&net("b", Some("10.10.0.0/24")), &[]).unwrap();
    let mut slot = |id: &str, n: &NetworkRecord| new_slot(&mut store, id, n);
    assert_eq!([slot("a1", &a), slot("b1", &b), slot("a2", &a)], [0, 1, 2]);
    store.remove_endpoint("b1").unwrap();
    store.remove_endpoint("a1").unwrap();
    let mut slot = |id: &str, n: &NetworkRecord| new_slot(&mut store, id, n);
    assert_eq!([slot("b2", &b), slot("b3", &b), slot("a3", &a)], [0, 1, 3]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn endpoints_reserve_addresses_once() {
    let dir = tempdir();
    let mut store = Store::open(&dir).unwrap();
    let n = store.create_network(&net("a", Some("10.9.0.0/24")), &[]).unwrap();
    store.set_network_ready(n.id).unwrap();
    let Reservation::New(e1) = store.reserve_endpoint(&endpoint("e1", &n, None)).unwrap() else { panic!() };
    assert_eq!(e1.ip.to_string(), "10.9.0.2");
    assert_eq!(e1.mac, "02:4e:0a:09:00:02");
    store.set_endpoint_ready("e1").unwrap();
    let Reservation::Existing(again) = store.reserve_endpoint(&endpoint("e1", &n, None)).unwrap() else { panic!() };
    assert_eq!(again.ip, e1.ip);
    let err = store.reserve_endpoint(&endpoint("e2", &n, Some("10.9.0.2"))).err().unwrap().to_string();
    assert!(err.contains("already in use"), "{err}");
    let Reservation::New(e2) = store.reserve_endpoint(&endpoint("e2", &n, None)).unwrap() else { panic!() };
    assert_eq!(e2.ip.to_string(), "10.9.0.3");
    store.remove_endpoint("e1").unwrap();
    let Reservation::New(e3) = store.reserve_endpoint(&endpoint("e3", &n, None)).unwrap() else { panic!() };
    assert_eq!(e3.ip.to_string(), "10.9.0.2", "a freed address is handed out again");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A database written by the previous release (schema 4: `netpath network create web --subnet
/// 10.61.0.0/24`, `network create db --internal`, `attach --network web --id c1 -p 18080:80
/// -p 127.0.0.1:5353:53/udp`), copied and opened by this one.
#[test]
fn a_database_of_the_previous_release_is_migrated_and_keeps_its_rows() {
    let dir = tempdir();
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schema-v4.db");
    std::fs::copy(fixture, dir.join("netpath.db")).unwrap();
    let mut store = Store::open(&dir).unwrap();
    let version: i64 = Connection::open(dir.join("netpath.db"))
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let web = store.network("web").unwrap();
    assert_eq!((web.subnet.to_string(), web.gateway.to_string()), ("10.61.0.0/24".into(), "10.61.0.1".into()));
    assert_eq!((web.subnet6, web.gateway6, web.state), (None, None, State::Ready));
    assert!(store.network("db").unwrap().internal);
    let c1 = store.endpoint("c1").unwrap().unwrap();
    assert_eq!((c1.ip.to_string(), c1.ip6, c1.mac.as_str()), ("10.61.0.2".into(), None, "02:4e:0a:3d:00:02"));
    let ports: Vec<String> = c1.ports.iter().map(ToString::to_string).collect();
    assert_eq!(ports, ["0.0.0.0:18080->80/tcp", "127.0.0.1:5353->53/udp"]);
    // The migrated database takes new rows: the next address, and an IPv6 column that holds one.
    let next = store.reserve_endpoint(&endpoint("c2", &web, None)).unwrap();
    let Reservation::New(next) = next else { panic!("c2 was not new") };
    assert_eq!(next.ip.to_string(), "10.61.0.3");
    drop(store);
    let conn = Connection::open(dir.join("netpath.db")).unwrap();
    conn.execute("UPDATE endpoints SET ip6 = 'fd00:61::3' WHERE id = 'c2'", []).unwrap();
    let dup = conn.execute("UPDATE endpoints SET ip6 = 'fd00:61::3' WHERE id = 'c1'", []);
    assert!(dup.is_err(), "two endpoints of a network took one IPv6 address");
    drop(conn);
    let store = Store::open(&dir).unwrap();
    assert_eq!(store.endpoint("c2").unwrap().unwrap().ip6, Some("fd00:61::3".parse().unwrap()));
    std::fs::remove_dir_all(dir).unwrap();
}

/// Schema 5 did not record who made an endpoint: its rows come out with no creator (so no
/// runtime's GC takes them for its own), and new rows record theirs.
#[test]
fn a_version_5_database_is_migrated_and_its_endpoints_have_no_creator() {
    let dir = tempdir();
    {
        let conn = Connection::open(dir.join("netpath.db")).unwrap();
        for step in [SCHEMA, MIGRATE_TO_2, MIGRATE_TO_3, MIGRATE_TO_4, MIGRATE_TO_5] {
            conn.execute_batch(step).unwrap();
        }
        conn.pragma_update(None, "user_version", 5).unwrap();
        conn.execute_batch(
            "INSERT INTO networks (id, name, bridge, subnet, gateway, mtu, internal, masquerade, uplink, xdp, state,
                 owner_pid, created_at) VALUES (1, 'web', 'np-web', '10.9.0.0/24', '10.9.0.1', 1500, 0, 1, NULL, 0,
                 'ready', 1, 0);
             INSERT INTO endpoints (id, network_id, ip, mac, ifname, host_veth, netns_path, netns_dev, netns_ino,
                 state, owner_pid, created_at, slot) VALUES ('old-eth0', 1, '10.9.0.2', '02:4e:0a:09:00:02', 'eth0',
                 'npvold', '/run/netns/a', 7, 8, 'ready', 1, 0, 0);",
        )
        .unwrap();
    }
    let mut store = Store::open(&dir).unwrap();
    let version: i64 = store.conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(store.endpoint("old-eth0").unwrap().unwrap().creator, None);
    let web = store.network("web").unwrap();
    let cni = NewEndpoint { creator: Creator::Cni, ..endpoint("new-eth0", &web, None) };
    let Reservation::New(new) = store.reserve_endpoint(&cni).unwrap() else { panic!("new-eth0 was not new") };
    assert_eq!(new.creator, Some(Creator::Cni));
    assert_eq!(store.endpoint("new-eth0").unwrap().unwrap().creator, Some(Creator::Cni));
    std::fs::remove_dir_all(dir).unwrap();
}

fn named(id: &str, network: &NetworkRecord, name: Option<&str>, aliases: &[&str]) -> NewEndpoint {
    let hostname = |field, text: &str| Hostname::parse(field, text).unwrap();
    NewEndpoint {
        name: name.map(|n| Naming::Chosen(hostname(Field::Name, n))),
        aliases: aliases.iter().map(|a| hostname(Field::Alias, a)).collect(),
        ..endpoint(id, network, None)
    }
}

/// A name resolves to one endpoint of its network; an alias may be shared, but never with a
/// name. A refused reservation leaves no row and takes no address.
#[test]
fn names_are_unique_per_network_and_aliases_are_shared() {
    let dir = tempdir();
    let mut store = Store::open(&dir).unwrap();
    let a = store.create_network(&net("a", Some("10.9.0.0/24")), &[]).unwrap();
    let b = store.create_network(&net("b", Some("10.10.0.0/24")), &[]).unwrap();
    let Reservation::New(web) = store.reserve_endpoint(&named("w1", &a, Some("web"), &["www", "front"])).unwrap()
    else {
        panic!("w1 was not new")
    };
    assert_eq!((web.name.as_deref(), web.aliases.as_slice()), (Some("web"), &["www".to_string(), "front".into()][..]));
    let refused = |store: &mut Store, req: NewEndpoint| store.reserve_endpoint(&req).err().expect("refused");
    let flag = |f: Field| format!("--{}", f.noun()).into();

    let e = refused(&mut store, named("w2", &a, Some("WEB"), &[]));
    assert_eq!(e.exit_code(), 4);
    assert_eq!(
        e.render(&flag),
        "--name 'WEB' is the name of endpoint 'w1' on network 'a'; pick another, or detach 'w1' first"
    );
    let e = refused(&mut store, named("w2", &a, Some("www"), &[]));
    assert!(e.render(&flag).starts_with("--name 'www' is an alias of endpoint 'w1'"), "{e}");
    let e = refused(&mut store, named("w2", &a, None, &["Web"]));
    assert!(e.render(&flag).starts_with("--alias 'Web' is the name of endpoint 'w1'"), "{e}");
    assert!(store.endpoint("w2").unwrap().is_none(), "a refused name left a row");

    // The same name on another network; a shared alias; an unnamed endpoint.
    assert!(matches!(store.reserve_endpoint(&named("w3", &b, Some("web"), &["www"])), Ok(Reservation::New(_))));
    let Reservation::New(w4) = store.reserve_endpoint(&named("w4", &a, Some("web2"), &["www"])).unwrap() else {
        panic!("w4 was not new")
    };
    assert_eq!(w4.ip.to_string(), "10.9.0.3", "the refused attaches took no address");
    assert!(matches!(store.reserve_endpoint(&endpoint("u1", &a, None)), Ok(Reservation::New(_))));
    let listed = store.endpoints(Some(a.id)).unwrap();
    let names: Vec<_> = listed.iter().map(|e| (e.id.as_str(), e.name.as_deref(), e.aliases.len())).collect();
    assert_eq!(names, [("u1", None, 0), ("w1", Some("web"), 2), ("w4", Some("web2"), 1)]);

    // Removing an endpoint frees its name and its aliases' rows.
    store.remove_endpoint("w1").unwrap();
    assert!(matches!(store.reserve_endpoint(&named("w5", &a, Some("web"), &[])), Ok(Reservation::New(_))));
    let left: i64 = store.conn.query_row("SELECT COUNT(*) FROM endpoint_aliases", [], |r| r.get(0)).unwrap();
    assert_eq!(left, 2, "w3's and w4's aliases");

    // A derived name that is taken is left out; a derived name that is free is kept.
    let derived = |id: &str, name: &str| NewEndpoint {
        name: Some(Naming::Derived(Hostname::parse(Field::Name, name).unwrap())),
        ..endpoint(id, &a, None)
    };
    let Reservation::New(unnamed) = store.reserve_endpoint(&derived("d1", "web")).unwrap() else { panic!() };
    assert_eq!(unnamed.name, None);
    let Reservation::New(free) = store.reserve_endpoint(&derived("d2", "free")).unwrap() else { panic!() };
    assert_eq!(free.name.as_deref(), Some("free"));
    // An alias that is the endpoint's own name is not kept twice.
    let Reservation::New(solo) = store.reserve_endpoint(&named("s1", &b, Some("solo"), &["SOLO", "x"])).unwrap() else {
        panic!()
    };
    assert_eq!((solo.name.as_deref(), solo.aliases.as_slice()), (Some("solo"), &["x".to_string()][..]));
    std::fs::remove_dir_all(dir).unwrap();
}

/// Schema 6 had no names: its endpoints come out unnamed, and new ones record theirs.
#[test]
fn a_version_6_database_is_migrated_and_its_endpoints_have_no_name() {
    let dir = tempdir();
    {
        let conn = Connection::open(dir.join("netpath.db")).unwrap();
        for step in [SCHEMA, MIGRATE_TO_2, MIGRATE_TO_3, MIGRATE_TO_4, MIGRATE_TO_5, MIGRATE_TO_6] {
            conn.execute_batch(step).unwrap();
        }
        conn.pragma_update(None, "user_version", 6).unwrap();
        conn.execute_batch(
            "INSERT INTO networks (id, name, bridge, subnet, gateway, mtu, internal, masquerade, uplink, xdp, state,
                 owner_pid, created_at) VALUES (1, 'web', 'np-web', '10.9.0.0/24', '10.9.0.1', 1500, 0, 1, NULL, 0,
                 'ready', 1, 0);
             INSERT INTO endpoints (id, network_id, ip, mac, ifname, host_veth, netns_path, netns_dev, netns_ino,
                 state, owner_pid, created_at, slot, creator) VALUES ('old', 1, '10.9.0.2', '02:4e:0a:09:00:02',
                 'eth0', 'npvold', '/run/netns/a', 7, 8, 'ready', 1, 0, 0, 'cli');",
        )
        .unwrap();
    }
    let mut store = Store::open(&dir).unwrap();
    let version: i64 = store.conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let old = store.endpoint("old").unwrap().unwrap();
    assert_eq!((old.name, old.aliases.len(), old.creator), (None, 0, Some(Creator::Cli)));
    let web = store.network("web").unwrap();
    let Reservation::New(new) = store.reserve_endpoint(&named("new", &web, Some("api"), &["v1"])).unwrap() else {
        panic!("new was not new")
    };
    assert_eq!((new.name.as_deref(), new.aliases.as_slice()), (Some("api"), &["v1".to_string()][..]));
    std::fs::remove_dir_all(dir).unwrap();
}
