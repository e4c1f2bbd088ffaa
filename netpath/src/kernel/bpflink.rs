//! Pinned BPF objects through the raw `bpf()` syscall, for what aya 0.14 does not offer:
//! which interface a pinned link serves (its `LinkInfo` does not expose it; a TCX or XDP
//! link whose interface was deleted stays pinned but defunct, interface 0, and `ensure` must
//! replace it rather than trust the pin), the shape of a pinned map, pinning an object under
//! a second name, and `BPF_LINK_UPDATE` (swap a link's program without a gap); and a TCX
//! attachment without aya's feature probes, which cost more than the attachment itself.
use std::{ffi::CString, os::fd::FromRawFd, os::fd::OwnedFd, os::unix::ffi::OsStrExt, path::Path};

use crate::{error::Error, error::Result};

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

#[repr(C)]
#[derive(Default)]
struct ObjGet {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct InfoByFd {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// `struct bpf_link_info`: type, id, prog_id, then an 8-aligned union whose TCX, XDP and
/// netkit members all start with the interface index.
#[repr(C, align(8))]
struct LinkInfo {
    kind: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    ifindex: u32,
    _rest: [u32; 23],
}

/// The interface a pinned TCX or XDP link is attached to: `Ok(None)` when nothing is pinned
/// there, `Ok(Some(0))` for a defunct link.
pub fn pinned_ifindex(pin: &Path) -> Result<Option<u32>> {
    let fd = match obj_get(pin) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(Error::system(format!("cannot open pinned link {}", pin.display()), e)),
    };
    let mut info = LinkInfo { kind: 0, id: 0, prog_id: 0, _pad: 0, ifindex: 0, _rest: [0; 23] };
    info_by_fd(&fd, &mut info)?;
    Ok(Some(info.ifindex))
}

fn obj_get(pin: &Path) -> std::io::Result<OwnedFd> {
    let path = CString::new(pin.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut attr = ObjGet { pathname: path.as_ptr() as u64, ..Default::default() };
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_LINK_UPDATE: libc::c_long = 29;

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: `attr` is a bpf_attr prefix for `cmd`, valid for the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, size_of::<T>()) };
    if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(rc) }
}

/// Opens any pinned object (map, program, link).
pub fn open_pinned(pin: &Path) -> Result<OwnedFd> {
    obj_get(pin).map_err(|e| Error::system(format!("cannot open pin {}", pin.display()), e))
}

/// Pins an object a second time, at `pin`: both names then hold it.
pub fn pin(fd: &OwnedFd, pin: &Path) -> Result<()> {
    let path = CString::new(pin.as_os_str().as_bytes())
        .map_err(|e| Error::system(format!("bad pin path {}", pin.display()), e))?;
    let mut attr = ObjGet {
        pathname: path.as_ptr() as u64,
        bpf_fd: std::os::fd::AsRawFd::as_raw_fd(fd) as u32,
        ..Default::default()
    };
    bpf(BPF_OBJ_PIN, &mut attr).map(drop).map_err(|e| Error::system(format!("cannot pin {}", pin.display()), e))
}

const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_TCX_INGRESS: u32 = 46;
/// Place the program after `relative_fd`; with 0, after every program already there.
const BPF_F_AFTER: u32 = 1 << 4;

/// `bpf_attr` for `BPF_LINK_CREATE` with its `tcx` member.
#[repr(C)]
#[derive(Default)]
struct TcxLinkCreate {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    relative_fd: u32,
    _pad: u32,
    expected_revision: u64,
}

/// Attaches `prog` to the TCX ingress of interface `ifindex` (of the current namespace), last
/// in line; returns the link, which detaches when its last descriptor and pin are gone.
pub fn attach_tcx_ingress(prog: &OwnedFd, ifindex: u32) -> std::io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    let mut attr = TcxLinkCreate {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_TCX_INGRESS,
        flags: BPF_F_AFTER,
        ..Default::default()
    };
    let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[repr(C)]
#[derive(Default)]
struct LinkUpdate {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// Swaps the program a link runs, atomically: no packet goes unserved in between.
pub fn update_link(link: &OwnedFd, prog: &OwnedFd) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut attr =
        LinkUpdate { link_fd: link.as_raw_fd() as u32, new_prog_fd: prog.as_raw_fd() as u32, ..Default::default() };
    bpf(BPF_LINK_UPDATE, &mut attr).map(drop)
}

/// The program a link runs, by id.
pub fn link_prog_id(link: &OwnedFd) -> Result<u32> {
    let mut info = LinkInfo { kind: 0, id: 0, prog_id: 0, _pad: 0, ifindex: 0, _rest: [0; 23] };
    info_by_fd(link, &mut info)?;
    Ok(info.prog_id)
}

/// `struct bpf_prog_info`: type and id, then what we do not read.
#[repr(C, align(8))]
struct ProgInfo {
    kind: u32,
    id: u32,
    _rest: [u64; 29],
}

/// A program's id.
pub fn prog_id(prog: &OwnedFd) -> Result<u32> {
    let mut info = ProgInfo { kind: 0, id: 0, _rest: [0; 29] };
    info_by_fd(prog, &mut info)?;
    Ok(info.id)
}

/// The shape of a map: type, key size, value size, entries, flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapShape {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

/// `struct bpf_map_info`, the fields before the name and what we do not read.
#[repr(C, align(8))]
struct MapInfo {
    map_type: u32,
    id: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    _rest: [u32; 26],
}

pub fn map_shape(map: &OwnedFd) -> Result<MapShape> {
    let mut info =
        MapInfo { map_type: 0, id: 0, key_size: 0, value_size: 0, max_entries: 0, map_flags: 0, _rest: [0; 26] };
    info_by_fd(map, &mut info)?;
    Ok(MapShape {
        map_type: info.map_type,
        key_size: info.key_size,
        value_size: info.value_size,
        max_entries: info.max_entries,
        flags: info.map_flags,
    })
}

fn info_by_fd<T>(fd: &OwnedFd, info: &mut T) -> Result<()> {
    use std::os::fd::AsRawFd;
    let mut attr =
        InfoByFd { bpf_fd: fd.as_raw_fd() as u32, info_len: size_of::<T>() as u32, info: info as *mut T as u64 };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).map(drop).map_err(|e| Error::system("cannot read a BPF object's info", e))
}
