//! `datapath reload` without a gap: load this build's object next to the running datapath,
//! keep every map whose shape did not change (so conntrack, counters and settings survive an
//! upgrade), switch each pinned link to the new program with `BPF_LINK_UPDATE` and each
//! network's tc block filter with a replace (a packet sees either the old program or the new,
//! never none), then retire the old pins.
//!
//! Tail-call tables and maps of maps are never kept: they hold the old build's objects.
//!
//! Until the links are switched nothing the running datapath uses has changed: a failure
//! before that (or a kill at any instant) leaves it running, and the staging directory is
//! removed by the next reload. A failure while switching puts back the links and blocks
//! switched so far (`Switched`).
use std::{
    os::fd::OwnedFd,
    path::{Path, PathBuf},
};

use netpath_common::names;
use serde::Serialize;

use crate::{
    error::Context, error::Error, error::Result, fault, kernel::bpflink, kernel::bpflink::MapShape, kernel::datapath,
    kernel::datapath::OBJECT, kernel::datapath::PROBE_PREFIX, kernel::datapath::RETIRED_PREFIX,
    kernel::datapath::STAGING_PREFIX, kernel::link::HOST_VETH_PREFIX, kernel::tcblock,
};

#[derive(Debug, Default, Serialize)]
pub struct ReloadReport {
    /// Maps taken over with their contents.
    pub kept_maps: Vec<String>,
    /// Maps made anew (their shape changed, or there was no datapath); the database refills
    /// the ones it owns.
    pub new_maps: Vec<String>,
    /// Links (and tc blocks, as `block-<index>`) switched to the new programs.
    pub updated_links: Vec<String>,
}

/// The program a pinned link (`links/<name>`) runs; see `datapath`'s layout.
fn program_for(link: &str) -> &str {
    if let Some(program) = link.strip_prefix("cgroup-") {
        program
    } else if link.starts_with("xdp-") {
        names::XDP_UPLINK
    } else if link.starts_with(HOST_VETH_PREFIX) {
        names::FROM_CONTAINER
    } else {
        names::FROM_UPLINK
    }
}

fn is_dir_named(entry: &std::fs::DirEntry, pred: impl Fn(&str) -> bool) -> bool {
    entry.file_type().is_ok_and(|t| t.is_dir()) && pred(&entry.file_name().to_string_lossy())
}

/// What a killed reload left under `pin_root`: its staging directory, or the old datapath it
/// had moved away. Only the holder of the global lock may call this: a reload holds it.
pub fn leftovers(pin_root: &Path) -> Result<Vec<PathBuf>> {
    Ok(datapath::read_dir(pin_root)?
        .iter()
        .filter(|e| is_dir_named(e, |n| n.starts_with(STAGING_PREFIX) || n.starts_with(RETIRED_PREFIX)))
        .map(|e| e.path())
        .collect())
}

/// Replaces the pinned datapath under `pin_root` with this build's; see the module comment.
/// `networks`: the ids of the networks, whose tc blocks switch programs too.
pub fn reload(pin_root: &Path, lock_dir: &Path, networks: &[u32]) -> Result<ReloadReport> {
    let _lock = datapath::lock(lock_dir)?;
    datapath::ensure_bpffs(pin_root)?;
    for leftover in leftovers(pin_root)? {
        std::fs::remove_dir_all(&leftover).context(|| format!("cannot remove {}", leftover.display()))?;
    }
    let entries = datapath::read_dir(pin_root)?;
    let mine = datapath::version();
    let versions: Vec<PathBuf> = entries
        .iter()
        .filter(|e| {
            is_dir_named(e, |n| {
                !n.starts_with(PROBE_PREFIX) && !n.starts_with(STAGING_PREFIX) && !n.starts_with(RETIRED_PREFIX)
            })
        })
        .map(|e| e.path())
        .collect();
    // The datapath that runs: this build's if it is there, else another build's.
    let current = versions.iter().find(|v| v.ends_with(&mine)).or(versions.first()).cloned();
    let staging = pin_root.join(format!("{STAGING_PREFIX}{}", std::process::id()));
    let mut report = ReloadReport::default();

    let staged = stage(&staging, current.as_deref(), &mut report);
    fault::step("reload:staged");
    let mut switched = Switched::default();
    let result = staged
        .and_then(|()| switch_links(&staging, current.as_deref(), &mut switched, &mut report))
        .and_then(|()| switch_blocks(&staging, current.as_deref(), networks, &mut switched, &mut report));
    if let Err(e) = result {
        switched.undo();
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    fault::step("reload:switched");

    // The new datapath takes this build's name; the old ones go, and with them every map
    // and program the new one did not take over (its links are pinned in the new one too).
    let mut retired = versions.clone();
    let target = pin_root.join(&mine);
    if target.exists() {
        let away = pin_root.join(format!("{RETIRED_PREFIX}{}", std::process::id()));
        std::fs::rename(&target, &away).context(|| format!("cannot move {} away", target.display()))?;
        retired.retain(|v| *v != target);
        retired.push(away);
    }
    std::fs::rename(&staging, &target)
        .context(|| format!("cannot rename {} to {}", staging.display(), target.display()))?;
    for old in retired {
        std::fs::remove_dir_all(&old).context(|| format!("cannot remove {}", old.display()))?;
    }
    Ok(report)
}

/// Pins the maps worth keeping into `staging`, then loads the object there: the loader
/// reuses what is pinned and makes the rest.
fn stage(staging: &Path, current: Option<&Path>, report: &mut ReloadReport) -> Result<()> {
    std::fs::create_dir_all(staging).context(|| format!("cannot create {}", staging.display()))?;
    let object = aya_obj::Object::parse(OBJECT).map_err(|e| Error::system("cannot parse netpath's eBPF object", e))?;
    // Only the pinned maps are the datapath's; the unpinned ones (data sections such as
    // `.rodata`, the bench's reference program's map) live and die with whoever loads them.
    let mut maps: Vec<(&String, &aya_obj::Map)> =
        object.maps.iter().filter(|(_, def)| def.pinning() == aya_obj::maps::PinningType::ByName).collect();
    maps.sort_by_key(|(name, _)| name.as_str());
    for (name, def) in maps {
        let wanted = MapShape {
            map_type: def.map_type(),
            key_size: def.key_size(),
            value_size: def.value_size(),
            max_entries: def.max_entries(),
            flags: def.map_flags() | kernel_added_flags(def.map_type()),
        };
        let old = current.map(|c| c.join(name)).filter(|p| p.exists()).map(|p| bpflink::open_pinned(&p)).transpose()?;
        match old {
            Some(fd) if !holds_objects(wanted.map_type) && bpflink::map_shape(&fd)? == wanted => {
                bpflink::pin(&fd, &staging.join(name))?;
                report.kept_maps.push(name.clone());
            }
            _ => report.new_maps.push(name.clone()),
        }
    }
    datapath::load(staging)
}

/// Flags the kernel adds to a map of this type when it creates it: devmaps are read-only to
/// programs (`BPF_F_RDONLY_PROG`), whatever the object asked for.
fn kernel_added_flags(map_type: u32) -> u32 {
    const DEVMAP: u32 = 14;
    const DEVMAP_HASH: u32 = 25;
    const BPF_F_RDONLY_PROG: u32 = 1 << 7;
    if matches!(map_type, DEVMAP | DEVMAP_HASH) { BPF_F_RDONLY_PROG } else { 0 }
}

/// Maps whose values are programs or maps (tail-call tables, maps of maps) refer to objects
/// of the build that filled them: the new build's must start from its own.
fn holds_objects(map_type: u32) -> bool {
    const PROG_ARRAY: u32 = 3;
    const ARRAY_OF_MAPS: u32 = 12;
    const HASH_OF_MAPS: u32 = 13;
    matches!(map_type, PROG_ARRAY | ARRAY_OF_MAPS | HASH_OF_MAPS)
}

/// What the switching steps changed, with what ran before: all of it is switched back when a
/// later step fails, so the running datapath is left as it was.
#[derive(Default)]
struct Switched {
    /// Each link, with the program it ran.
    links: Vec<(OwnedFd, OwnedFd)>,
    /// The blocks switched, and the `from_container` they ran (a datapath of another build may
    /// pin none).
    blocks: Vec<u32>,
    block_program: Option<OwnedFd>,
}

impl Switched {
    fn undo(&self) {
        for (link, old) in &self.links {
            let _ = bpflink::update_link(link, old);
        }
        if let Some(old) = &self.block_program {
            for &block in &self.blocks {
                let _ = tcblock::set_filter(block, old, names::FROM_CONTAINER, true);
            }
        }
    }
}

/// Switches the filter of every network's tc block that has one to the staged
/// `from_container`.
fn switch_blocks(
    staging: &Path,
    current: Option<&Path>,
    networks: &[u32],
    switched: &mut Switched,
    report: &mut ReloadReport,
) -> Result<()> {
    let Some(current) = current else {
        return Ok(());
    };
    switched.block_program = bpflink::open_pinned(&current.join(names::FROM_CONTAINER)).ok();
    let new = bpflink::open_pinned(&staging.join(names::FROM_CONTAINER))?;
    for &network in networks {
        let switch = || {
            let block = tcblock::block_of(network)?;
            if tcblock::filter_program(block)?.is_none() {
                return Ok(None);
            }
            tcblock::set_filter(block, &new, names::FROM_CONTAINER, true).map(|()| Some(block))
        };
        match switch() {
            Ok(Some(block)) => {
                switched.blocks.push(block);
                report.updated_links.push(format!("block-{block:#x}"));
            }
            Ok(None) => {}
            Err(e) => return Err(Error::system(format!("cannot switch the tc block of network {network}"), e)),
        }
    }
    Ok(())
}

/// Switches every live link of `current` to the staged program and pins it in `staging`.
fn switch_links(
    staging: &Path,
    current: Option<&Path>,
    switched: &mut Switched,
    report: &mut ReloadReport,
) -> Result<()> {
    let Some(current) = current else {
        return Ok(());
    };
    let links_dir = staging.join("links");
    std::fs::create_dir_all(&links_dir).context(|| format!("cannot create {}", links_dir.display()))?;
    for entry in datapath::read_dir(&current.join("links"))? {
        let name = entry.file_name().to_string_lossy().into_owned();
        let program = program_for(&name);
        // A TCX or XDP link whose interface is gone serves nothing: leave it to be retired.
        if !name.starts_with("cgroup-") && bpflink::pinned_ifindex(&entry.path())? == Some(0) {
            continue;
        }
        let link = bpflink::open_pinned(&entry.path())?;
        let old = bpflink::open_pinned(&current.join(program))?;
        let new = bpflink::open_pinned(&staging.join(program))?;
        bpflink::update_link(&link, &new).context(|| format!("cannot switch link {name} to the new {program}"))?;
        let pinned = bpflink::pin(&link, &links_dir.join(&name));
        switched.links.push((link, old));
        pinned?;
        report.updated_links.push(name);
    }
    Ok(())
}
