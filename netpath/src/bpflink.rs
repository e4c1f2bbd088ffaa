//! What a pinned BPF link is attached to, read with the raw `bpf()` syscall: aya 0.14's
//! `LinkInfo` does not expose the interface. A TCX or XDP link whose interface was deleted
//! stays pinned but defunct (interface 0); `ensure` must replace it, not trust the pin.
use std::{ffi::CString, os::fd::FromRawFd, os::fd::OwnedFd, os::unix::ffi::OsStrExt, path::Path};

use crate::error::{Error, Result};

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
    let path = CString::new(pin.as_os_str().as_bytes())
        .map_err(|e| Error::system(format!("bad pin path {}", pin.display()), e))?;
    let attr = ObjGet { pathname: path.as_ptr() as u64, ..Default::default() };
    // SAFETY: attr is a valid bpf_attr prefix for BPF_OBJ_GET and outlives the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, &attr as *const ObjGet, size_of::<ObjGet>()) };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOENT) => Ok(None),
            _ => Err(Error::system(format!("cannot open pinned link {}", pin.display()), err)),
        };
    }
    // SAFETY: the kernel just returned this descriptor to us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut info = LinkInfo { kind: 0, id: 0, prog_id: 0, _pad: 0, ifindex: 0, _rest: [0; 23] };
    let attr = InfoByFd {
        bpf_fd: std::os::fd::AsRawFd::as_raw_fd(&fd) as u32,
        info_len: size_of::<LinkInfo>() as u32,
        info: &mut info as *mut LinkInfo as u64,
    };
    // SAFETY: attr points at a buffer of info_len bytes that outlives the call.
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, &attr as *const InfoByFd, size_of::<InfoByFd>())
    };
    if rc < 0 {
        return Err(Error::system(
            format!("cannot read pinned link {}", pin.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(Some(info.ifindex))
}
