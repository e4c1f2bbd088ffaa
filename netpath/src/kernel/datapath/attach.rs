//! Programs attached to devices and cgroups: an endpoint's host veth bound to its network's tc
//! block (see `tcblock`), and through pinned links the uplink's TCX and XDP programs and the
//! socket programs.
use std::{fs::File, net::Ipv4Addr, path::PathBuf};

use aya::{
    maps::PerCpuValues,
    programs::{
        CgroupAttachMode, CgroupSockAddr, Xdp,
        cgroup_sock_addr::CgroupSockAddrAttachType,
        links::{FdLink, PinnedLink},
        xdp::XdpMode,
    },
};
use aya_obj::programs::XdpAttachType;
use netpath_common::{EndpointCounters, EndpointInfo, VethInfo, names};

use crate::{
    error, error::Context, error::Error, error::Result, kernel::bpflink, kernel::tcblock, types::hook::EndpointHook,
};

/// The eBPF object built by `cargo xtask build-ebpf`, embedded at compile time.
use super::{
    Datapath, XdpAttach,
    keys::map_key,
    maps::{ignore_missing, possible_cpus},
    pins::{cgroup2_root, lock, read_dir},
};

impl Datapath {
    /// Puts the endpoint's host veth behind `from_container` (through `hook`) and publishes
    /// the endpoint in the maps; an `xdp_target` also in `XDP_TARGETS`.
    pub fn attach_endpoint(
        &mut self,
        host_veth: &str,
        ip: Ipv4Addr,
        info: &EndpointInfo,
        xdp_target: bool,
        hook: EndpointHook,
    ) -> Result<()> {
        let zero = PerCpuValues::try_from(vec![EndpointCounters::default(); possible_cpus()?])
            .context(|| "cannot size per-CPU counters")?;
        self.endpoint_counters
            .set(u32::from(info.slot), zero, 0)
            .context(|| format!("cannot reset counter slot {} for {host_veth}", info.slot))?;
        self.refresh_endpoint(host_veth, ip, info, xdp_target, hook)
    }

    /// Makes a wired endpoint's datapath side whole again without resetting its counters:
    /// its map entries, and its program through `hook` (the veth's binding to the network's
    /// block and the block's filter, or its TCX link) if gone or through the other hook.
    /// `attach_endpoint` ends here too: every entry an endpoint needs is written in this one
    /// place.
    pub fn refresh_endpoint(
        &mut self,
        host_veth: &str,
        ip: Ipv4Addr,
        info: &EndpointInfo,
        xdp_target: bool,
        hook: EndpointHook,
    ) -> Result<()> {
        self.endpoints.insert(map_key(ip), info, 0).context(|| format!("cannot write {ip} to the ENDPOINTS map"))?;
        let veth = VethInfo { addr: map_key(ip), network_id: info.network_id, mac: info.mac, slot: info.slot };
        self.veths
            .insert(info.host_ifindex, veth, 0)
            .context(|| format!("cannot write {host_veth} to the VETHS map"))?;
        // `xdp_uplink` passes traffic to endpoints outside `XDP_TARGETS` to `from_uplink`: only
        // a `redirect` network's are in it. Callers turn GRO on at their container's side first
        // (`link::enable_gro`): a veth takes frames redirected by XDP only with NAPI there. An
        // entry an older build wrote for every endpoint goes here.
        if xdp_target {
            self.xdp_targets
                .insert(info.host_ifindex, info.host_ifindex, None, 0)
                .map_err(|e| Error::system(format!("cannot write {host_veth} to the XDP_TARGETS map"), e))?;
        } else {
            ignore_missing(self.xdp_targets.remove(info.host_ifindex))
                .context(|| format!("cannot remove {host_veth} from XDP_TARGETS"))?;
        }
        match hook {
            EndpointHook::TcBlock => self.ensure_block(host_veth, info.host_ifindex, info.network_id),
            EndpointHook::Tcx => self.ensure_own_tcx(host_veth, info.host_ifindex),
        }
    }

    /// A TCX link of the veth's own; a block binding of the other hook goes once the link
    /// serves the veth (TCX runs first: no frame passes unchecked in between).
    fn ensure_own_tcx(&mut self, host_veth: &str, ifindex: u32) -> Result<()> {
        self.ensure_tcx(names::FROM_CONTAINER, host_veth, ifindex)?;
        tcblock::unbind(ifindex).map_err(|e| Error::system(format!("cannot unbind {host_veth} from its tc block"), e))
    }

    /// Binds the host veth's ingress to its network's block, then makes sure the block runs
    /// this build's `from_container`: the first endpoint of a network creates the block, and
    /// its filter is put there before the veth can carry a frame (it is still down). A TCX
    /// link an earlier build pinned for the veth goes last, once the block serves it.
    fn ensure_block(&mut self, host_veth: &str, ifindex: u32, network_id: u32) -> Result<()> {
        let block = tcblock::block_of(network_id).map_err(|e| Error::system("no tc block", e))?;
        tcblock::bind(ifindex, block)
            .map_err(|e| Error::system(format!("cannot bind {host_veth} to tc block {block:#x}"), e))?;
        self.ensure_filter(block)?;
        self.detach(host_veth)
    }

    /// Puts this build's `from_container` on `block` unless it is there already; another
    /// build's is swapped in place. Two attaches may race to add it: the loser finds it there.
    pub(crate) fn ensure_filter(&self, block: u32) -> Result<()> {
        let prog = bpflink::open_pinned(&self.dir.join(names::FROM_CONTAINER))?;
        let wanted = bpflink::prog_id(&prog)?;
        let failed = |e| Error::system(format!("cannot put from_container on tc block {block:#x}"), e);
        let current = tcblock::filter_program(block).map_err(failed)?;
        if current == Some(wanted) {
            return Ok(());
        }
        match tcblock::set_filter(block, &prog, names::FROM_CONTAINER, current.is_some()) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => match tcblock::filter_program(block).map_err(failed)? {
                Some(id) if id == wanted => Ok(()),
                _ => tcblock::set_filter(block, &prog, names::FROM_CONTAINER, true).map_err(failed),
            },
            other => other.map_err(failed),
        }
    }

    /// Attaches `program` to `ifname` unless a pinned link already serves that very
    /// interface; a defunct link (its interface was deleted and made again) is replaced.
    pub(super) fn ensure_tcx(&mut self, program: &str, ifname: &str, ifindex: u32) -> Result<()> {
        match bpflink::pinned_ifindex(&self.link_pin(ifname))? {
            Some(current) if current == ifindex => return Ok(()),
            Some(_) => self.detach(ifname)?,
            None => {}
        }
        self.attach(program, ifname, ifindex)
    }

    /// Undoes `attach_endpoint`; parts that are already gone are fine.
    pub fn detach_endpoint(&mut self, host_veth: &str, ip: Ipv4Addr, host_ifindex: Option<u32>) -> Result<()> {
        self.detach(host_veth)?;
        // A veth that died with its namespace has no ifindex left to ask for: the ENDPOINTS
        // entry remembers it, so its VETHS entry still goes. It goes before the entry that
        // remembers its ifindex, so a process killed in between leaves nothing the next
        // teardown cannot find.
        let host_ifindex = host_ifindex.or_else(|| self.endpoints.get(&map_key(ip), 0).ok().map(|i| i.host_ifindex));
        if let Some(ifindex) = host_ifindex {
            ignore_missing(self.veths.remove(&ifindex)).context(|| format!("cannot remove {host_veth} from VETHS"))?;
            ignore_missing(self.xdp_targets.remove(ifindex))
                .context(|| format!("cannot remove {host_veth} from XDP_TARGETS"))?;
        }
        ignore_missing(self.endpoints.remove(&map_key(ip))).context(|| format!("cannot remove {ip} from ENDPOINTS"))
    }

    /// Attaches `from_uplink` to the uplink unless it is there already.
    pub fn attach_uplink(&mut self, uplink: &str) -> Result<()> {
        let _lock = lock(&self.lock_dir)?;
        self.ensure_tcx(names::FROM_UPLINK, uplink, ifindex_of(uplink)?)
    }

    pub fn detach_uplink(&mut self, uplink: &str) -> Result<()> {
        self.detach(uplink)
    }

    /// Attaches `xdp_uplink` to the uplink unless it is there already: in native (driver) mode,
    /// or in generic (skb) mode when the device has no XDP of its own. Says which mode it took;
    /// a link already there is left as it is (`Kept`).
    pub fn attach_xdp(&mut self, uplink: &str) -> Result<XdpAttach> {
        let _lock = lock(&self.lock_dir)?;
        let pin = self.link_pin(&format!("xdp-{uplink}"));
        match bpflink::pinned_ifindex(&pin)? {
            Some(current) if current == ifindex_of(uplink)? => return Ok(XdpAttach::Kept),
            Some(_) => self.detach(&format!("xdp-{uplink}"))?,
            None => {}
        }
        let mut prog = Xdp::from_pin(self.dir.join(names::XDP_UPLINK), XdpAttachType::Interface)
            .context(|| "cannot open the pinned xdp_uplink program")?;
        let (link, attached) = match prog.attach(uplink, XdpMode::Driver) {
            Ok(link) => (link, XdpAttach::Native),
            Err(native) => {
                let link =
                    prog.attach(uplink, XdpMode::Skb).context(|| format!("cannot attach xdp_uplink to {uplink}"))?;
                (link, XdpAttach::Generic(error::chain(&native)))
            }
        };
        let link: FdLink =
            prog.take_link(link).context(|| "cannot take the XDP link")?.try_into().context(|| "XDP link")?;
        std::fs::create_dir_all(self.dir.join("links")).context(|| "cannot create the links directory")?;
        link.pin(&pin).context(|| format!("cannot pin the XDP link of {uplink}"))?;
        Ok(attached)
    }

    pub fn detach_xdp(&mut self, uplink: &str) -> Result<()> {
        self.detach(&format!("xdp-{uplink}"))
    }

    /// Attaches the socket programs to the cgroup v2 root unless they are there already.
    pub fn attach_sock_programs(&mut self) -> Result<()> {
        // Concurrent attaches that publish ports must not both attach.
        let _lock = lock(&self.lock_dir)?;
        let root = cgroup2_root()?;
        for name in names::SOCK_PROGRAMS {
            let pin = self.link_pin(&format!("cgroup-{name}"));
            if pin.exists() {
                continue;
            }
            let cgroup = File::open(&root).context(|| format!("cannot open cgroup {}", root.display()))?;
            let mut prog = CgroupSockAddr::from_pin(self.dir.join(name), sock_attach_type(name))
                .context(|| format!("cannot open the pinned {name} program"))?;
            // A link attachment: the kernel wants no mode flags, and links always coexist with
            // other programs on the same cgroup.
            let link = prog
                .attach(&cgroup, CgroupAttachMode::Single)
                .context(|| format!("cannot attach {name} to cgroup {}", root.display()))?;
            let link: FdLink =
                prog.take_link(link).context(|| "cannot take the cgroup link")?.try_into().context(|| "cgroup link")?;
            std::fs::create_dir_all(self.dir.join("links")).context(|| "cannot create the links directory")?;
            link.pin(&pin).context(|| format!("cannot pin the cgroup link of {name}"))?;
        }
        Ok(())
    }

    pub fn detach_sock_programs(&mut self) -> Result<()> {
        names::SOCK_PROGRAMS.iter().try_for_each(|name| self.detach(&format!("cgroup-{name}")))
    }

    pub(super) fn link_pin(&self, ifname: &str) -> PathBuf {
        self.dir.join("links").join(ifname)
    }

    /// Attaches a pinned program to an interface's TCX ingress and pins the link, so it stays
    /// attached after this process exits. Through the raw syscall: aya would first probe the
    /// kernel's features with a dozen test loads, on every attach.
    pub(super) fn attach(&mut self, program: &str, ifname: &str, ifindex: u32) -> Result<()> {
        let prog = bpflink::open_pinned(&self.dir.join(program))?;
        let link = bpflink::attach_tcx_ingress(&prog, ifindex)
            .map_err(|e| Error::system(format!("cannot attach {program} to {ifname} (TCX ingress)"), e))?;
        let links = self.dir.join("links");
        std::fs::create_dir_all(&links).context(|| format!("cannot create {}", links.display()))?;
        bpflink::pin(&link, &self.link_pin(ifname))
    }

    /// Unpinning the link detaches the program once no process holds the link open.
    pub(super) fn detach(&mut self, ifname: &str) -> Result<()> {
        if let Ok(link) = PinnedLink::from_pin(self.link_pin(ifname)) {
            link.unpin().context(|| format!("cannot unpin the TCX link of {ifname}"))?;
        }
        Ok(())
    }

    /// The names of the pinned links (`links/<name>`), for `gc` to match with their owners.
    pub fn link_pins(&self) -> Result<Vec<String>> {
        Ok(read_dir(&self.dir.join("links"))?
            .into_iter()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect())
    }

    /// Unpins (and so detaches) the link pinned as `links/<name>`.
    pub fn unpin_link(&mut self, name: &str) -> Result<()> {
        self.detach(name)
    }
}

fn sock_attach_type(program: &str) -> CgroupSockAddrAttachType {
    match program {
        names::CONNECT4 => CgroupSockAddrAttachType::Connect4,
        names::SENDMSG4 => CgroupSockAddrAttachType::UDPSendMsg4,
        names::RECVMSG4 => CgroupSockAddrAttachType::UDPRecvMsg4,
        _ => CgroupSockAddrAttachType::GetPeerName4,
    }
}

/// The index of an interface of the current namespace.
fn ifindex_of(ifname: &str) -> Result<u32> {
    nix::net::if_::if_nametoindex(ifname).context(|| format!("interface '{ifname}' does not exist"))
}
