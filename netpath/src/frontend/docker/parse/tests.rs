use super::*;

#[test]
fn create_network_takes_the_pool_and_options() {
    let raw = br#"{"NetworkID":"0123456789abcdef0123","Options":{"com.docker.network.generic":{"mtu":"1400","xdp":"true"},"com.docker.network.internal":false},"IPv4Data":[{"AddressSpace":"x","Pool":"10.77.0.0/24","Gateway":"10.77.0.1/24"}]}"#;
    let Request::CreateNetwork(n) = parse("/NetworkDriver.CreateNetwork", raw).unwrap() else { panic!() };
    assert_eq!(n.spec.name, "docker-0123456789ab");
    assert_eq!(n.spec.bridge.as_deref(), Some("np-0123456789ab"));
    assert_eq!(n.spec.subnet.map(|s| s.to_string()).as_deref(), Some("10.77.0.0/24"));
    assert_eq!(n.spec.gateway.map(|g| g.to_string()).as_deref(), Some("10.77.0.1"));
    assert_eq!(n.spec.mtu, Some(1400));
    assert!(n.spec.xdp == Xdp::Filter && !n.spec.internal && !n.spec.no_masquerade);
    let with_xdp = |value: &str| {
        let raw = format!(
            r#"{{"NetworkID":"0123456789abcdef0123","Options":{{"com.docker.network.generic":{{"xdp":{value}}}}},"IPv4Data":[{{"Pool":"10.77.0.0/24"}}]}}"#
        );
        parse("/NetworkDriver.CreateNetwork", raw.as_bytes()).map(|r| match r {
            Request::CreateNetwork(n) => n.spec.xdp,
            _ => panic!("not a CreateNetwork"),
        })
    };
    assert_eq!(with_xdp(r#""redirect""#).unwrap(), Xdp::Redirect);
    assert_eq!(with_xdp("false").unwrap(), Xdp::Off);
    assert!(matches!(with_xdp(r#""bogus""#), Err(Refusal::Invalid(m)) if m.contains("xdp=bogus")));
    let bad = br#"{"NetworkID":"0123456789abcdef0123","Options":{"com.docker.network.generic":{"colour":"red"}},"IPv4Data":[{"Pool":"10.77.0.0/24"}]}"#;
    assert!(matches!(parse("/NetworkDriver.CreateNetwork", bad), Err(Refusal::Invalid(m)) if m.contains("colour")));
}

#[test]
fn portmap_and_refusals() {
    let raw = br#"{"NetworkID":"n","EndpointID":"e","Options":{"com.docker.network.portmap":[{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080},{"Proto":17,"IP":"","Port":53,"HostIP":"127.0.0.1","HostPort":0,"HostPortEnd":0}]}}"#;
    let Request::ProgramExternalConnectivity { ports, .. } =
        parse("/NetworkDriver.ProgramExternalConnectivity", raw).unwrap()
    else {
        panic!()
    };
    assert_eq!(ports[0].host_port, 8080);
    assert_eq!(
        (ports[1].proto, ports[1].host_ip, ports[1].host_port),
        (Proto::Udp, Some(Ipv4Addr::LOCALHOST.into()), 0)
    );
    assert_eq!(parse("/Nope.Method", b"{}").unwrap_err(), Refusal::UnknownMethod("Nope.Method".into()));
    assert!(matches!(parse("/NetworkDriver.Join", b"{not json"), Err(Refusal::Invalid(_))));
    assert!(matches!(parse("/IpamDriver.RequestPool", br#"{"V6":true}"#), Err(Refusal::Invalid(_))));
    // Go sends empty maps as null.
    let raw = br#"{"PoolID":"10.1.0.0/24","Address":"","Options":null}"#;
    assert!(matches!(parse("/IpamDriver.RequestAddress", raw), Ok(Request::RequestAddress { gateway: false, .. })));
}
