//! Datapath 7: the yardstick of an eBPF container hop. Two containers, each with a veth to the
//! host namespace, and on both host ends (TCX ingress) netpath-ebpf's reference program
//! (`netpath-ebpf/src/reference.rs`): one hash lookup of the other veth and
//! `bpf_redirect_peer`, nothing else. Container to container only. Its ns per packet is what
//! `from_container`'s is measured against, on the same traffic in the same run.
//!
//! The program comes from the same object as netpath's. Loading the object creates all its
//! maps, and netpath's are declared pinned: they are pinned in a bpffs of this datapath's own
//! under the run directory, unmounted (and so freed) when it goes down.
use std::{
    ffi::CString,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    thread,
};

use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::HashMap,
    programs::{SchedClassifier, TcAttachType},
};

use super::{Datapath, Route, Routes, Target, Unavailable, netpath::unmount};
use crate::bench::{
    Ctx,
    cost::{ProgramRuns, ProgramStats},
    install,
    netns::{Netns, enter},
    process::{SETUP_LIMIT, stdout_within},
    topology::Topology,
};

/// The program's and its map's names in the object (`reference.rs`).
const PROGRAM: &str = "redirect_peer_ref";
const PEERS: &str = "REFERENCE_PEERS";
const SUBNET_PREFIX: u8 = 24;
/// Host-side veth and address of each container.
const CONTAINERS: [(&str, &str, Ipv4Addr); 2] =
    [("c1", "rc1", Ipv4Addr::new(10, 92, 0, 2)), ("c2", "rc2", Ipv4Addr::new(10, 92, 0, 3))];

#[derive(Default)]
pub struct RedirectRef {
    topo: Option<Topology>,
    routes: Routes,
    bpffs: Option<PathBuf>,
    /// The loaded object; dropping it detaches and unloads the program.
    ebpf: Option<Ebpf>,
}

impl Datapath for RedirectRef {
    fn name(&self) -> &'static str {
        "redirect-ref"
    }

    fn description(&self) -> String {
        format!(
            "the yardstick of an eBPF hop: veths from two containers to the host namespace, and on both host ends (TCX ingress) netpath-ebpf's {PROGRAM}, which looks the other veth up in one hash map and calls bpf_redirect_peer, nothing else; container → container only"
        )
    }

    fn up(&mut self, ctx: &Ctx) -> Result<()> {
        let topo = self.topo.insert(Topology::new(ctx, self.name())?);
        let host = topo.host.clone();
        let mut namespaces = Vec::new();
        for (role, host_if, ip) in CONTAINERS {
            let ns = topo.container(role)?;
            host.veth(host_if, &ns, "eth0")?;
            ns.address("eth0", &format!("{ip}/{SUBNET_PREFIX}"))?;
            namespaces.push(ns);
        }
        let bpffs = self.bpffs.insert(topo.dir(ctx, "bpffs")?);
        stdout_within(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&*bpffs), SETUP_LIMIT)
            .with_context(|| format!("mounting a bpffs at {}", bpffs.display()))?;
        let object = install::target_dir().join("bpfel-unknown-none/release/netpath-ebpf");
        self.ebpf = Some(load_between(&object, bpffs, &host, [CONTAINERS[0].1, CONTAINERS[1].1])?);
        topo.serve(ctx, &namespaces[1], "c2")?;
        self.routes.set(Route::C2c, Ok(Target::direct(&namespaces[0], CONTAINERS[1].2)));
        for route in [Route::Egress, Route::Ingress, Route::HostLocal] {
            self.routes.set(
                route,
                Err(Unavailable::NotApplicable("the reference program only redirects between two containers".into())),
            );
        }
        Ok(())
    }

    fn routes(&self) -> &Routes {
        &self.routes
    }

    fn down(&mut self, _ctx: &Ctx) {
        if let Some(topo) = &mut self.topo {
            topo.stop_servers();
        }
        self.ebpf = None;
        if let Some(bpffs) = self.bpffs.take() {
            unmount(&bpffs);
        }
        self.topo = None;
        self.routes = Routes::default();
    }

    fn c2c_program(&self) -> Option<&dyn ProgramStats> {
        self.ebpf.as_ref().map(|_| self as &dyn ProgramStats)
    }
}

impl ProgramStats for RedirectRef {
    fn runs(&self) -> Result<ProgramRuns> {
        let ebpf = self.ebpf.as_ref().context("redirect-ref is not up")?;
        let program = ebpf.program(PROGRAM).with_context(|| format!("the object has no {PROGRAM}"))?;
        Ok(program.info().with_context(|| format!("reading {PROGRAM}'s run-time statistics"))?.into())
    }
}

/// Loads the reference program, points each of the two host veths at the other, and attaches
/// it to both. Interface names mean the host namespace's, so this happens on a thread of its
/// own that enters it; the loaded object (and with it the attachments) comes back.
fn load_between(object: &Path, bpffs: &Path, host: &Netns, veths: [&str; 2]) -> Result<Ebpf> {
    let (object, bpffs, netns) = (object.to_path_buf(), bpffs.to_path_buf(), host.path().to_path_buf());
    let veths = veths.map(String::from);
    thread::spawn(move || {
        enter(&netns)?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&bpffs)
            .load_file(&object)
            .with_context(|| format!("loading {}", object.display()))?;
        let [a, b] = [ifindex(&veths[0])?, ifindex(&veths[1])?];
        let map = ebpf.map_mut(PEERS).with_context(|| format!("the object has no {PEERS} map"))?;
        let mut peers: HashMap<_, u32, u32> =
            HashMap::try_from(map).with_context(|| format!("{PEERS} is not a hash map of u32 to u32"))?;
        for (from, to) in [(a, b), (b, a)] {
            peers.insert(from, to, 0).with_context(|| format!("filling {PEERS}"))?;
        }
        let program: &mut SchedClassifier = ebpf
            .program_mut(PROGRAM)
            .with_context(|| format!("the object has no {PROGRAM}"))?
            .try_into()
            .with_context(|| format!("{PROGRAM} is not a TC classifier"))?;
        program.load().with_context(|| format!("the kernel rejected {PROGRAM}"))?;
        for veth in &veths {
            program
                .attach(veth, TcAttachType::Ingress)
                .with_context(|| format!("attaching {PROGRAM} to {veth} (TCX ingress)"))?;
        }
        Ok(ebpf)
    })
    .join()
    .map_err(|_| anyhow!("the thread loading {PROGRAM} panicked"))?
}

/// The index of an interface of the calling thread's namespace.
fn ifindex(name: &str) -> Result<u32> {
    let c_name = CString::new(name)?;
    // SAFETY: a NUL-terminated name that outlives the call.
    match unsafe { libc::if_nametoindex(c_name.as_ptr()) } {
        0 => bail!("no interface {name}: {}", std::io::Error::last_os_error()),
        index => Ok(index),
    }
}
