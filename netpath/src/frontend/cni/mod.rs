//! The CNI plugin (spec 1.1.0): when `CNI_COMMAND` is set, the `netpath` binary speaks the CNI
//! protocol. This module only translates: the environment and stdin into typed requests
//! (`config`), the controller's answers and errors into CNI JSON (`reply`).
mod config;
mod env;
mod reply;

use std::{io::Read, net::IpAddr, process::ExitCode};

use serde_json::Value;

use config::MAX_CONFIG_BYTES;
pub use config::{Config, parse as parse_config};
use env::Attachment;
pub use env::{Command, endpoint_id};
pub use reply::{CniError, LATEST_VERSION, SUPPORTED_VERSIONS, code};

use crate::{
    core::{
        Controller, DetachSpec, Paths,
        session::{self, DEFAULT_PIN_ROOT, DEFAULT_STATE_DIR},
        verify::Readiness,
    },
    error::Error,
    types::{creator::Creator, net::IpNet},
};

/// Where netpath keeps its state, from the same variables the command line reads; a runtime
/// passes its environment on to plugins.
fn paths() -> Paths {
    let var = |name: &str, default: &str| std::env::var_os(name).unwrap_or_else(|| default.into()).into();
    Paths { state_dir: var("NETPATH_STATE_DIR", DEFAULT_STATE_DIR), pin_root: var("NETPATH_BPFFS", DEFAULT_PIN_ROOT) }
}

/// Runs one CNI command and writes its result, or its error, to stdout.
pub fn main() -> ExitCode {
    let mut input = Vec::new();
    // One byte more than allowed, so that too much is seen as too much.
    let read = std::io::stdin().take(MAX_CONFIG_BYTES as u64 + 1).read_to_end(&mut input);
    let version = config::version_of(&input).unwrap_or_else(|| LATEST_VERSION.to_string());
    let outcome = match read {
        Ok(_) => run(&input, &version),
        Err(e) => Err(CniError::new(code::DECODE, format!("cannot read the network configuration from stdin: {e}"))),
    };
    match outcome {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(result)) => {
            println!("{result}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{}", e.to_json(&version));
            ExitCode::FAILURE
        }
    }
}

fn run(input: &[u8], version: &str) -> Result<Option<Value>, CniError> {
    let var = |name: &str| std::env::var(name).ok();
    let command = Command::parse(&var("CNI_COMMAND").unwrap_or_default())?;
    if command == Command::Version {
        return Ok(Some(reply::version_result(version)));
    }
    let config = config::parse(input)?;
    let attachment = match command {
        Command::Add | Command::Check => Some(Attachment::from_env(var, true)?),
        Command::Del => Some(Attachment::from_env(var, false)?),
        _ => None,
    };
    let runtime = session::host_runtime(var("NETPATH_HOST_NETNS").as_deref())?;
    runtime.block_on(async {
        let mut ctl = Controller::open(paths())?;
        match (command, attachment) {
            (Command::Add, Some(at)) => add(&mut ctl, &config, &at).await.map(Some),
            (Command::Del, Some(at)) => del(&mut ctl, &at).await.map(|()| None),
            (Command::Check, Some(at)) => check(&mut ctl, &config, &at).await.map(|()| None),
            (Command::Status, _) => status(&mut ctl, &config).await.map(|()| None),
            (Command::Gc, _) => gc(&mut ctl, &config).await.map(|()| None),
            _ => Err(CniError::new(code::INVALID_ENV, "CNI_COMMAND needs CNI_CONTAINERID and CNI_IFNAME")),
        }
    })
}

/// Creates the network on first use; an existing one must be the one the configuration
/// describes, or endpoints would land on a network other than the one asked for.
async fn ensure_network(ctl: &mut Controller, config: &Config) -> Result<(), CniError> {
    let spec = &config.network;
    let existing = match ctl.find_network(&spec.name)? {
        Some(net) => net,
        None => match ctl.network_create(spec).await {
            Ok(_) => return Ok(()),
            // Another ADD created it meanwhile: compare with that one. Any other conflict
            // (a subnet that overlaps another network's) is the configuration's.
            Err(Error::Conflict(msg)) => match ctl.find_network(&spec.name)? {
                Some(net) => net,
                None => return Err(CniError::new(code::CONFLICT, msg.render(&reply::key))),
            },
            Err(Error::Invalid(msg)) => return Err(CniError::new(code::INVALID_CONFIG, msg.render(&reply::key))),
            Err(e) => return Err(e.into()),
        },
    };
    let differs = |key: &str, has: String| {
        CniError::new(
            code::INVALID_CONFIG,
            format!(
                "netpath network '{}' exists with {key} {has}; make the configuration match or name another \"network\"",
                spec.name
            ),
        )
    };
    if spec.subnet.is_some_and(|s| s != IpNet::V4(existing.subnet)) {
        return Err(differs("subnet", existing.subnet.to_string()));
    }
    if spec.gateway.is_some_and(|g| g != IpAddr::V4(existing.gateway)) {
        return Err(differs("gateway", existing.gateway.to_string()));
    }
    if spec.mtu.is_some_and(|m| m != existing.mtu) {
        return Err(differs("mtu", existing.mtu.to_string()));
    }
    let stated = &config.stated;
    if stated.internal.is_some_and(|i| i != existing.internal) {
        return Err(differs("internal", existing.internal.to_string()));
    }
    if stated.ip_masq.is_some_and(|m| m != existing.masquerade) {
        return Err(differs("ipMasq", existing.masquerade.to_string()));
    }
    if stated.xdp.is_some_and(|x| x != existing.xdp.is_on()) {
        return Err(differs("xdp", existing.xdp.to_string()));
    }
    Ok(())
}

async fn add(ctl: &mut Controller, config: &Config, at: &Attachment) -> Result<Value, CniError> {
    ensure_network(ctl, config).await?;
    let netns = at.netns.as_deref().unwrap_or_default();
    let ep = ctl.attach(&config.attach_spec(at, netns)?).await?;
    let bridge = ctl.network(&ep.network)?.bridge;
    let host = reply::HostSide {
        bridge_mac: ctl.link_mac(&bridge).await?,
        bridge,
        veth_mac: ctl.link_mac(&ep.host_veth).await?,
    };
    let resolver = ctl.resolver_answers()?.then_some(ep.gateway);
    Ok(reply::add_result(&config.version, &ep, &host, config.dns.as_ref(), config.prev_result.as_ref(), resolver))
}

/// Idempotent: an unknown id, a namespace that is gone and a second DEL all succeed.
async fn del(ctl: &mut Controller, at: &Attachment) -> Result<(), CniError> {
    match ctl.detach(&DetachSpec::Id(at.endpoint_id())).await {
        Ok(_) | Err(Error::NotFound(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn check(ctl: &mut Controller, config: &Config, at: &Attachment) -> Result<(), CniError> {
    let id = at.endpoint_id();
    let failed = |msg: String| CniError::new(code::CHECK_FAILED, msg);
    let Some(ep) = ctl.find_endpoint(&id)? else {
        return Err(failed(format!("container {} has no netpath endpoint on {}", at.container_id, at.ifname)));
    };
    if ep.network != config.network.name {
        return Err(failed(format!(
            "endpoint '{id}' is on netpath network '{}', not '{}'",
            ep.network, config.network.name
        )));
    }
    if let Some(prev) = &config.prev_result {
        if !reply::lists_address(prev, &ep) {
            return Err(failed(format!("prevResult does not list {}/{} of endpoint '{id}'", ep.ip, ep.prefix)));
        }
    }
    let netns = at.netns.as_deref().unwrap_or_default();
    match ctl.endpoint_fault(&ep, netns).await? {
        None => Ok(()),
        Some(fault) => Err(failed(format!("endpoint '{id}': {fault}"))),
    }
}

async fn status(ctl: &mut Controller, config: &Config) -> Result<(), CniError> {
    match ctl.readiness(&config.network.name).await? {
        Readiness::Ready => Ok(()),
        Readiness::NotReady(msg) => Err(CniError::new(code::NOT_AVAILABLE, msg)),
        Readiness::Degraded(msg) => Err(CniError::new(code::LIMITED_CONNECTIVITY, msg)),
    }
}

/// Releases every endpoint CNI made on the network that the runtime does not list as valid.
/// The CLI's, an OCI hook's or an engine's endpoints on the same network are not the runtime's
/// to collect, whatever their id looks like (`attach --id` takes any id, the CNI form too).
async fn gc(ctl: &mut Controller, config: &Config) -> Result<(), CniError> {
    let valid = config.valid_ids()?;
    if ctl.find_network(&config.network.name)?.is_none() {
        return Ok(());
    }
    let mut errors = Vec::new();
    for ep in ctl.endpoints(Some(&config.network.name))? {
        if ep.creator != Some(Creator::Cni) || valid.contains(&ep.id) {
            continue;
        }
        match ctl.detach(&DetachSpec::Id(ep.id.clone())).await {
            Ok(_) | Err(Error::NotFound(_)) => {}
            Err(e) => errors.push(e),
        }
    }
    Ok(Error::all(errors)?)
}

/// Where runtimes look for plugins: containerd and Kubernetes, and Podman.
pub const PLUGIN_DIRS: &[&str] = &["/opt/cni/bin", "/usr/lib/cni"];

/// Copies this binary into each plugin directory as `netpath`, through a temporary file and
/// a rename, so a runtime never executes a half-written plugin.
pub fn install(dirs: &[std::path::PathBuf]) -> crate::Result<Vec<std::path::PathBuf>> {
    use crate::error::Context;
    let defaults: Vec<std::path::PathBuf> = PLUGIN_DIRS.iter().map(Into::into).collect();
    let dirs = if dirs.is_empty() { &defaults[..] } else { dirs };
    let exe = std::env::current_exe().context(|| "cannot find the netpath binary")?;
    let mut installed = Vec::new();
    for dir in dirs {
        std::fs::create_dir_all(dir).context(|| format!("cannot create {}", dir.display()))?;
        let target = dir.join("netpath");
        let staging = dir.join(format!(".netpath.{}", std::process::id()));
        std::fs::copy(&exe, &staging).context(|| format!("cannot copy {} to {}", exe.display(), staging.display()))?;
        std::fs::rename(&staging, &target).context(|| format!("cannot install {}", target.display()))?;
        installed.push(target);
    }
    Ok(installed)
}
