//! The container engine's part of an attach through a Docker network driver, done as dockerd
//! does it once `Join` has answered: in-process netlink, no process started. The interface the
//! driver made in the host namespace moves into the sandbox, is renamed, gets its address,
//! comes up, and the default route goes through the gateway.
use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr},
    os::fd::{AsFd, AsRawFd, BorrowedFd},
};

use anyhow::{Context, Result, anyhow, bail};
use futures::TryStreamExt;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use super::netns::Netns;

/// What the driver handed for one endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handed {
    /// The interface `Join` named, still in the host namespace.
    pub ifname: String,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
}

impl Handed {
    /// From the driver's words: `cidr` as IPAM gave it (`10.202.0.5/16`), the gateway as
    /// `Join` gave it (with or without a prefix).
    pub fn parse(ifname: &str, cidr: &str, gateway: &str) -> Result<Self> {
        let (address, prefix) = cidr.split_once('/').with_context(|| format!("{cidr:?} has no prefix"))?;
        let gateway = gateway.split_once('/').map_or(gateway, |(ip, _)| ip);
        Ok(Self {
            ifname: ifname.into(),
            address: address.parse().with_context(|| format!("{cidr:?} is not an IPv4 address"))?,
            prefix: prefix.parse().ok().filter(|p| *p <= 32).with_context(|| format!("{cidr:?}: bad prefix"))?,
            gateway: gateway.parse().with_context(|| format!("gateway {gateway:?} is not an IPv4 address"))?,
        })
    }
}

/// Moves `handed` from `host` into `sandbox` as `name`, addresses it, brings it up and routes
/// through its gateway.
pub fn join(host: &Netns, sandbox: &Netns, handed: &Handed, name: &str) -> Result<()> {
    // A thread of its own: it enters both namespaces to open its sockets, and then ends.
    std::thread::scope(|scope| scope.spawn(|| join_here(host, sandbox, handed, name)).join())
        .unwrap_or_else(|_| bail!("the netlink thread panicked"))
        .with_context(|| format!("moving {} into {} as {name}", handed.ifname, sandbox.path().display()))
}

fn join_here(host: &Netns, sandbox: &Netns, handed: &Handed, name: &str) -> Result<()> {
    let open = |ns: &Netns| File::open(ns.path()).with_context(|| format!("opening {}", ns.path().display()));
    let (host_fd, sandbox_fd) = (open(host)?, open(sandbox)?);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    let _inside = runtime.enter();
    let in_host = connect_in(host_fd.as_fd())?;
    let in_sandbox = connect_in(sandbox_fd.as_fd())?;
    runtime.block_on(async {
        let index = index_of(&in_host, &handed.ifname).await?;
        in_host
            .link()
            .set(LinkUnspec::new_with_index(index).setns_by_fd(sandbox_fd.as_raw_fd()).build())
            .execute()
            .await?;
        let index = index_of(&in_sandbox, &handed.ifname).await?;
        in_sandbox.link().set(LinkUnspec::new_with_index(index).name(name).build()).execute().await?;
        in_sandbox.address().add(index, IpAddr::V4(handed.address), handed.prefix).execute().await?;
        in_sandbox.link().set(LinkUnspec::new_with_index(index).up().build()).execute().await?;
        let route = RouteMessageBuilder::<Ipv4Addr>::new().gateway(handed.gateway).build();
        in_sandbox.route().add(route).execute().await?;
        Ok(())
    })
}

/// A netlink connection in namespace `ns`, which the calling thread enters (and stays in);
/// its task runs on the runtime the thread has entered.
fn connect_in(ns: BorrowedFd) -> Result<Handle> {
    // SAFETY: setns(2) on a descriptor borrowed for the call; it changes only this thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(anyhow!(std::io::Error::last_os_error()).context("entering a network namespace"));
    }
    let (connection, handle, _) = rtnetlink::new_connection().context("opening a netlink socket")?;
    tokio::spawn(connection);
    Ok(handle)
}

async fn index_of(handle: &Handle, name: &str) -> Result<u32> {
    let link = handle.link().get().match_name(name.to_string()).execute().try_next().await?;
    Ok(link.with_context(|| format!("no interface {name}"))?.header.index)
}

#[cfg(test)]
mod tests {
    use super::Handed;

    #[test]
    fn the_drivers_words_are_parsed() {
        let handed = Handed::parse("vethb1", "10.202.0.5/16", "10.202.0.1").unwrap();
        assert_eq!(
            (handed.address.octets(), handed.prefix, handed.gateway.octets()),
            ([10, 202, 0, 5], 16, [10, 202, 0, 1])
        );
        assert_eq!(Handed::parse("vethb1", "10.202.0.5/16", "10.202.0.1/16").unwrap(), handed);
        for (cidr, gateway) in [
            ("10.202.0.5", "10.202.0.1"),
            ("10.202.0.5/33", "10.202.0.1"),
            ("fd00::5/64", "10.202.0.1"),
            ("10.202.0.5/16", ""),
        ] {
            assert!(Handed::parse("vethb1", cidr, gateway).is_err(), "{cidr} {gateway}");
        }
    }
}
