//! OCI runtime hooks: `netpath oci-hook attach` (a `createRuntime` or `prestart` hook) and
//! `netpath oci-hook detach` (`poststop`). The runtime writes the container's state JSON on
//! stdin; only `id` and `pid` are used: `status` differs between runc and crun.
use std::io::Read;

use serde::Deserialize;

use crate::{
    core::{AttachSpec, Controller, DetachSpec, EndpointRecord, Target},
    error::{Error, Field, Result},
    types::{creator::Creator, net, port},
};

/// More than this on stdin is not a container's state.
const MAX_STATE_BYTES: u64 = 1 << 20;

/// The part of the OCI state netpath reads.
#[derive(Clone, Debug, Deserialize)]
pub struct State {
    pub id: String,
    /// The container's init process; 0 or absent once it has exited.
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub bundle: Option<String>,
}

/// What `oci-hook attach` asks for besides the state.
#[derive(Clone, Debug)]
pub struct HookAttach {
    pub network: String,
    pub ip: Option<String>,
    pub ifname: String,
    pub publish: Vec<String>,
}

pub fn read_state(input: impl Read) -> Result<State> {
    let mut text = Vec::new();
    input
        .take(MAX_STATE_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|e| Error::system("cannot read the container state from stdin", e))?;
    if text.len() as u64 > MAX_STATE_BYTES {
        return Err(Error::invalid(format!("the container state on stdin is larger than {MAX_STATE_BYTES} bytes")));
    }
    serde_json::from_slice(&text)
        .map_err(|e| Error::invalid(format!("stdin is not an OCI container state (id, pid, bundle): {e}")))
}

/// Attaches the network namespace of the container's init process, with the container id
/// as endpoint id.
pub async fn attach(ctl: &mut Controller, state: &State, hook: &HookAttach) -> Result<EndpointRecord> {
    let pid = state.pid.filter(|p| *p > 0).ok_or_else(|| {
        Error::invalid(format!(
            "the state of container '{}' has no pid; run the attach hook as createRuntime or prestart",
            state.id
        ))
    })?;
    let spec = AttachSpec {
        network: hook.network.clone(),
        target: Target::Pid(pid),
        id: Some(state.id.clone()),
        ip: hook.ip.as_deref().map(|ip| net::parse_ip(Field::Ip, ip)).transpose()?,
        mac: None,
        ifname: hook.ifname.clone(),
        ports: port::parse_publish_all(&hook.publish)?,
        creator: Creator::Oci,
    };
    ctl.attach(&spec).await
}

/// Releases the container's endpoint; one that is already gone is fine (poststop also runs
/// for containers whose attach failed).
pub async fn detach(ctl: &mut Controller, state: &State) -> Result<()> {
    match ctl.detach(&DetachSpec::Id(state.id.clone())).await {
        Ok(_) | Err(Error::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}
