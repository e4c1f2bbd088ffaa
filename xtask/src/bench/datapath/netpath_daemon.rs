//! netpath attached through `netpath daemon`, its Docker network and IPAM driver,
//! as dockerd drives it. Attach scenarios only: the datapath is netpath's own, measured as
//! `netpath`.
//!
//! `up` starts the daemon in the root namespace with its own state, bpffs pins and socket
//! under the run directory, bound to this topology's host namespace, and creates the pool and
//! the network as `docker network create -d netpath --ipam-driver netpath` does. An attach is
//! what dockerd does for `docker run`: IpamDriver.RequestAddress, NetworkDriver.CreateEndpoint
//! and NetworkDriver.Join over the socket, then the engine's own part (move the handed veth end
//! into the sandbox as eth0, address it, bring it up, default route through the gateway), with
//! in-process netlink as dockerd does it (`sandbox`). Two flavours: `netpath-daemon` times the
//! driver calls alone and does the engine's part after the clock stopped
//! (`Attacher::complete`), which shows the driver's share; `netpath-daemon-engine` times both,
//! like for like with the CLI, netavark and the CNI plugin, whose figures include the
//! namespace work.
//!
//! The daemon answers every request with `Connection: close`, so each call is a connection of
//! its own, as it is for dockerd with this driver.
use std::{
    collections::HashMap,
    io::{Read, Write},
    net::Ipv4Addr,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use super::{
    Attacher, Datapath, Route, Routes, Unavailable,
    netpath::{command, unmount},
};
use crate::bench::{
    Ctx,
    netns::Netns,
    process::{Daemon, SETUP_LIMIT, root_cause, stdout_within},
    sandbox::{self, Handed},
    topology::Topology,
};

/// The pool, distinct from the CLI datapath's so a report never confuses them.
const SUBNET: &str = "10.202.0.0/16";
/// A Docker network id (64 hex digits); netpath names the network after its first 12.
const NETWORK_ID: &str = "6e7470617468000000000000000000000000000000000000000000000000beac";
/// The daemon gets this long to listen after it starts.
const START_LIMIT: Duration = Duration::from_secs(20);
/// One plugin call; a daemon that takes longer is stuck.
const CALL_LIMIT: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct NetpathDaemon {
    /// Whether the engine's part is timed with the driver calls.
    engine_timed: bool,
    topo: Option<Topology>,
    dir: PathBuf,
    daemon: Option<Daemon>,
    /// The pool IPAM handed out, once requested, and the network's gateway (CIDR).
    pool: Option<String>,
    gateway: Option<String>,
    network: bool,
    routes: Routes,
    /// Each attached endpoint, by index, from its address on.
    endpoints: Mutex<HashMap<u32, Endpoint>>,
}

/// What the driver handed for one endpoint.
#[derive(Clone, Default)]
struct Endpoint {
    /// Its address with the prefix, as IPAM gave it (and takes it back).
    cidr: String,
    /// The interface and addresses, once Join answered.
    handed: Option<Handed>,
}

impl NetpathDaemon {
    /// The driver calls timed, the engine's part after the clock stopped.
    pub fn driver_calls() -> Self {
        Self::default()
    }

    /// The driver calls and the engine's part timed together.
    pub fn with_engine() -> Self {
        Self { engine_timed: true, ..Self::default() }
    }

    fn socket(&self) -> PathBuf {
        socket(&self.dir)
    }

    /// One plugin API call; an error names the method and the daemon's words.
    fn call(&self, method: &str, body: &Value) -> Result<Value> {
        call(&self.socket(), method, body).with_context(|| format!("{method} through netpath daemon"))
    }

    /// Starts the daemon and waits until its socket answers.
    fn start(&mut self, ctx: &Ctx) -> Result<()> {
        let topo = self.topo.as_ref().context("netpath-daemon is not up")?;
        self.daemon = Some(start(ctx, &self.dir, &topo.host, self.name(), &[])?);
        Ok(())
    }

    /// `docker network create -d netpath --ipam-driver netpath --subnet SUBNET`: the pool, the
    /// gateway's address, then the network.
    fn create_network(&mut self) -> Result<()> {
        let pool = self.call(
            "IpamDriver.RequestPool",
            &json!({"AddressSpace": "netpath-local", "Pool": SUBNET, "SubPool": "", "Options": {}, "V6": false}),
        )?;
        let pool = self.pool.insert(text(&pool, "PoolID")?).clone();
        let gateway = self.call(
            "IpamDriver.RequestAddress",
            &json!({"PoolID": pool, "Address": "", "Options": {"RequestAddressType": "com.docker.network.gateway"}}),
        )?;
        let gateway = self.gateway.insert(text(&gateway, "Address")?).clone();
        self.call(
            "NetworkDriver.CreateNetwork",
            &json!({"NetworkID": NETWORK_ID, "Options": {"com.docker.network.generic": {}},
                    "IPv4Data": [{"AddressSpace": "netpath-local", "Pool": pool, "Gateway": gateway}], "IPv6Data": []}),
        )?;
        self.network = true;
        Ok(())
    }

    /// What dockerd undoes at `docker network rm`, best effort; returns whether the network is gone.
    fn delete_network(&mut self) -> bool {
        let mut gone = !self.network;
        if self.network {
            gone = self.call("NetworkDriver.DeleteNetwork", &json!({"NetworkID": NETWORK_ID})).is_ok();
            self.network = false;
        }
        if let (Some(pool), Some(gateway)) = (&self.pool, self.gateway.take()) {
            let _ = self.call("IpamDriver.ReleaseAddress", &json!({"PoolID": pool, "Address": gateway}));
        }
        if let Some(pool) = self.pool.take() {
            let _ = self.call("IpamDriver.ReleasePool", &json!({"PoolID": pool}));
        }
        gone
    }

    fn pool(&self) -> Result<&str> {
        self.pool.as_deref().context("netpath-daemon has no pool")
    }

    /// RequestAddress, CreateEndpoint, Join.
    fn attach_endpoint(&self, index: u32, ns: &Netns) -> Result<Ipv4Addr> {
        let pool = self.pool()?;
        let endpoint = endpoint_id(index);
        let cidr = text(
            &self.call("IpamDriver.RequestAddress", &json!({"PoolID": pool, "Address": "", "Options": {}}))?,
            "Address",
        )?;
        self.remember(index, Endpoint { cidr: cidr.clone(), handed: None });
        self.call(
            "NetworkDriver.CreateEndpoint",
            &json!({"NetworkID": NETWORK_ID, "EndpointID": endpoint,
                    "Interface": {"Address": cidr, "AddressIPv6": "", "MacAddress": ""}, "Options": {}}),
        )?;
        let joined = self.call(
            "NetworkDriver.Join",
            &json!({"NetworkID": NETWORK_ID, "EndpointID": endpoint, "SandboxKey": ns.path(), "Options": {}}),
        )?;
        let ifname = joined["InterfaceName"]["SrcName"].as_str().with_context(|| format!("no SrcName in {joined}"))?;
        let handed = Handed::parse(ifname, &cidr, &text(&joined, "Gateway")?)?;
        let ip = handed.address;
        self.remember(index, Endpoint { cidr, handed: Some(handed) });
        Ok(ip)
    }

    fn endpoints(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Endpoint>> {
        self.endpoints.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remember(&self, index: u32, endpoint: Endpoint) {
        self.endpoints().insert(index, endpoint);
    }

    /// The engine's part after Join, for endpoint `index`.
    fn configure(&self, index: u32, ns: &Netns) -> Result<()> {
        let host = &self.topo.as_ref().context("netpath-daemon is not up")?.host;
        let handed = self.endpoints().get(&index).and_then(|e| e.handed.clone());
        let handed = handed.with_context(|| format!("endpoint {index} was not joined"))?;
        sandbox::join(host, ns, &handed, "eth0").map_err(|e| anyhow!("after Join: {}", root_cause(&e)))
    }
}

/// The daemon's plugin socket, with the state and pins under `dir`.
fn socket(dir: &Path) -> PathBuf {
    dir.join("netpath.sock")
}

/// Starts `netpath daemon` (with `args` after its socket) for the state and pins under `dir`,
/// its log named after `datapath`, and waits until its socket answers.
pub(super) fn start(ctx: &Ctx, dir: &Path, host: &Netns, datapath: &str, args: &[&str]) -> Result<Daemon> {
    let socket = socket(dir);
    let log = ctx.log(&format!("{datapath}-daemon"));
    let mut all = vec!["daemon", "--docker-socket", socket.to_str().context("run directory is not UTF-8")?];
    all.extend(args);
    let mut daemon = Daemon::spawn("netpath daemon", &mut command(ctx, dir, host, &all), &log)?;
    let deadline = Instant::now() + START_LIMIT;
    while UnixStream::connect(&socket).is_err() {
        daemon.check_alive(&log)?;
        if Instant::now() > deadline {
            bail!(
                "netpath daemon did not listen on {} within {}s; see {}",
                socket.display(),
                START_LIMIT.as_secs(),
                log.display()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(daemon)
}

/// Endpoint `index`'s id: 64 hex digits, as Docker's.
fn endpoint_id(index: u32) -> String {
    format!("{index:064x}")
}

/// A string field of an answer.
fn text(answer: &Value, field: &str) -> Result<String> {
    answer[field].as_str().map(str::to_string).with_context(|| format!("no {field} in {answer}"))
}

/// One POST on a connection of its own, read until the daemon closes it; a non-200 status or
/// an `Err` in the answer is an error with the daemon's words.
fn call(socket: &std::path::Path, method: &str, body: &Value) -> Result<Value> {
    let body = body.to_string();
    let request = format!(
        "POST /{method} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/vnd.docker.plugins.v1.2+json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = UnixStream::connect(socket).with_context(|| format!("connecting to {}", socket.display()))?;
    stream.set_read_timeout(Some(CALL_LIMIT))?;
    stream.set_write_timeout(Some(CALL_LIMIT))?;
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").with_context(|| format!("malformed answer {response:?}"))?;
    let status = head.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok());
    let answer: Value = serde_json::from_str(body).with_context(|| format!("answer {body:?}"))?;
    match (status, answer.get("Err")) {
        (Some(200), None) => Ok(answer),
        (_, Some(err)) => Err(anyhow!("{}", err.as_str().unwrap_or_default())),
        (status, None) => Err(anyhow!("status {status:?}: {body}")),
    }
}

impl Datapath for NetpathDaemon {
    fn name(&self) -> &'static str {
        if self.engine_timed { "netpath-daemon-engine" } else { "netpath-daemon" }
    }

    fn description(&self) -> String {
        let timed = if self.engine_timed {
            "timed: the driver calls and the engine's part (the veth end moved into the namespace as eth0, addressed, up, default route), done with in-process netlink as dockerd does, like for like with the CLI, netavark and CNI"
        } else {
            "timed: the driver calls alone; the engine's part (in-process netlink) runs after the clock stopped"
        };
        format!(
            "netpath through `netpath daemon`, its Docker network and IPAM driver, called over its unix socket as dockerd does (attach scenarios only); {timed}"
        )
    }

    fn up(&mut self, ctx: &Ctx) -> Result<()> {
        let topo = self.topo.insert(Topology::new(ctx, self.name())?);
        self.dir = topo.dir(ctx, "netpath")?;
        self.start(ctx)?;
        self.create_network().context("creating the network through netpath daemon")?;
        let why =
            "the daemon only changes how endpoints are attached; its datapath is netpath's, measured as `netpath`";
        for route in [Route::C2c, Route::Egress, Route::Ingress, Route::HostLocal] {
            self.routes.set(route, Err(Unavailable::NotApplicable(why.into())));
        }
        Ok(())
    }

    fn routes(&self) -> &Routes {
        &self.routes
    }

    fn down(&mut self, ctx: &Ctx) {
        let gone = self.daemon.is_some() && self.delete_network();
        // SIGTERM by PID, then wait (`Daemon`'s drop).
        self.daemon = None;
        if let Some(topo) = &self.topo {
            if !gone && self.dir.join("state").exists() {
                let name = format!("docker-{}", &NETWORK_ID[..12]);
                let _ = stdout_within(
                    &mut command(ctx, &self.dir, &topo.host, &["network", "rm", &name, "--force"]),
                    SETUP_LIMIT,
                );
            }
        }
        unmount(&self.dir.join("bpffs"));
        self.topo = None;
        self.routes = Routes::default();
        self.pool = None;
        self.gateway = None;
        self.network = false;
        self.endpoints().clear();
    }

    fn attacher(&self) -> Option<&dyn Attacher> {
        if self.network { Some(self) } else { None }
    }
}

impl Attacher for NetpathDaemon {
    fn attach(&self, ctx: &Ctx, index: u32, ns: &Netns) -> Result<Ipv4Addr> {
        let attached = self.attach_endpoint(index, ns);
        let done = match (attached, self.engine_timed) {
            (Ok(ip), true) => self.configure(index, ns).map(|()| ip),
            (attached, _) => attached,
        };
        // The sweep detaches only what attached: a failed attach undoes its own steps, as
        // dockerd does when `docker run` fails half-way.
        done.inspect_err(|_| {
            let _ = self.detach(ctx, index, ns);
        })
    }

    fn complete(&self, _ctx: &Ctx, index: u32, ns: &Netns) -> Result<()> {
        if self.engine_timed { Ok(()) } else { self.configure(index, ns) }
    }

    fn detach(&self, _ctx: &Ctx, index: u32, _ns: &Netns) -> Result<()> {
        let ids = json!({"NetworkID": NETWORK_ID, "EndpointID": endpoint_id(index)});
        // Every step is tried, so a half-made endpoint is undone as far as it was made.
        let left = self.call("NetworkDriver.Leave", &ids);
        let deleted = self.call("NetworkDriver.DeleteEndpoint", &ids);
        let endpoint = self.endpoints().remove(&index);
        let released = match endpoint {
            Some(Endpoint { cidr, .. }) => {
                self.call("IpamDriver.ReleaseAddress", &json!({"PoolID": self.pool()?, "Address": cidr}))
            }
            None => Ok(Value::Null),
        };
        left.and(deleted).and(released).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use std::{io::Read, io::Write, os::unix::net::UnixListener, path::PathBuf};

    use serde_json::json;

    use super::call;

    /// A one-shot server on a socket of its own that answers `reply` to whatever comes.
    fn answering(name: &str, reply: &'static str) -> (PathBuf, std::thread::JoinHandle<()>) {
        let path = std::env::temp_dir().join(format!("npbench-test-{}-{name}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            stream.write_all(reply.as_bytes()).unwrap();
        });
        (path, server)
    }

    fn call_answered(name: &str, reply: &'static str) -> anyhow::Result<serde_json::Value> {
        let (path, server) = answering(name, reply);
        let result = call(&path, "NetworkDriver.Join", &json!({}));
        server.join().unwrap();
        let _ = std::fs::remove_file(&path);
        result
    }

    #[test]
    fn answers_and_refusals() {
        let ok = call_answered("ok", "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"Gateway\":\"10.0.0.1\"}").unwrap();
        assert_eq!(ok["Gateway"], "10.0.0.1");
        // The daemon's own words come through, whatever the status.
        let refused =
            call_answered("refused", "HTTP/1.1 500 Internal Server Error\r\n\r\n{\"Err\":\"no such endpoint\"}");
        assert_eq!(refused.unwrap_err().to_string(), "no such endpoint");
        assert!(call_answered("err200", "HTTP/1.1 200 OK\r\n\r\n{\"Err\":\"pool exhausted\"}").is_err());
        assert!(call_answered("status", "HTTP/1.1 404 Not Found\r\n\r\n{}").is_err());
        // A peer that hangs up half-way or speaks garbage is an error, never a panic.
        assert!(call_answered("cut", "HTTP/1.1 200 OK\r\nContent-Le").is_err());
        assert!(call_answered("garbage", "\0\0\0\r\n\r\nnot json").is_err());
        assert!(call(&std::env::temp_dir().join("npbench-test-nobody.sock"), "Plugin.Activate", &json!({})).is_err());
    }
}
