//! The network configuration a CNI runtime hands the plugin on stdin, parsed at the edge into
//! typed requests (the `CNI_*` environment variables are `env`'s).
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
};

use serde::Deserialize;
use serde_json::Value;

use super::{
    env::{Attachment, endpoint_id},
    reply::{CniError, SUPPORTED_VERSIONS, code, key},
};
use crate::{
    core::{AttachSpec, NetworkSpec, Target, Xdp},
    error::Field,
    types::{
        creator::Creator,
        name::Hostname,
        net::{IpNet, Ipv4Net},
        port::{Port, Proto},
    },
};

/// More than this on stdin is not a network configuration.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// The network configuration (one plugin's entry of a conflist, as the runtime passes it).
/// Unknown keys are allowed: the spec lets runtimes and other tools add their own.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: Option<String>,
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub plugin: Option<String>,
    /// The netpath network; the configuration's `name` when absent.
    pub network: Option<String>,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub mtu: Option<u32>,
    pub internal: Option<bool>,
    pub ip_masq: Option<bool>,
    pub xdp: Option<bool>,
    pub dns: Option<Value>,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    pub prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
}

/// Capability arguments: what the runtime fills in for capabilities the conflist declares.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    #[serde(default)]
    pub ips: Vec<String>,
    /// The `aliases` capability: each network's aliases for the container, by the network
    /// configuration's `name` (as Podman's CNI backend passes them).
    #[serde(default)]
    pub aliases: BTreeMap<String, Vec<String>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Option<String>,
    #[serde(rename = "hostIP")]
    pub host_ip: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct StatedFlags {
    pub internal: Option<bool>,
    pub ip_masq: Option<bool>,
    pub xdp: Option<bool>,
}

/// A configuration that passed every check: what the commands work with.
#[derive(Clone, Debug)]
pub struct Config {
    pub version: String,
    pub network: NetworkSpec,
    /// The network flags the configuration states; an existing network is compared on
    /// these only (defaults are not a request).
    pub stated: StatedFlags,
    pub dns: Option<Value>,
    /// The configuration's `name`, under which runtimes pass per-network capability
    /// arguments (`aliases`).
    pub name: String,
    pub runtime: RuntimeConfig,
    pub prev_result: Option<Value>,
    pub valid_attachments: Option<Vec<ValidAttachment>>,
}

/// The `cniVersion` of whatever came on stdin, when it has one: replies are given in it.
pub fn version_of(input: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(input).ok()?;
    let version = value.get("cniVersion")?.as_str()?;
    SUPPORTED_VERSIONS.contains(&version).then(|| version.to_string())
}

/// Decodes (code 6 for what is not JSON of the right shape), checks the version (code 1)
/// and validates every field (code 7).
pub fn parse(input: &[u8]) -> Result<Config, CniError> {
    if input.len() > MAX_CONFIG_BYTES {
        return Err(CniError::new(
            code::DECODE,
            format!("the network configuration on stdin is larger than {MAX_CONFIG_BYTES} bytes"),
        ));
    }
    let value: Value = serde_json::from_slice(input)
        .map_err(|e| CniError::new(code::DECODE, format!("the network configuration on stdin is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(CniError::new(code::DECODE, "the network configuration on stdin is not a JSON object"));
    }
    let conf: NetConf = serde_json::from_value(value)
        .map_err(|e| CniError::new(code::DECODE, format!("cannot decode the network configuration: {e}")))?;
    let version = conf
        .cni_version
        .clone()
        .ok_or_else(|| CniError::new(code::INVALID_CONFIG, "the network configuration lacks \"cniVersion\""))?;
    if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("cniVersion {version} is not supported; use one of {}", SUPPORTED_VERSIONS.join(", ")),
        ));
    }
    let name = conf.name.clone().filter(|n| !n.is_empty());
    let name = name.ok_or_else(|| CniError::new(code::INVALID_CONFIG, "the network configuration lacks \"name\""))?;
    match conf.plugin.as_deref() {
        Some("netpath") => {}
        Some(other) => {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!(
                    "\"type\" is \"{other}\", not \"netpath\": the runtime ran netpath for another plugin's configuration"
                ),
            ));
        }
        None => return Err(CniError::new(code::INVALID_CONFIG, "the network configuration lacks \"type\"")),
    }
    let network = network_spec(&conf, &name)?;
    check_runtime(&conf.runtime_config)?;
    let stated = StatedFlags { internal: conf.internal, ip_masq: conf.ip_masq, xdp: conf.xdp };
    Ok(Config {
        version,
        network,
        stated,
        dns: conf.dns,
        name,
        runtime: conf.runtime_config,
        prev_result: conf.prev_result,
        valid_attachments: conf.valid_attachments,
    })
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(code::INVALID_CONFIG, msg)
}

/// The netpath network the configuration describes; checked here so that a bad value is a
/// configuration error before anything is created.
fn network_spec(conf: &NetConf, name: &str) -> Result<NetworkSpec, CniError> {
    let subnet = conf.subnet.as_deref().map(|s| s.parse::<Ipv4Net>().map_err(|e| invalid(format!("\"subnet\": {e}"))));
    let subnet = subnet.transpose()?;
    let gateway = conf.gateway.as_deref().map(|gateway| {
        gateway.parse::<Ipv4Addr>().map_err(|_| invalid(format!("\"gateway\" '{gateway}' is not an IPv4 address")))
    });
    let gateway = gateway.transpose()?;
    if gateway.is_some() && subnet.is_none() {
        return Err(invalid("\"gateway\" needs \"subnet\""));
    }
    if let Some(mtu) = conf.mtu.filter(|m| !(68..=65535).contains(m)) {
        return Err(invalid(format!("\"mtu\" {mtu} is out of range (68-65535)")));
    }
    let internal = conf.internal.unwrap_or(false);
    if internal && conf.ip_masq == Some(true) {
        return Err(invalid("\"internal\" networks send nothing out, so \"ipMasq\" cannot be true"));
    }
    Ok(NetworkSpec {
        name: conf.network.clone().unwrap_or_else(|| name.to_string()),
        subnet: subnet.map(IpNet::V4),
        gateway: gateway.map(IpAddr::V4),
        bridge: None,
        mtu: conf.mtu,
        internal,
        no_masquerade: conf.ip_masq == Some(false),
        uplink: None,
        // `"xdp": true` is `--xdp` alone: filter.
        xdp: if conf.xdp == Some(true) { Xdp::Filter } else { Xdp::Off },
        external_id: None,
    })
}

fn check_runtime(runtime: &RuntimeConfig) -> Result<(), CniError> {
    for mapping in &runtime.port_mappings {
        port_of(mapping)?;
    }
    static_ip(runtime)?;
    Ok(())
}

/// The aliases the runtime gives the container on network `name`; one that is no host name
/// was asked for and is refused. Read for ADD alone: a DEL must not fail on them.
fn aliases_of(runtime: &RuntimeConfig, name: &str) -> Result<Vec<Hostname>, CniError> {
    let listed = runtime.aliases.get(name).map(Vec::as_slice).unwrap_or_default();
    listed.iter().map(|alias| Hostname::parse(Field::Alias, alias).map_err(|e| invalid(e.render(&key)))).collect()
}

/// The port a mapping publishes.
fn port_of(m: &PortMapping) -> Result<Port, CniError> {
    let proto = m.protocol.as_deref().filter(|p| !p.is_empty()).unwrap_or("tcp").to_ascii_lowercase();
    let proto = Proto::parse(&proto)
        .ok_or_else(|| invalid(format!("portMappings: protocol '{proto}' is not supported; use tcp or udp")))?;
    if m.host_port == 0 || m.container_port == 0 {
        return Err(invalid("portMappings: hostPort and containerPort must be 1-65535"));
    }
    let host_ip = match m.host_ip.as_deref().filter(|ip| !ip.is_empty()) {
        Some(ip) => {
            let ip: Ipv4Addr =
                ip.parse().map_err(|_| invalid(format!("portMappings: hostIP '{ip}' is not an IPv4 address")))?;
            (!ip.is_unspecified()).then_some(IpAddr::V4(ip))
        }
        None => None,
    };
    Ok(Port { proto, host_ip, host_port: m.host_port, container_port: m.container_port })
}

/// The one static address the `ips` capability may ask for.
fn static_ip(runtime: &RuntimeConfig) -> Result<Option<Ipv4Addr>, CniError> {
    let addrs = runtime
        .ips
        .iter()
        .map(|ip| {
            let addr = ip.split_once('/').map_or(ip.as_str(), |(addr, _)| addr);
            addr.parse::<Ipv4Addr>().map_err(|_| invalid(format!("ips: '{ip}' is not an IPv4 address")))
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    match addrs.len() {
        0 | 1 => Ok(addrs.into_iter().next()),
        _ => Err(invalid("ips: netpath gives one IPv4 address per interface; ask for one")),
    }
}

impl Config {
    /// The attach request of an ADD.
    pub fn attach_spec(&self, at: &Attachment, netns: &str) -> Result<AttachSpec, CniError> {
        let ports = self.runtime.port_mappings.iter().map(port_of).collect::<Result<_, _>>()?;
        Ok(AttachSpec {
            network: self.network.name.clone(),
            target: Target::Path(netns.to_string()),
            id: Some(at.endpoint_id()),
            ip: static_ip(&self.runtime)?.map(IpAddr::V4),
            mac: None,
            ifname: at.ifname.clone(),
            ports,
            name: at.name(),
            aliases: aliases_of(&self.runtime, &self.name)?,
            creator: Creator::Cni,
        })
    }

    /// The endpoint ids GC must keep (`cni.dev/valid-attachments`).
    pub fn valid_ids(&self) -> Result<BTreeSet<String>, CniError> {
        let list = self.valid_attachments.as_ref().ok_or_else(|| {
            invalid("GC needs \"cni.dev/valid-attachments\"; without it every attachment would be released")
        })?;
        Ok(list.iter().map(|a| endpoint_id(&a.container_id, &a.ifname)).collect())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn code_of(input: &[u8]) -> u32 {
        parse(input).map(|_| 0).unwrap_or_else(|e| e.code)
    }

    #[test]
    fn codes_follow_the_spec() {
        let ok = json!({ "cniVersion": "1.0.0", "name": "n", "type": "netpath" });
        assert_eq!(code_of(ok.to_string().as_bytes()), 0);
        assert_eq!(code_of(b"{"), code::DECODE);
        assert_eq!(code_of(b"\"a string\""), code::DECODE);
        assert_eq!(code_of(json!({ "cniVersion": 1 }).to_string().as_bytes()), code::DECODE);
        assert_eq!(code_of(json!({ "cniVersion": "0.3.1", "name": "n" }).to_string().as_bytes()), 1);
        assert_eq!(code_of(json!({ "cniVersion": "1.0.0", "type": "netpath" }).to_string().as_bytes()), 7);
        let mut bad = ok.clone();
        bad["subnet"] = json!("10.0.0.0/40");
        assert_eq!(code_of(bad.to_string().as_bytes()), 7);
    }

    #[test]
    fn port_mappings_become_publish_arguments() {
        let m = |host_ip: Option<&str>, protocol: Option<&str>| PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: protocol.map(String::from),
            host_ip: host_ip.map(String::from),
        };
        assert_eq!(port_of(&m(None, None)).unwrap().to_string(), "0.0.0.0:8080->80/tcp");
        assert_eq!(port_of(&m(Some(""), Some("UDP"))).unwrap().to_string(), "0.0.0.0:8080->80/udp");
        assert_eq!(port_of(&m(Some("127.0.0.1"), Some("tcp"))).unwrap().to_string(), "127.0.0.1:8080->80/tcp");
        assert_eq!(port_of(&m(Some("::1"), None)).unwrap_err().code, code::INVALID_CONFIG);
        assert_eq!(port_of(&m(None, Some("sctp"))).unwrap_err().code, code::INVALID_CONFIG);
    }

    #[test]
    fn one_static_address_with_or_without_a_prefix() {
        let ips = |ips: &[&str]| RuntimeConfig {
            ips: ips.iter().map(|s| s.to_string()).collect(),
            ..RuntimeConfig::default()
        };
        assert_eq!(static_ip(&ips(&[])).unwrap(), None);
        assert_eq!(static_ip(&ips(&["10.1.2.3/24"])).unwrap(), Some(Ipv4Addr::new(10, 1, 2, 3)));
        assert_eq!(static_ip(&ips(&["10.1.2.3", "10.1.2.3/24"])).unwrap(), Some(Ipv4Addr::new(10, 1, 2, 3)));
        assert!(static_ip(&ips(&["10.1.2.3", "10.1.2.4"])).is_err());
    }

    #[test]
    fn aliases_are_this_networks_and_must_be_host_names() {
        let runtime = |aliases: Value| RuntimeConfig {
            aliases: serde_json::from_value(aliases).unwrap(),
            ..RuntimeConfig::default()
        };
        let listed = aliases_of(&runtime(json!({ "n": ["web", "www"], "other": ["db"] })), "n").unwrap();
        assert_eq!(listed.iter().map(ToString::to_string).collect::<Vec<_>>(), ["web", "www"]);
        assert!(aliases_of(&runtime(json!({ "other": ["db"] })), "n").unwrap().is_empty());
        let e = aliases_of(&runtime(json!({ "n": ["web_1"] })), "n").unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.msg.starts_with("the aliases capability 'web_1': a container name is"), "{}", e.msg);
    }
}
