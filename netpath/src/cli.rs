//! The `netpath` command line: argument parsing, and rendering of what the controller returns.
use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::{
    cni, conntrack,
    controller::{AttachSpec, Controller, DetachSpec, NetworkSpec, Paths, Target},
    error::{Error, Result},
    monitor,
    netns::{self, Netns},
    oci,
    output::{Format, json, key_values, table},
    ports::Port,
    privileges, probe,
    restore::{EndpointAction, RestoreReport},
    settings::{Changes, Settings},
    stats,
    store::{EndpointRecord, NetworkRecord, State},
};

/// Where the state database lives unless `--state-dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/netpath";
/// The pin root unless `--bpffs` says otherwise.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/netpath";

#[derive(Debug, Parser)]
#[command(name = "netpath", version, about = "Container bridge networking with an eBPF data plane")]
pub struct Cli {
    /// Directory of the state database.
    #[arg(long, env = "NETPATH_STATE_DIR", default_value = DEFAULT_STATE_DIR, global = true)]
    pub state_dir: PathBuf,
    /// Pin root for the datapath's maps, programs and links (on a bpffs; mounted when missing).
    #[arg(long = "bpffs", env = "NETPATH_BPFFS", default_value = DEFAULT_PIN_ROOT, global = true)]
    pub pin_root: PathBuf,
    /// Run the whole command in this network namespace, as if it were the host's.
    #[arg(long, env = "NETPATH_HOST_NETNS", global = true)]
    pub host_netns: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, inspect and remove networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Attach a network namespace to a network.
    Attach(AttachArgs),
    /// Detach endpoints, by id or by namespace.
    Detach(DetachArgs),
    /// List and inspect endpoints.
    #[command(subcommand)]
    Endpoint(EndpointCmd),
    /// Show the datapath's per-endpoint and drop counters, or (--programs) what each eBPF
    /// program costs per run.
    Stats {
        #[arg(long)]
        network: Option<String>,
        /// Per-program run counts and nanoseconds per run instead of the counters.
        #[arg(long, conflicts_with = "network")]
        programs: bool,
        /// With --programs: measure over this many seconds, with the kernel's run-time
        /// statistics on for just that long (otherwise: since load, when
        /// kernel.bpf_stats_enabled is on).
        #[arg(long = "for", value_name = "SECONDS", requires = "programs", value_parser = clap::value_parser!(u64).range(1..=3600))]
        window: Option<u64>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Print the datapath's drop events as they happen (one JSON object per line with
    /// --format json).
    Monitor {
        /// Stop after this many seconds.
        #[arg(long)]
        seconds: Option<u64>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Probe the kernel features netpath needs and verify its eBPF programs.
    Status {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Manage the pinned datapath.
    #[command(subcommand)]
    Datapath(DatapathCmd),
    /// The datapath's connection-tracking table (masqueraded and published flows).
    #[command(subcommand)]
    Conntrack(ConntrackCmd),
    /// Published ports.
    #[command(subcommand)]
    Port(PortCmd),
    /// Rebuild every network and endpoint from the database after a reboot (or at any time):
    /// endpoints whose namespace is gone are released. Idempotent.
    Restore {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Release endpoints whose namespace is gone and remove kernel objects no row owns.
    Gc {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// OCI runtime hooks (runc, crun): read the container's state JSON on stdin.
    #[command(subcommand)]
    OciHook(OciHookCmd),
    /// The CNI plugin: `netpath` speaks CNI when CNI_COMMAND is set.
    #[command(subcommand)]
    Cni(CniCmd),
    /// Serve Docker's network and IPAM plugin API (honours systemd socket activation) and
    /// garbage-collect periodically, until SIGTERM.
    Daemon {
        /// The socket dockerd finds the plugin by.
        #[arg(long, default_value = crate::daemon::DEFAULT_DOCKER_SOCKET)]
        docker_socket: PathBuf,
        /// Seconds between two runs of gc and conntrack gc.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
        gc_interval: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum OciHookCmd {
    /// Attach the container's network namespace (a createRuntime or prestart hook).
    Attach {
        #[arg(long)]
        network: String,
        #[arg(long)]
        ip: Option<String>,
        /// Interface name inside the container.
        #[arg(long, default_value = "eth0")]
        ifname: String,
        /// Publish a port, as `netpath attach -p` (repeatable).
        #[arg(short = 'p', long = "publish")]
        publish: Vec<String>,
    },
    /// Release the container's endpoint (a poststop hook); succeeds when it is already gone.
    Detach,
}

#[derive(Debug, Subcommand)]
pub enum CniCmd {
    /// Install this binary as the `netpath` CNI plugin.
    Install {
        /// Plugin directories (repeatable); by default /opt/cni/bin (containerd, Kubernetes)
        /// and /usr/lib/cni (Podman).
        #[arg(long = "dir")]
        dirs: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PortCmd {
    /// List published ports.
    Ls {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

#[derive(Serialize)]
struct PortView {
    endpoint: String,
    network: String,
    #[serde(flatten)]
    port: Port,
    container_ip: std::net::Ipv4Addr,
}

#[derive(Debug, Subcommand)]
pub enum ConntrackCmd {
    /// List live connections.
    Ls {
        #[arg(long)]
        network: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Forget connections (of one network's endpoints, or all); they restart translated anew.
    Flush {
        #[arg(long)]
        network: Option<String>,
    },
    /// Remove expired entries (the datapath already ignores them).
    Gc,
}

#[derive(Debug, Subcommand)]
pub enum NetworkCmd {
    /// Create a network: a bridge, a subnet and a gateway.
    Create(CreateArgs),
    /// List networks.
    Ls {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show a network and its endpoints (JSON unless --format text).
    Inspect {
        name: String,
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
    },
    /// Remove a network and its bridge.
    Rm {
        name: String,
        /// Detach the network's endpoints first.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    pub name: String,
    /// Subnet in CIDR form; without it the first free /22 of 10.200.0.0/13.
    #[arg(long)]
    pub subnet: Option<String>,
    /// Gateway address (the bridge's); defaults to the subnet's first host.
    #[arg(long)]
    pub gateway: Option<String>,
    /// Bridge name; defaults to np-NAME.
    #[arg(long)]
    pub bridge: Option<String>,
    #[arg(long)]
    pub mtu: Option<u32>,
    /// No traffic leaves the network.
    #[arg(long)]
    pub internal: bool,
    /// Route egress without source translation.
    #[arg(long)]
    pub no_masquerade: bool,
    /// Interface that reaches the outside; defaults to the device of the default route.
    #[arg(long)]
    pub uplink: Option<String>,
    /// Also serve inbound published ports with XDP on the uplink (the accelerated variant;
    /// expects fully checksummed frames, as a NIC delivers them).
    #[arg(long)]
    pub xdp: bool,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    #[arg(long)]
    pub network: String,
    /// Network namespace path: /run/netns/NAME, /var/run/docker/netns/ID, /proc/PID/ns/net.
    #[arg(long, conflicts_with = "pid", required_unless_present = "pid")]
    pub netns: Option<String>,
    /// The network namespace of this process.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Endpoint id (a container id); attaching the same id again returns the same endpoint.
    #[arg(long)]
    pub id: Option<String>,
    #[arg(long)]
    pub ip: Option<String>,
    /// MAC address; derived from the IP when left out.
    #[arg(long)]
    pub mac: Option<String>,
    /// Interface name inside the namespace.
    #[arg(long, default_value = "eth0")]
    pub ifname: String,
    /// Publish a port: [HOST_IP:]HOST_PORT[-END]:CONTAINER_PORT[-END][/tcp|/udp] (repeatable).
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct DetachArgs {
    #[arg(long)]
    pub id: Option<String>,
    /// Detach every endpoint in this network namespace.
    #[arg(long)]
    pub netns: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum EndpointCmd {
    /// List endpoints.
    Ls {
        #[arg(long)]
        network: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show one endpoint (JSON unless --format text).
    Inspect {
        id: String,
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
    },
}

#[derive(Debug, Subcommand)]
pub enum DatapathCmd {
    /// Replace the pinned datapath with this build's without a gap: maps whose layout did not
    /// change are kept (conntrack survives), links switch programs atomically.
    Reload {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show the datapath-wide settings.
    Show {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Change the SNAT port range and the conntrack timeouts (seconds).
    Configure {
        /// Source ports for masqueraded flows, FIRST-LAST, outside net.ipv4.ip_local_port_range.
        #[arg(long)]
        snat_ports: Option<String>,
        #[arg(long)]
        tcp_established_timeout: Option<u32>,
        /// TCP connections being opened or closed.
        #[arg(long)]
        tcp_transient_timeout: Option<u32>,
        #[arg(long)]
        udp_timeout: Option<u32>,
        #[arg(long)]
        icmp_timeout: Option<u32>,
    },
}

/// Runs the parsed command line: checks privileges, enters the host namespace before any
/// thread exists, then drives the controller on a single-threaded runtime.
pub fn run(cli: Cli) -> Result<()> {
    privileges::require()?;
    if let Command::Cni(CniCmd::Install { dirs }) = &cli.command {
        for path in cni::install(dirs)? {
            println!("installed {}", path.display());
        }
        return Ok(());
    }
    host_runtime(cli.host_netns.as_deref())?.block_on(execute(cli))
}

/// Enters the host namespace (`--host-netns`) while the process has one thread, as setns
/// needs, and starts the runtime the controller runs on.
pub fn host_runtime(host_netns: Option<&str>) -> Result<tokio::runtime::Runtime> {
    if let Some(path) = host_netns {
        netns::enter(&Netns::open(path)?)?;
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::system("cannot start the async runtime", e))
}

async fn execute(cli: Cli) -> Result<()> {
    let paths = Paths { state_dir: cli.state_dir, pin_root: cli.pin_root };
    let mut ctl = Controller::open(paths)?;
    match cli.command {
        Command::Network(cmd) => network(&mut ctl, cmd).await,
        Command::Attach(args) => {
            let target = match (args.netns, args.pid) {
                (Some(path), _) => Target::Path(path),
                (None, Some(pid)) => Target::Pid(pid),
                (None, None) => return Err(Error::invalid("pass --netns PATH or --pid PID")),
            };
            let spec = AttachSpec {
                network: args.network,
                target,
                id: args.id,
                ip: args.ip,
                mac: args.mac,
                ifname: args.ifname,
                publish: args.publish,
            };
            let ep = ctl.attach(&spec).await?;
            print(args.format, &ep, endpoint_text)
        }
        Command::Detach(args) => {
            let spec = match (args.id, args.netns) {
                (Some(id), _) => DetachSpec::Id(id),
                (None, Some(path)) => DetachSpec::Netns(path),
                (None, None) => return Err(Error::invalid("pass --id ID or --netns PATH")),
            };
            for ep in ctl.detach(&spec).await? {
                println!("detached {} ({}) from {}", ep.id, ep.ip, ep.network);
            }
            Ok(())
        }
        Command::Endpoint(EndpointCmd::Ls { network, format }) => {
            let eps = ctl.endpoints(network.as_deref())?;
            print(format, &eps, |eps| endpoints_table(eps))
        }
        Command::Endpoint(EndpointCmd::Inspect { id, format }) => print(format, &ctl.endpoint(&id)?, endpoint_text),
        Command::Stats { programs: true, window, format, .. } => {
            let report = stats::programs(&mut ctl, window.map(std::time::Duration::from_secs)).await?;
            print(format, &report, program_stats_text)
        }
        Command::Stats { network, format, .. } => {
            let report = stats::collect(&mut ctl, network.as_deref()).await?;
            print(format, &report, stats_text)
        }
        Command::Monitor { seconds, format } => {
            monitor::run(&mut ctl, seconds.map(std::time::Duration::from_secs), format)
        }
        Command::Status { format } => {
            let checks = probe::run(&mut ctl).await?;
            print(format, &checks, |checks| {
                let rows = checks
                    .iter()
                    .map(|c| vec![c.name.to_string(), if c.ok { "ok" } else { "FAIL" }.to_string(), c.detail.clone()])
                    .collect::<Vec<_>>();
                table(&["CHECK", "STATUS", "DETAIL"], &rows)
            })?;
            match checks.iter().filter(|c| !c.ok).count() {
                0 => Ok(()),
                n => Err(Error::invalid(format!("{n} check(s) failed; see above"))),
            }
        }
        Command::Datapath(cmd) => datapath(&mut ctl, cmd).await,
        Command::Restore { format } => {
            let report = ctl.restore().await?;
            print(format, &report, restore_text)?;
            report.into_result()
        }
        Command::Gc { format } => print(format, &ctl.gc().await?, gc_text),
        Command::OciHook(cmd) => oci_hook(&mut ctl, cmd).await,
        Command::Cni(CniCmd::Install { .. }) => Err(Error::invalid("`netpath cni install` runs without a controller")),
        Command::Daemon { docker_socket, gc_interval } => {
            let opts = crate::daemon::DaemonOptions { docker_socket, gc_interval: Duration::from_secs(gc_interval) };
            crate::daemon::run(ctl, opts).await
        }
        Command::Conntrack(cmd) => conntrack_cmd(&mut ctl, cmd),
        Command::Port(PortCmd::Ls { format }) => {
            let ports: Vec<PortView> = ctl
                .ports()?
                .into_iter()
                .map(|(ep, port)| PortView { endpoint: ep.id, network: ep.network, port, container_ip: ep.ip })
                .collect();
            print(format, &ports, |ports| {
                let rows = ports
                    .iter()
                    .map(|p| {
                        let host = p.port.host_ip.map_or_else(|| "0.0.0.0".to_string(), |ip| ip.to_string());
                        vec![
                            p.port.proto.to_string(),
                            format!("{host}:{}", p.port.host_port),
                            format!("{}:{}", p.container_ip, p.port.container_port),
                            p.endpoint.clone(),
                            p.network.clone(),
                        ]
                    })
                    .collect::<Vec<_>>();
                table(&["PROTO", "HOST", "CONTAINER", "ENDPOINT", "NETWORK"], &rows)
            })
        }
    }
}

/// The hooks' stdout is not shown by runtimes; what was done goes to stderr, which runc
/// passes on when a hook fails.
async fn oci_hook(ctl: &mut Controller, cmd: OciHookCmd) -> Result<()> {
    let state = oci::read_state(std::io::stdin())?;
    match cmd {
        OciHookCmd::Attach { network, ip, ifname, publish } => {
            let ep = oci::attach(ctl, &state, &oci::HookAttach { network, ip, ifname, publish }).await?;
            eprintln!("netpath: attached {} ({}) to {}", ep.id, ep.ip, ep.network);
        }
        OciHookCmd::Detach => oci::detach(ctl, &state).await?,
    }
    Ok(())
}

async fn datapath(ctl: &mut Controller, cmd: DatapathCmd) -> Result<()> {
    match cmd {
        DatapathCmd::Reload { format } => {
            let report = ctl.datapath_reload().await?;
            let dir = ctl.datapath()?.dir().display().to_string();
            print(format, &report, |r| {
                format!(
                    "datapath reloaded at {dir}: {} map(s) kept with their contents, {} made anew, {} link(s) switched",
                    r.kept_maps.len(),
                    r.new_maps.len(),
                    r.updated_links.len()
                )
            })
        }
        DatapathCmd::Show { format } => print(format, &ctl.settings()?, settings_text),
        DatapathCmd::Configure {
            snat_ports,
            tcp_established_timeout,
            tcp_transient_timeout,
            udp_timeout,
            icmp_timeout,
        } => {
            let changes =
                Changes { snat_ports, tcp_established_timeout, tcp_transient_timeout, udp_timeout, icmp_timeout };
            let settings = ctl.configure(&changes)?;
            println!("{}", settings_text(&settings));
            Ok(())
        }
    }
}

fn conntrack_cmd(ctl: &mut Controller, cmd: ConntrackCmd) -> Result<()> {
    match cmd {
        ConntrackCmd::Ls { network, format } => {
            let conns = conntrack::list(ctl, network.as_deref())?;
            print(format, &conns, |conns| {
                let rows = conns
                    .iter()
                    .map(|c| {
                        vec![
                            c.proto.to_string(),
                            c.endpoint.clone().unwrap_or_else(|| "-".into()),
                            c.source.clone(),
                            c.destination.clone(),
                            c.translated_source.clone(),
                            c.translated_destination.clone(),
                            c.state.to_string(),
                            format!("{}s", c.expires_in),
                        ]
                    })
                    .collect::<Vec<_>>();
                table(
                    &["PROTO", "ENDPOINT", "SOURCE", "DESTINATION", "AS-SOURCE", "AS-DESTINATION", "STATE", "EXPIRES"],
                    &rows,
                )
            })
        }
        ConntrackCmd::Flush { network } => {
            println!("{} connection(s) flushed", conntrack::flush(ctl, network.as_deref())?);
            Ok(())
        }
        ConntrackCmd::Gc => {
            println!("{} expired connection(s) removed", conntrack::gc(ctl)?);
            Ok(())
        }
    }
}

fn settings_text(s: &Settings) -> String {
    let rows = [
        ("snat ports", format!("{}-{}", s.snat_port_min, s.snat_port_max)),
        ("tcp established timeout", format!("{}s", s.tcp_established_timeout)),
        ("tcp transient timeout", format!("{}s", s.tcp_transient_timeout)),
        ("udp timeout", format!("{}s", s.udp_timeout)),
        ("icmp timeout", format!("{}s", s.icmp_timeout)),
    ];
    key_values(&rows, 24)
}

async fn network(ctl: &mut Controller, cmd: NetworkCmd) -> Result<()> {
    match cmd {
        NetworkCmd::Create(a) => {
            let spec = NetworkSpec {
                name: a.name,
                subnet: a.subnet,
                gateway: a.gateway,
                bridge: a.bridge,
                mtu: a.mtu,
                internal: a.internal,
                no_masquerade: a.no_masquerade,
                uplink: a.uplink,
                xdp: a.xdp,
                external_id: None,
            };
            let net = ctl.network_create(&spec).await?;
            print(a.format, &net, |n| {
                format!("network {} created: bridge {}, subnet {}, gateway {}", n.name, n.bridge, n.subnet, n.gateway)
            })
        }
        NetworkCmd::Ls { format } => {
            let nets = ctl.store().networks()?;
            let counts =
                nets.iter().map(|n| Ok(ctl.store().endpoints(Some(n.id))?.len())).collect::<Result<Vec<_>>>()?;
            print(format, &nets, |nets| {
                let rows = nets
                    .iter()
                    .zip(&counts)
                    .map(|(n, count)| {
                        vec![
                            n.name.clone(),
                            n.bridge.clone(),
                            n.subnet.to_string(),
                            n.gateway.to_string(),
                            count.to_string(),
                            flags(n),
                            engine_id(n),
                        ]
                    })
                    .collect::<Vec<_>>();
                table(&["NAME", "BRIDGE", "SUBNET", "GATEWAY", "ENDPOINTS", "FLAGS", "DOCKER-ID"], &rows)
            })
        }
        NetworkCmd::Inspect { name, format } => {
            let network = ctl.store().network(&name)?;
            let endpoints = ctl.store().endpoints(Some(network.id))?;
            let view = NetworkView { network, endpoints };
            print(format, &view, |v| format!("{}\n\n{}", network_text(&v.network), endpoints_table(&v.endpoints)))
        }
        NetworkCmd::Rm { name, force } => {
            ctl.network_rm(&name, force).await?;
            println!("network {name} removed");
            Ok(())
        }
    }
}

#[derive(Serialize)]
struct NetworkView {
    #[serde(flatten)]
    network: NetworkRecord,
    endpoints: Vec<EndpointRecord>,
}

fn print<T: Serialize + ?Sized>(format: Format, value: &T, text: impl FnOnce(&T) -> String) -> Result<()> {
    match format {
        Format::Json => println!("{}", json(value)?),
        Format::Text => println!("{}", text(value)),
    }
    Ok(())
}

fn flags(n: &NetworkRecord) -> String {
    let mut flags = Vec::new();
    if n.internal {
        flags.push("internal");
    } else if n.masquerade {
        flags.push("masquerade");
    }
    if n.xdp {
        flags.push("xdp");
    }
    let state = n.state.to_string();
    if n.state != State::Ready {
        flags.push(&state);
    }
    flags.join(",")
}

fn restore_text(r: &RestoreReport) -> String {
    let mut lines = Vec::new();
    for n in &r.networks {
        lines.push(match (&n.error, n.created.is_empty()) {
            (Some(e), _) => format!("network {}: FAILED: {e}", n.name),
            (None, true) => format!("network {}: intact", n.name),
            (None, false) => format!("network {}: {}", n.name, n.created.join(", ")),
        });
    }
    for e in &r.endpoints {
        lines.push(match &e.outcome {
            EndpointAction::Intact => format!("endpoint {} ({}): intact", e.id, e.network),
            EndpointAction::Rewired(why) => format!("endpoint {} ({}): rewired ({why})", e.id, e.network),
            EndpointAction::Released => format!("endpoint {} ({}): released, its namespace is gone", e.id, e.network),
            EndpointAction::Failed(why) => format!("endpoint {} ({}): FAILED: {why}", e.id, e.network),
        });
    }
    if !r.reaped.is_empty() {
        lines.push(gc_text(&r.reaped));
    }
    if lines.is_empty() {
        lines.push("nothing to restore".into());
    }
    lines.join("\n")
}

fn gc_text(r: &crate::gc::GcReport) -> String {
    let lists = [
        ("abandoned network", &r.abandoned_networks),
        ("abandoned endpoint", &r.abandoned_endpoints),
        ("released endpoint (namespace gone)", &r.released_endpoints),
        ("removed link", &r.links),
        ("removed pinned link", &r.pinned_links),
        ("removed map entry", &r.map_entries),
        ("removed leftover of a killed reload", &r.datapath_dirs),
    ];
    let mut lines: Vec<String> =
        lists.iter().flat_map(|(what, items)| items.iter().map(move |i| format!("{what}: {i}"))).collect();
    if r.counters > 0 {
        lines.push(format!("removed {} orphan counter(s)", r.counters));
    }
    if r.connections > 0 {
        lines.push(format!("removed {} orphan conntrack entr(ies)", r.connections));
    }
    if lines.is_empty() {
        lines.push("nothing to collect".into());
    }
    lines.join("\n")
}

fn network_text(n: &NetworkRecord) -> String {
    let rows = [
        ("name", n.name.clone()),
        ("bridge", n.bridge.clone()),
        ("subnet", n.subnet.to_string()),
        ("gateway", n.gateway.to_string()),
        ("mtu", n.mtu.to_string()),
        ("flags", flags(n)),
        ("uplink", n.uplink.clone().unwrap_or_else(|| "(default route)".into())),
        ("docker id", n.external_id.clone().unwrap_or_else(|| "-".into())),
    ];
    key_values(&rows, 9)
}

/// The id Docker knows a network by, shortened as `docker network ls` shows it.
fn engine_id(n: &NetworkRecord) -> String {
    n.external_id.as_deref().map_or_else(|| "-".to_string(), |id| id.chars().take(12).collect())
}

/// The container end's name: Docker names the ends it was handed (eth0, eth1 …) itself.
fn ifname_of(e: &EndpointRecord) -> String {
    if e.handed { "(by docker)".to_string() } else { e.ifname.clone() }
}

fn endpoint_text(e: &EndpointRecord) -> String {
    let rows = [
        ("id", e.id.clone()),
        ("network", e.network.clone()),
        ("ip", format!("{}/{}", e.ip, e.prefix)),
        ("mac", e.mac.clone()),
        ("gateway", e.gateway.to_string()),
        ("ifname", ifname_of(e)),
        ("host", e.host_veth.clone()),
        ("netns", e.netns.clone()),
        ("ports", e.ports.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")),
    ];
    key_values(&rows, 8)
}

fn endpoints_table(eps: &[EndpointRecord]) -> String {
    let rows = eps
        .iter()
        .map(|e| {
            vec![
                e.id.clone(),
                e.network.clone(),
                format!("{}/{}", e.ip, e.prefix),
                e.mac.clone(),
                ifname_of(e),
                e.host_veth.clone(),
                e.netns.clone(),
            ]
        })
        .collect::<Vec<_>>();
    table(&["ID", "NETWORK", "IP", "MAC", "IFNAME", "HOST-VETH", "NETNS"], &rows)
}

fn program_stats_text(r: &stats::ProgramReport) -> String {
    let rows = r
        .programs
        .iter()
        .map(|p| {
            let per_run = p.ns_per_run.map_or_else(|| "-".to_string(), |ns| format!("{ns:.0}"));
            vec![p.program.to_string(), p.runs.to_string(), p.run_ns.to_string(), per_run]
        })
        .collect::<Vec<_>>();
    let scope = match r.window_seconds {
        Some(seconds) => format!("over {seconds:.0} s"),
        None if r.kernel_stats_enabled => "since each program was loaded".to_string(),
        None => "since load; kernel.bpf_stats_enabled is 0, so nothing was counted: pass --for SECONDS".to_string(),
    };
    format!(
        "{}

{scope}",
        table(&["PROGRAM", "RUNS", "RUN-NS", "NS/RUN"], &rows)
    )
}

fn stats_text(r: &stats::Report) -> String {
    let rows = r
        .endpoints
        .iter()
        .map(|e| {
            vec![
                e.id.clone(),
                e.network.clone(),
                e.ip.clone(),
                e.tx_packets.to_string(),
                e.tx_bytes.to_string(),
                e.rx_packets.to_string(),
                e.rx_bytes.to_string(),
            ]
        })
        .collect::<Vec<_>>();
    let drops = r
        .drops
        .iter()
        .map(|d| vec![d.reason.to_string(), d.packets.to_string(), d.bytes.to_string()])
        .collect::<Vec<_>>();
    format!(
        "{}\n\n{}\n\nxdp redirected {} packets, {} bytes",
        table(&["ENDPOINT", "NETWORK", "IP", "TX-PKTS", "TX-BYTES", "RX-PKTS", "RX-BYTES"], &rows),
        table(&["DROP-REASON", "PACKETS", "BYTES"], &drops),
        r.xdp_redirected.packets,
        r.xdp_redirected.bytes
    )
}
