//! The plugin API's requests: each path and body parsed into a typed [`Request`], or refused
//! before it reaches the controller.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::{
    core::{NetworkSpec, Xdp, handed::PortRequest},
    error::{Error, Result},
    types::{
        mac,
        net::{IpNet, Ipv4Net},
        port::{Port, Proto},
    },
};

use super::names;

/// The network options key under which `docker network create -o k=v` arrive.
const GENERIC: &str = "com.docker.network.generic";
pub(super) const PORTMAP: &str = "com.docker.network.portmap";
const GATEWAY_REQUEST: &str = "com.docker.network.gateway";
const INTERNAL: &str = "com.docker.network.internal";
/// Address spaces netpath's IPAM answers for; both mean the same allocator.
pub(super) const LOCAL_SPACE: &str = "netpath-local";
pub(super) const GLOBAL_SPACE: &str = "netpath-global";

/// One call of the plugin API, parsed.
#[derive(Debug)]
pub enum Request {
    Activate,
    Capabilities,
    CreateNetwork(NewNetwork),
    DeleteNetwork(String),
    CreateEndpoint {
        network: String,
        endpoint: String,
        ip: Ipv4Addr,
        mac: Option<[u8; 6]>,
    },
    DeleteEndpoint {
        endpoint: String,
    },
    EndpointOperInfo {
        endpoint: String,
    },
    Join {
        endpoint: String,
        sandbox: String,
    },
    Leave {
        endpoint: String,
    },
    ProgramExternalConnectivity {
        endpoint: String,
        ports: Vec<PortRequest>,
    },
    RevokeExternalConnectivity {
        endpoint: String,
    },
    /// DiscoverNew, DiscoverDelete, AllocateNetwork, FreeNetwork: nothing to do for a
    /// local-scope driver.
    Nothing,
    IpamCapabilities,
    AddressSpaces,
    RequestPool {
        pool: Option<Ipv4Net>,
    },
    ReleasePool {
        pool: Ipv4Net,
    },
    RequestAddress {
        pool: Ipv4Net,
        ip: Option<Ipv4Addr>,
        gateway: bool,
    },
    ReleaseAddress {
        pool: Ipv4Net,
        ip: Ipv4Addr,
    },
}

impl Request {
    /// What the request does, as the daemon's metrics label it: one name per kind of
    /// request, however many of them arrive.
    pub fn operation(&self) -> &'static str {
        match self {
            Request::Activate => "activate",
            Request::Capabilities => "capabilities",
            Request::CreateNetwork(_) => "create_network",
            Request::DeleteNetwork(_) => "delete_network",
            Request::CreateEndpoint { .. } => "create_endpoint",
            Request::DeleteEndpoint { .. } => "delete_endpoint",
            Request::EndpointOperInfo { .. } => "endpoint_oper_info",
            Request::Join { .. } => "join",
            Request::Leave { .. } => "leave",
            Request::ProgramExternalConnectivity { .. } => "program_external_connectivity",
            Request::RevokeExternalConnectivity { .. } => "revoke_external_connectivity",
            Request::Nothing => "nothing",
            Request::IpamCapabilities => "ipam_capabilities",
            Request::AddressSpaces => "address_spaces",
            Request::RequestPool { .. } => "request_pool",
            Request::ReleasePool { .. } => "release_pool",
            Request::RequestAddress { .. } => "request_address",
            Request::ReleaseAddress { .. } => "release_address",
        }
    }
}

#[derive(Debug)]
pub struct NewNetwork {
    pub docker_id: String,
    pub spec: NetworkSpec,
}

/// Why a request was refused before reaching the controller.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    UnknownMethod(String),
    Invalid(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NetworkRef {
    #[serde(rename = "NetworkID")]
    network_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EndpointRef {
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IpamData {
    pool: String,
    #[serde(default)]
    gateway: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateNetworkBody {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(default, deserialize_with = "null_is_empty")]
    options: BTreeMap<String, Value>,
    #[serde(rename = "IPv4Data", default)]
    ipv4_data: Option<Vec<IpamData>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Interface {
    #[serde(default)]
    address: String,
    #[serde(default)]
    mac_address: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateEndpointBody {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    interface: Option<Interface>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct JoinBody {
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    sandbox_key: String,
}

/// libnetwork's `types.PortBinding` as it travels in `com.docker.network.portmap`.
#[derive(Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct PortBinding {
    proto: u8,
    #[serde(rename = "IP", default)]
    ip: Option<String>,
    port: u16,
    #[serde(rename = "HostIP", default)]
    host_ip: Option<String>,
    #[serde(default)]
    host_port: u16,
    #[serde(default)]
    host_port_end: u16,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConnectivityBody {
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    #[serde(default, deserialize_with = "null_is_empty")]
    options: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RequestPoolBody {
    #[serde(default)]
    pool: String,
    #[serde(default)]
    sub_pool: String,
    #[serde(rename = "V6", default)]
    v6: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PoolRef {
    #[serde(rename = "PoolID")]
    pool_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AddressBody {
    #[serde(rename = "PoolID")]
    pool_id: String,
    #[serde(default)]
    address: String,
    #[serde(default, deserialize_with = "null_is_empty")]
    options: BTreeMap<String, String>,
}

/// Go encodes an empty map as `null`.
fn null_is_empty<'de, D: serde::Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn body<T: DeserializeOwned>(raw: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(raw).map_err(|e| Refusal::Invalid(format!("malformed request body: {e}")))
}

fn invalid(e: Error) -> Refusal {
    Refusal::Invalid(e.render(&names::option))
}

/// `10.1.0.2/24` or `10.1.0.2`: Docker sends addresses with their prefix.
fn address(text: &str) -> Result<Ipv4Addr, Refusal> {
    let ip = text.split_once('/').map_or(text, |(ip, _)| ip);
    ip.parse().map_err(|_| Refusal::Invalid(format!("'{text}' is not an IPv4 address (netpath is IPv4 only)")))
}

fn subnet(text: &str) -> Result<Ipv4Net, Refusal> {
    text.parse().map_err(invalid)
}

fn flag(value: &Value) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::String(s) => matches!(s.as_str(), "true" | "1" | "yes"),
        _ => false,
    }
}

/// `-o xdp=`: a true flag is `filter`, as `--xdp` alone; `filter` and `redirect` name the mode;
/// anything else that is not a flag is refused rather than read as off.
fn xdp_option(value: Option<&Value>) -> Result<Xdp, Refusal> {
    let refused = |given: &str| {
        Refusal::Invalid(format!(
            "-o xdp={given} is not an XDP mode; pass xdp=true (filter), xdp=redirect or leave it out"
        ))
    };
    match value {
        None | Some(Value::Bool(false)) => Ok(Xdp::Off),
        Some(v) if flag(v) => Ok(Xdp::Filter),
        Some(Value::String(s)) => match s.as_str() {
            "false" | "0" | "no" => Ok(Xdp::Off),
            name => Xdp::from_name(name).ok_or_else(|| refused(name)),
        },
        Some(other) => Err(refused(&other.to_string())),
    }
}

/// Turns one call into a typed request. `path` is the HTTP path (`/NetworkDriver.Join`).
pub fn parse(path: &str, raw: &[u8]) -> Result<Request, Refusal> {
    let method = path.strip_prefix('/').unwrap_or(path);
    Ok(match method {
        "Plugin.Activate" => Request::Activate,
        "NetworkDriver.GetCapabilities" => Request::Capabilities,
        "NetworkDriver.CreateNetwork" => Request::CreateNetwork(new_network(body(raw)?)?),
        "NetworkDriver.DeleteNetwork" => Request::DeleteNetwork(body::<NetworkRef>(raw)?.network_id),
        "NetworkDriver.CreateEndpoint" => {
            let b: CreateEndpointBody = body(raw)?;
            let iface = b.interface.unwrap_or(Interface { address: String::new(), mac_address: String::new() });
            if iface.address.is_empty() {
                return Err(Refusal::Invalid("CreateEndpoint without an IPv4 address: netpath needs one".into()));
            }
            let mac = match iface.mac_address.as_str() {
                "" => None,
                text => Some(mac::parse_mac(text).map_err(invalid)?),
            };
            Request::CreateEndpoint {
                network: b.network_id,
                endpoint: b.endpoint_id,
                ip: address(&iface.address)?,
                mac,
            }
        }
        "NetworkDriver.DeleteEndpoint" => Request::DeleteEndpoint { endpoint: body::<EndpointRef>(raw)?.endpoint_id },
        "NetworkDriver.EndpointOperInfo" => {
            Request::EndpointOperInfo { endpoint: body::<EndpointRef>(raw)?.endpoint_id }
        }
        "NetworkDriver.Join" => {
            let b: JoinBody = body(raw)?;
            if b.sandbox_key.is_empty() {
                return Err(Refusal::Invalid("Join without a SandboxKey".into()));
            }
            Request::Join { endpoint: b.endpoint_id, sandbox: b.sandbox_key }
        }
        "NetworkDriver.Leave" => Request::Leave { endpoint: body::<EndpointRef>(raw)?.endpoint_id },
        "NetworkDriver.ProgramExternalConnectivity" => {
            let b: ConnectivityBody = body(raw)?;
            let ports = match b.options.get(PORTMAP) {
                Some(Value::Null) | None => Vec::new(),
                Some(map) => serde_json::from_value::<Vec<PortBinding>>(map.clone())
                    .map_err(|e| Refusal::Invalid(format!("malformed {PORTMAP}: {e}")))?
                    .iter()
                    .map(port_request)
                    .collect::<Result<_, _>>()?,
            };
            Request::ProgramExternalConnectivity { endpoint: b.endpoint_id, ports }
        }
        "NetworkDriver.RevokeExternalConnectivity" => {
            Request::RevokeExternalConnectivity { endpoint: body::<EndpointRef>(raw)?.endpoint_id }
        }
        "NetworkDriver.DiscoverNew"
        | "NetworkDriver.DiscoverDelete"
        | "NetworkDriver.AllocateNetwork"
        | "NetworkDriver.FreeNetwork" => Request::Nothing,
        "IpamDriver.GetCapabilities" => Request::IpamCapabilities,
        "IpamDriver.GetDefaultAddressSpaces" => Request::AddressSpaces,
        "IpamDriver.RequestPool" => {
            let b: RequestPoolBody = body(raw)?;
            if b.v6 {
                return Err(Refusal::Invalid("netpath is IPv4 only: it has no IPv6 pools".into()));
            }
            if !b.sub_pool.is_empty() {
                return Err(Refusal::Invalid("netpath does not split pools (--ip-range); leave it out".into()));
            }
            Request::RequestPool { pool: if b.pool.is_empty() { None } else { Some(subnet(&b.pool)?) } }
        }
        "IpamDriver.ReleasePool" => Request::ReleasePool { pool: subnet(&body::<PoolRef>(raw)?.pool_id)? },
        "IpamDriver.RequestAddress" => {
            let b: AddressBody = body(raw)?;
            let ip = if b.address.is_empty() { None } else { Some(address(&b.address)?) };
            let gateway = b.options.get("RequestAddressType").is_some_and(|t| t == GATEWAY_REQUEST);
            Request::RequestAddress { pool: subnet(&b.pool_id)?, ip, gateway }
        }
        "IpamDriver.ReleaseAddress" => {
            let b: AddressBody = body(raw)?;
            Request::ReleaseAddress { pool: subnet(&b.pool_id)?, ip: address(&b.address)? }
        }
        other => return Err(Refusal::UnknownMethod(other.to_string())),
    })
}

/// `-o` options: netpath's own, plus Docker's `--internal`.
fn new_network(b: CreateNetworkBody) -> Result<NewNetwork, Refusal> {
    let data = b.ipv4_data.unwrap_or_default();
    let [pool] = data.as_slice() else {
        return Err(Refusal::Invalid("netpath needs exactly one IPv4 pool per network".into()));
    };
    let generic: BTreeMap<String, Value> = match b.options.get(GENERIC) {
        Some(Value::Object(map)) => map.clone().into_iter().collect(),
        _ => BTreeMap::new(),
    };
    let text = |key: &str| generic.get(key).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string));
    for key in generic.keys() {
        if !["internal", "masquerade", "mtu", "uplink", "xdp", "bridge"].contains(&key.as_str()) {
            return Err(Refusal::Invalid(format!(
                "unknown option '{key}'; netpath takes internal, masquerade, mtu, uplink, xdp and bridge"
            )));
        }
    }
    let mtu = text("mtu")
        .map(|m| m.parse::<u32>().map_err(|_| Refusal::Invalid(format!("-o mtu={m} is not a number"))))
        .transpose()?;
    // Docker's ids are 64 hex digits; the netpath name and bridge come from the first 12.
    let short: String = b.network_id.chars().take(12).collect();
    if short.len() < 12 || !short.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(Refusal::Invalid(format!("'{}' is not a Docker network id", b.network_id)));
    }
    let gateway = address(&pool.gateway).ok();
    let spec = NetworkSpec {
        name: format!("docker-{short}"),
        subnet: Some(IpNet::V4(subnet(&pool.pool)?)),
        gateway: gateway.map(IpAddr::V4),
        bridge: Some(text("bridge").unwrap_or_else(|| format!("np-{short}"))),
        mtu,
        internal: generic.get("internal").is_some_and(flag) || b.options.get(INTERNAL).is_some_and(flag),
        no_masquerade: generic.get("masquerade").is_some_and(|v| !flag(v)),
        uplink: text("uplink"),
        xdp: xdp_option(generic.get("xdp"))?,
        external_id: Some(b.network_id.clone()),
    };
    Ok(NewNetwork { docker_id: b.network_id, spec })
}

fn port_request(b: &PortBinding) -> Result<PortRequest, Refusal> {
    let proto = match b.proto {
        6 => Proto::Tcp,
        17 => Proto::Udp,
        other => return Err(Refusal::Invalid(format!("protocol {other} cannot be published; tcp and udp can"))),
    };
    let host_ip = match b.host_ip.as_deref() {
        None | Some("") | Some("0.0.0.0") => None,
        Some(ip) => Some(IpAddr::V4(address(ip)?)),
    };
    Ok(PortRequest { proto, host_ip, host_port: b.host_port, host_port_end: b.host_port_end, container_port: b.port })
}

pub(super) fn binding(p: &Port) -> PortBinding {
    PortBinding {
        proto: p.proto.number(),
        ip: None,
        port: p.container_port,
        host_ip: Some(p.host_ip.map_or_else(|| "0.0.0.0".to_string(), |ip| ip.to_string())),
        host_port: p.host_port,
        host_port_end: p.host_port,
    }
}

#[cfg(test)]
mod tests;
