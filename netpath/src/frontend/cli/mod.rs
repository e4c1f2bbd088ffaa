//! The `netpath` command line: each command parsed (`args`), run on the controller, and what
//! it returns printed (`render`, or JSON).
use std::{borrow::Cow, time::Duration};

use crate::{
    core::{AttachSpec, Controller, DetachSpec, NetworkSpec, Paths, Target, Xdp, session, settings::Changes},
    error::{Error, Field, Result},
    frontend::{cni, oci},
    types::{
        creator::Creator,
        mac,
        name::{Hostname, Naming},
        net, port,
    },
    view::{conntrack, monitor, output::table, stats},
};

mod args;
mod resolv_conf;

use crate::view::render::*;
pub use args::*;

/// How the command line names each part of a request: by its flag.
pub fn flag(field: Field) -> Cow<'static, str> {
    Cow::Borrowed(match field {
        Field::Subnet => "--subnet",
        Field::Gateway => "--gateway",
        Field::Bridge => "--bridge",
        Field::Mtu => "--mtu",
        Field::Uplink => "--uplink",
        Field::Xdp => "--xdp",
        Field::EndpointId => "--id",
        Field::Ip => "--ip",
        Field::Mac => "--mac",
        Field::Ifname => "--ifname",
        Field::Publish => "-p",
        Field::Force => "--force",
        Field::Name => "--name",
        Field::Alias => "--alias",
    })
}

/// Runs the parsed command line on the controller, in the host namespace.
pub fn run(cli: Cli) -> Result<()> {
    if let Command::Cni(CniCmd::Install { dirs }) = &cli.command {
        for path in cni::install(dirs)? {
            println!("installed {}", path.display());
        }
        return Ok(());
    }
    session::host_runtime(cli.host_netns.as_deref())?.block_on(execute(cli))
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
                ip: args.ip.as_deref().map(|ip| net::parse_ip(Field::Ip, ip)).transpose()?,
                mac: args.mac.as_deref().map(mac::parse_mac).transpose()?,
                ifname: args.ifname,
                ports: port::parse_publish_all(&args.publish)?,
                name: args
                    .name
                    .as_deref()
                    .map(|name| Hostname::parse(Field::Name, name).map(Naming::Chosen))
                    .transpose()?,
                aliases: args
                    .aliases
                    .iter()
                    .map(|alias| Hostname::parse(Field::Alias, alias))
                    .collect::<Result<_>>()?,
                creator: Creator::Cli,
            };
            if let Some(path) = &args.resolv_conf {
                resolv_conf::check(path)?;
            }
            let ep = ctl.attach(&spec).await?;
            if let Some(path) = &args.resolv_conf {
                if let Err(e) = resolv_conf::write(path, ep.gateway) {
                    ctl.detach(&DetachSpec::Id(ep.id.clone())).await?;
                    return Err(e);
                }
            }
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
            let checks = ctl.status().await?;
            print(format, &checks, |checks| {
                let rows = checks
                    .iter()
                    .map(|c| {
                        let status = match (c.ok, c.warning) {
                            (false, _) => "FAIL",
                            (true, true) => "WARN",
                            (true, false) => "ok",
                        };
                        vec![c.name.to_string(), status.to_string(), c.detail.clone()]
                    })
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
        Command::Daemon { docker_socket, gc_interval, metrics, no_dns, dns_upstream } => {
            let opts = crate::frontend::daemon::DaemonOptions {
                docker_socket,
                gc_interval: Duration::from_secs(gc_interval),
                metrics: metrics.as_deref().map(metrics_address).transpose()?,
                dns: (!no_dns).then(|| upstreams(&dns_upstream)).transpose()?,
            };
            crate::frontend::daemon::run(ctl, opts).await
        }
        Command::Conntrack(cmd) => conntrack_cmd(&mut ctl, cmd),
        Command::Port(PortCmd::Ls { format }) => {
            let ports: Vec<PortView> = ctl
                .ports()?
                .into_iter()
                .map(|(ep, port)| PortView { endpoint: ep.id, network: ep.network, port, container_ip: ep.ip })
                .collect();
            print(format, ports.as_slice(), ports_text)
        }
    }
}

/// `--metrics`' address: an IP address and a port, no host name (a daemon that resolved one
/// could listen somewhere else than meant).
fn metrics_address(text: &str) -> Result<std::net::SocketAddr> {
    text.parse()
        .map_err(|_| Error::invalid(format!("--metrics '{text}': expected ADDRESS:PORT such as 127.0.0.1:9464")))
}

/// `--dns-upstream`'s addresses, port 53 unless given; `None` (the host's) when there are none.
fn upstreams(given: &[String]) -> Result<Option<Vec<std::net::SocketAddr>>> {
    use crate::frontend::daemon::dns::MAX_UPSTREAMS;
    if given.len() > MAX_UPSTREAMS {
        return Err(Error::invalid(format!(
            "--dns-upstream given {} times; at most {MAX_UPSTREAMS} upstreams are asked",
            given.len()
        )));
    }
    let parse = |text: &String| {
        text.parse::<std::net::SocketAddr>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
            .map_err(|_| {
                Error::invalid(format!("--dns-upstream '{text}': expected an IP address, with :PORT if not 53"))
            })
    };
    let upstreams: Vec<_> = given.iter().map(parse).collect::<Result<_>>()?;
    Ok((!upstreams.is_empty()).then_some(upstreams))
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
            snat_quota,
            tcp_established_timeout,
            tcp_transient_timeout,
            udp_timeout,
            icmp_timeout,
            endpoint_hook,
        } => {
            let changes = Changes {
                snat_ports,
                snat_quota,
                tcp_established_timeout,
                tcp_transient_timeout,
                udp_timeout,
                icmp_timeout,
                endpoint_hook,
            };
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
            println!("{} ended connection(s) removed", conntrack::gc(ctl)?);
            Ok(())
        }
    }
}

/// `--xdp [MODE]`: absent is off; clap fills in `filter` when the mode is left out.
fn xdp_mode(arg: Option<&str>) -> Result<Xdp> {
    match arg {
        None => Ok(Xdp::Off),
        Some(name) => Xdp::from_name(name)
            .ok_or_else(|| Error::invalid(format!("invalid --xdp '{name}'; pass --xdp (filter) or --xdp redirect"))),
    }
}

async fn network(ctl: &mut Controller, cmd: NetworkCmd) -> Result<()> {
    match cmd {
        NetworkCmd::Create(a) => {
            let spec = NetworkSpec {
                name: a.name,
                subnet: a.subnet.as_deref().map(str::parse).transpose()?,
                gateway: a.gateway.as_deref().map(|g| net::parse_ip(Field::Gateway, g)).transpose()?,
                bridge: a.bridge,
                mtu: a.mtu,
                internal: a.internal,
                no_masquerade: a.no_masquerade,
                uplink: a.uplink,
                xdp: xdp_mode(a.xdp.as_deref())?,
                external_id: None,
            };
            let net = ctl.network_create(&spec).await?;
            print(a.format, &net, |n| {
                format!("network {} created: bridge {}, subnet {}, gateway {}", n.name, n.bridge, n.subnet, n.gateway)
            })
        }
        NetworkCmd::Ls { format } => {
            let nets = ctl.networks()?;
            let counts = nets.iter().map(|n| Ok(ctl.network_endpoints(n)?.len())).collect::<Result<Vec<_>>>()?;
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
            let network = ctl.network(&name)?;
            let endpoints = ctl.network_endpoints(&network)?;
            let xdp_mode = ctl.xdp_mode(&network).await?;
            let view = NetworkView { network, xdp_mode, endpoints };
            print(format, &view, |v| {
                let xdp = v.xdp_mode.map(|m| format!("\nxdp       {} ({m})", v.network.xdp)).unwrap_or_default();
                format!("{}{xdp}\n\n{}", network_text(&v.network), endpoints_table(&v.endpoints))
            })
        }
        NetworkCmd::Rm { name, force } => {
            ctl.network_rm(&name, force).await?;
            println!("network {name} removed");
            Ok(())
        }
    }
}
