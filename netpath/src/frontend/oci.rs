//! OCI runtime hooks: `netpath oci-hook attach` (a `createRuntime` or `prestart` hook) and
//! `netpath oci-hook detach` (`poststop`). The runtime writes the container's state JSON on
//! stdin; `id`, `pid`, the annotations and the bundle's config are read, never `status`,
//! which differs between runc and crun.
use std::{collections::BTreeMap, io::Read, os::unix::fs::OpenOptionsExt, path::Path};

use serde::Deserialize;

use crate::{
    core::{AttachSpec, Controller, DetachSpec, EndpointRecord, Target},
    error::{Error, Field, Result},
    types::{
        creator::Creator,
        name::{Hostname, Naming},
        net, port,
    },
};

/// The annotation that names the container on its network (`podman run --annotation`, or a
/// config.json's `annotations`).
pub const NAME_ANNOTATION: &str = "io.netpath.name";
/// The annotation of its aliases, separated by commas.
pub const ALIASES_ANNOTATION: &str = "io.netpath.aliases";

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
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// The part of the bundle's config.json netpath reads.
#[derive(Deserialize)]
struct BundleConfig {
    #[serde(default)]
    hostname: Option<String>,
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
        name: name_of(state)?,
        aliases: aliases_of(state)?,
        creator: Creator::Oci,
    };
    // The CLI's renderer would name them by `attach`'s flags, which the hook has not.
    let own_words = |e: Error| {
        e.naming(Field::Name, "the container's name").naming(Field::Alias, &format!("annotation {ALIASES_ANNOTATION}"))
    };
    ctl.attach(&spec).await.map_err(own_words)
}

/// A name from an annotation, which someone chose for it: refused, naming the annotation,
/// when it is no host name.
fn annotated(key: &str, field: Field, name: &str) -> Result<Hostname> {
    Hostname::parse(field, name).map_err(|e| e.naming(field, &format!("annotation {key}")))
}

/// The name the container answers to: its annotation, chosen, or else the hostname of its
/// config when that is a host name, derived. A hostname was not chosen as a name on the
/// network (`runc spec` writes "runc" for every container, an image may set anything), so
/// one that cannot be, or is taken, is left out rather than refused, as is a bundle whose
/// config cannot be read.
fn name_of(state: &State) -> Result<Option<Naming>> {
    if let Some(name) = state.annotations.get(NAME_ANNOTATION) {
        return annotated(NAME_ANNOTATION, Field::Name, name).map(|name| Some(Naming::Chosen(name)));
    }
    let hostname = state.bundle.as_deref().and_then(|bundle| bundle_hostname(Path::new(bundle)));
    Ok(hostname.and_then(|name| Hostname::parse(Field::Name, &name).ok()).map(Naming::Derived))
}

/// The bundle's hostname. A config.json that is no regular file is not read: a FIFO put in
/// its place would hold the hook, and the container's creation with it, forever.
fn bundle_hostname(bundle: &Path) -> Option<String> {
    let mut open = std::fs::OpenOptions::new();
    let file = open.read(true).custom_flags(libc::O_NONBLOCK).open(bundle.join("config.json")).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = Vec::new();
    file.take(MAX_STATE_BYTES).read_to_end(&mut text).ok()?;
    serde_json::from_slice::<BundleConfig>(&text).ok()?.hostname
}

fn aliases_of(state: &State) -> Result<Vec<Hostname>> {
    let Some(list) = state.annotations.get(ALIASES_ANNOTATION) else {
        return Ok(Vec::new());
    };
    list.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| annotated(ALIASES_ANNOTATION, Field::Alias, a))
        .collect()
}

/// Releases the container's endpoint; one that is already gone is fine (poststop also runs
/// for containers whose attach failed).
pub async fn detach(ctl: &mut Controller, state: &State) -> Result<()> {
    match ctl.detach(&DetachSpec::Id(state.id.clone())).await {
        Ok(_) | Err(Error::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}
