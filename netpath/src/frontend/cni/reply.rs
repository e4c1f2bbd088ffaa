//! What the plugin answers: results, and errors as the spec's error JSON with its codes
//! (and netpath's own, from 100, one per class of `crate::Error`).
use std::borrow::Cow;

use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    core::EndpointRecord,
    error::{Error, Field},
};

/// The CNI versions this plugin speaks.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.4.0", "1.0.0", "1.1.0"];
/// The version of replies given before the configuration's version is known.
pub const LATEST_VERSION: &str = "1.1.0";

/// Error codes: the spec's (below 100) and netpath's.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const INVALID_ENV: u32 = 4;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_LATER: u32 = 11;
    /// STATUS: no ADD can be served.
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: attached containers are affected too.
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// The kernel, the filesystem or the database failed.
    pub const SYSTEM: u32 = 100;
    /// netpath refused the request (an address outside the subnet, a port in use…).
    pub const INVALID_REQUEST: u32 = 101;
    pub const NOT_FOUND: u32 = 102;
    pub const CONFLICT: u32 = 103;
    /// The database names objects the kernel lacks: run `netpath restore`.
    pub const STALE: u32 = 104;
    /// CHECK found the attachment not as netpath made it.
    pub const CHECK_FAILED: u32 = 105;
}

#[derive(Debug, Serialize)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self { code, msg: msg.into(), details: String::new() }
    }

    /// The error JSON, in the configuration's version.
    pub fn to_json(&self, version: &str) -> Value {
        let mut value = serde_json::to_value(self).unwrap_or_else(|_| json!({ "code": self.code }));
        value["cniVersion"] = json!(version);
        value
    }
}

impl From<Error> for CniError {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::System { source, .. } if is_busy(source.as_ref()) => code::TRY_LATER,
            Error::System { .. } => code::SYSTEM,
            Error::Invalid(_) => code::INVALID_REQUEST,
            Error::NotFound(_) => code::NOT_FOUND,
            Error::Conflict(_) => code::CONFLICT,
            Error::Stale(_) => code::STALE,
        };
        Self::new(code, e.render(&key))
    }
}

/// How the CNI plugin names each part of a request: by its configuration key or variable.
pub fn key(field: Field) -> Cow<'static, str> {
    Cow::Borrowed(match field {
        Field::Subnet => "\"subnet\"",
        Field::Gateway => "\"gateway\"",
        Field::Bridge => "the bridge name",
        Field::Mtu => "\"mtu\"",
        Field::Uplink => "the uplink",
        Field::Xdp => "\"xdp\"",
        Field::EndpointId => "CNI_CONTAINERID",
        Field::Ip => "the ips capability",
        Field::Mac => "the mac capability",
        Field::Ifname => "CNI_IFNAME",
        Field::Publish => "portMappings",
        Field::Force => "force",
        Field::Name => "K8S_POD_NAME",
        Field::Alias => "the aliases capability",
    })
}

/// A database that stayed locked past its busy timeout: another command holds it, and a
/// retry will do.
fn is_busy(e: &(dyn std::error::Error + 'static)) -> bool {
    matches!(
        e.downcast_ref::<rusqlite::Error>().and_then(rusqlite::Error::sqlite_error_code),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// The host's side of an endpoint, as a result lists it: the network's bridge and the host
/// end of the veth, with their MACs when the kernel gave them.
pub struct HostSide {
    pub bridge: String,
    pub bridge_mac: Option<String>,
    pub veth_mac: Option<String>,
}

/// A host interface of the result; it has no `sandbox`.
fn host_interface(name: &str, mac: Option<&String>) -> Value {
    let mut interface = json!({ "name": name });
    if let Some(mac) = mac {
        interface["mac"] = json!(mac);
    }
    interface
}

/// The ADD result for an endpoint, appended to a previous plugin's result when there is one
/// (netpath first in a chain has none). The bridge comes first of netpath's interfaces, as
/// the reference `bridge` plugin lists it: plugins chained after it (`dnsname`) take the
/// first interface for the network's bridge.
pub fn add_result(
    version: &str,
    ep: &EndpointRecord,
    host: &HostSide,
    dns: Option<&Value>,
    prev: Option<&Value>,
    resolver: Option<std::net::Ipv4Addr>,
) -> Value {
    let list = |key: &str| prev.and_then(|p| p.get(key)).and_then(Value::as_array).cloned().unwrap_or_default();
    let mut interfaces = list("interfaces");
    let mut ips = list("ips");
    let mut routes = list("routes");
    interfaces.push(host_interface(&host.bridge, host.bridge_mac.as_ref()));
    interfaces.push(host_interface(&ep.host_veth, host.veth_mac.as_ref()));
    let container = interfaces.len();
    interfaces.push(json!({ "name": ep.ifname, "mac": ep.mac, "sandbox": ep.netns }));
    let mut ip = json!({
        "address": format!("{}/{}", ep.ip, ep.prefix),
        "gateway": ep.gateway.to_string(),
        "interface": container,
    });
    // 0.4.0 results name the IP version of each address; 1.0.0 dropped the field.
    if version == "0.4.0" {
        ip["version"] = json!("4");
    }
    ips.push(ip);
    routes.push(json!({ "dst": "0.0.0.0/0", "gw": ep.gateway.to_string() }));
    let dns = prev.and_then(|p| p.get("dns")).filter(|d| d.as_object().is_some_and(|o| !o.is_empty())).or(dns);
    let dns = with_resolver(dns.cloned().unwrap_or_else(|| json!({})), resolver);
    json!({
        "cniVersion": version,
        "interfaces": interfaces,
        "ips": ips,
        "routes": routes,
        "dns": dns,
    })
}

/// The chain's or the configuration's DNS, with the gateway first among the nameservers when
/// the daemon's resolver answers there (`resolver`). Only then: a runtime writes them into
/// resolv.conf, and a gateway nobody answers on would leave the container without names.
fn with_resolver(mut dns: Value, resolver: Option<std::net::Ipv4Addr>) -> Value {
    let (Some(gateway), Some(fields)) = (resolver, dns.as_object_mut()) else {
        return dns;
    };
    let gateway = json!(gateway.to_string());
    let mut nameservers = vec![gateway.clone()];
    let given = fields.get("nameservers").and_then(Value::as_array).cloned().unwrap_or_default();
    nameservers.extend(given.into_iter().filter(|n| *n != gateway));
    fields.insert("nameservers".into(), Value::Array(nameservers));
    dns
}

/// Whether a chain's result (CHECK's prevResult) lists the endpoint's address.
pub fn lists_address(result: &Value, ep: &EndpointRecord) -> bool {
    let address = format!("{}/{}", ep.ip, ep.prefix);
    result
        .get("ips")
        .and_then(Value::as_array)
        .is_some_and(|ips| ips.iter().any(|ip| ip.get("address").and_then(Value::as_str) == Some(address.as_str())))
}

pub fn version_result(version: &str) -> Value {
    json!({ "cniVersion": version, "supportedVersions": SUPPORTED_VERSIONS })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_leads_the_nameservers_only_while_the_resolver_answers() {
        let given = json!({ "nameservers": ["10.0.0.53", "10.88.0.1"], "search": ["example.com"] });
        assert_eq!(with_resolver(given.clone(), None), given);
        let with = with_resolver(given, Some("10.88.0.1".parse().unwrap()));
        assert_eq!(with, json!({ "nameservers": ["10.88.0.1", "10.0.0.53"], "search": ["example.com"] }));
        assert_eq!(
            with_resolver(json!({}), Some("10.88.0.1".parse().unwrap())),
            json!({ "nameservers": ["10.88.0.1"] })
        );
    }
}
