//! The command line's arguments, as clap parses them.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::core::session::{DEFAULT_PIN_ROOT, DEFAULT_STATE_DIR};
use crate::view::output::Format;

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
        #[arg(long, default_value = crate::frontend::daemon::DEFAULT_DOCKER_SOCKET)]
        docker_socket: PathBuf,
        /// Seconds between two runs of gc and conntrack gc.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
        gc_interval: u64,
        /// Serve Prometheus metrics at http://ADDRESS:PORT/metrics (off unless given), e.g.
        /// 127.0.0.1:9464. Anyone who can connect may read them.
        #[arg(long, value_name = "ADDRESS:PORT")]
        metrics: Option<String>,
        /// Do not answer containers' DNS queries to their gateway (on by default: names and
        /// aliases of the asker's networks, everything else forwarded upstream).
        #[arg(long)]
        no_dns: bool,
        /// Where names that are not containers' are asked (at most three; default: the
        /// nameservers of /etc/resolv.conf).
        #[arg(long, value_name = "ADDRESS")]
        dns_upstream: Vec<String>,
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
    /// Remove entries of connections that are over: expired, or an endpoint detached (the datapath already ignores them).
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
    /// Run XDP on the uplink. `--xdp` (filter): drop unsolicited, malformed, spoofed and
    /// martian traffic before the stack; published ports stay on the TC path. `--xdp redirect`:
    /// also translate and redirect published-port traffic in XDP, for drivers where XDP avoids
    /// the skb (a physical NIC; measured slower than TC on a veth uplink); it expects fully
    /// checksummed frames, as a NIC delivers them.
    #[arg(long, value_name = "MODE", num_args = 0..=1, default_missing_value = "filter")]
    pub xdp: Option<String>,
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
    /// The name the container answers to on the network, unique there: a DNS host name
    /// (letters, digits, '-', dots between parts).
    #[arg(long)]
    pub name: Option<String>,
    /// Another name it answers to, which other containers of the network may share
    /// (repeatable).
    #[arg(long = "alias", value_name = "ALIAS")]
    pub aliases: Vec<String>,
    /// Write a resolv.conf here naming the network's gateway as the nameserver, for the
    /// container to mount (answered while `netpath daemon` runs), e.g.
    /// /etc/netns/NAME/resolv.conf for `ip netns exec NAME`.
    #[arg(long, value_name = "PATH")]
    pub resolv_conf: Option<PathBuf>,
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
    /// Change the SNAT port range, the SNAT quota, the conntrack timeouts (seconds) and how
    /// endpoints get their program.
    Configure {
        /// Source ports for masqueraded flows, FIRST-LAST, outside net.ipv4.ip_local_port_range.
        #[arg(long)]
        snat_ports: Option<String>,
        /// SNAT ports one endpoint may hold at once (connections to the outside and hairpins),
        /// 1 to 65535; past it its new connections are dropped (`snat-quota`).
        #[arg(long)]
        snat_quota: Option<u32>,
        #[arg(long)]
        tcp_established_timeout: Option<u32>,
        /// TCP connections being opened or closed.
        #[arg(long)]
        tcp_transient_timeout: Option<u32>,
        #[arg(long)]
        udp_timeout: Option<u32>,
        #[arg(long)]
        icmp_timeout: Option<u32>,
        /// tc-block (default: the network's shared tc block, no RCU grace period per attach) or
        /// tcx (a TCX link per endpoint); for endpoints attached from now on, and for the
        /// others at the next `netpath restore`.
        #[arg(long, value_name = "HOOK")]
        endpoint_hook: Option<String>,
    },
}
