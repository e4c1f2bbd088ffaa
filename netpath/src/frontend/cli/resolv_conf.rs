//! `attach --resolv-conf PATH`: a resolv.conf that names the network's gateway, where the
//! daemon's resolver answers, for a container that brings its own file system.
use std::{net::Ipv4Addr, path::Path};

use crate::error::{Context, Error, Result};

/// Refuses, before anything is attached, a path that could not be written.
pub fn check(path: &Path) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(Error::invalid(format!(
            "--resolv-conf {}: directory {} does not exist; create it first",
            path.display(),
            dir.display()
        )));
    }
    Ok(())
}

/// Written to a temporary file renamed over `path`, so a reader never sees half of it.
pub fn write(path: &Path, gateway: Ipv4Addr) -> Result<()> {
    let text = format!("# written by netpath attach: the network's gateway answers names\nnameserver {gateway}\n");
    let staged = path.with_extension("netpath-new");
    std::fs::write(&staged, text).context(|| format!("cannot write {}", staged.display()))?;
    std::fs::rename(&staged, path).context(|| format!("cannot write {}", path.display()))
}
