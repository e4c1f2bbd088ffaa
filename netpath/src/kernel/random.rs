//! Random bytes from the kernel (`getrandom`), for ids and MAC addresses nobody chose.
use crate::error::{Error, Result};

/// Fills `buf`, or says why it could not.
pub fn fill(buf: &mut [u8]) -> Result<()> {
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n as usize == buf.len() { Ok(()) } else { Err(Error::system("getrandom", std::io::Error::last_os_error())) }
}
