//! The Docker frontend: libnetwork's remote network driver and IPAM driver protocols,
//! translated into the controller's typed requests and its answers back into JSON.
//!
//! [`parse`] turns a method path and a JSON body into a [`Request`] with netpath's own types
//! (addresses, subnets, MACs, ports) or refuses it; [`handle`] runs one on the controller.
//! Neither touches the store, netlink or the maps.
mod names;
mod parse;

use serde_json::{Value, json};

use crate::{core::Controller, error::Result, types::mac};

pub use names::option;
use parse::{GLOBAL_SPACE, LOCAL_SPACE, PORTMAP, PortBinding, binding};
pub use parse::{NewNetwork, Refusal, Request, parse};

/// The media type of the plugin API's answers.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// Runs one request on the controller and answers in the protocol's JSON.
pub async fn handle(ctl: &mut Controller, req: Request) -> Result<Value> {
    Ok(match req {
        Request::Activate => json!({ "Implements": ["NetworkDriver", "IpamDriver"] }),
        Request::Capabilities => json!({ "Scope": "local", "ConnectivityScope": "local" }),
        Request::CreateNetwork(new) => {
            // Docker retries a create whose answer it lost: the same id again is the same network.
            if ctl.network_by_external_id(&new.docker_id).is_err() {
                ctl.network_create(&new.spec).await?;
            }
            json!({})
        }
        Request::DeleteNetwork(docker_id) => {
            if let Ok(net) = ctl.network_by_external_id(&docker_id) {
                ctl.network_rm(&net.name, false).await?;
            }
            json!({})
        }
        Request::CreateEndpoint { network, endpoint, ip, mac } => {
            let net = ctl.network_by_external_id(&network)?;
            let chosen = ctl.claim_endpoint(&net, &endpoint, ip, mac)?;
            // Docker refuses an answer that changes what it set itself.
            match mac {
                Some(_) => json!({}),
                None => json!({ "Interface": { "MacAddress": mac::format_mac(&chosen) } }),
            }
        }
        Request::DeleteEndpoint { endpoint } => {
            // Normally Leave went first; after a lost Leave the endpoint goes here.
            ctl.leave(&endpoint).await?;
            ctl.release_claim(&endpoint)?;
            json!({})
        }
        Request::EndpointOperInfo { endpoint } => {
            let mut value = serde_json::Map::new();
            if let Some((_, mac)) = ctl.claim(&endpoint)? {
                value.insert("com.docker.network.endpoint.macaddress".into(), mac::format_mac(&mac).into());
            }
            if let Ok(ep) = ctl.endpoint(&endpoint) {
                let ports: Vec<PortBinding> = ep.ports.iter().map(binding).collect();
                value.insert(PORTMAP.into(), serde_json::to_value(ports).unwrap_or_default());
                value.insert("netpath.host_veth".into(), ep.host_veth.into());
            }
            json!({ "Value": value })
        }
        Request::Join { endpoint, sandbox } => {
            let handed = ctl.join_handed(&endpoint, &sandbox).await?;
            json!({
                "InterfaceName": { "SrcName": handed.ifname, "DstPrefix": "eth" },
                "Gateway": handed.gateway.to_string(),
            })
        }
        Request::Leave { endpoint } => {
            ctl.leave(&endpoint).await?;
            json!({})
        }
        Request::ProgramExternalConnectivity { endpoint, ports } => {
            ctl.publish_ports(&endpoint, &ports).await?;
            json!({})
        }
        Request::RevokeExternalConnectivity { endpoint } => {
            ctl.unpublish_ports(&endpoint).await?;
            json!({})
        }
        Request::Nothing => json!({}),
        Request::IpamCapabilities => json!({ "RequiresMACAddress": false }),
        Request::AddressSpaces => {
            json!({ "LocalDefaultAddressSpace": LOCAL_SPACE, "GlobalDefaultAddressSpace": GLOBAL_SPACE })
        }
        Request::RequestPool { pool } => {
            let pool = ctl.request_pool(pool).await?;
            json!({ "PoolID": pool.to_string(), "Pool": pool.to_string(), "Data": {} })
        }
        Request::ReleasePool { pool } => {
            ctl.release_pool(pool)?;
            json!({})
        }
        Request::RequestAddress { pool, ip, gateway } => {
            let ip = ctl.request_address(pool, ip, gateway)?;
            json!({ "Address": format!("{ip}/{}", pool.prefix()), "Data": {} })
        }
        Request::ReleaseAddress { pool, ip } => {
            ctl.release_address(pool, ip)?;
            json!({})
        }
    })
}
