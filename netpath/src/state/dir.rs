//! The state directory is netpath's alone: 0700, its files 0600. Its database names every
//! namespace, address and port, and a user who could open a lock file could `flock` it and
//! freeze every command. A directory or file that an older netpath (or a hand) made wider is
//! narrowed the next time it is used; modes are set explicitly, so no umask widens them.
use std::{
    fs::{DirBuilder, File, OpenOptions, Permissions},
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::Path,
};

use crate::error::{Context, Error, Result};

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;
/// Group and other bits: none may be set.
const SHARED_BITS: u32 = 0o077;

/// Creates `dir` 0700 (its parents as the system's defaults say), or narrows it to 0700 and,
/// since whoever left it wider left its files so too, the files in it to 0600. A directory
/// owned by another user is refused: that user could widen it again.
pub fn private_dir(dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).context(|| format!("cannot create {}", parent.display()))?;
    }
    match DirBuilder::new().mode(DIR_MODE).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(Error::system(format!("cannot create {}", dir.display()), e));
        }
        _ => {}
    }
    let meta = std::fs::metadata(dir).context(|| format!("cannot stat {}", dir.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(Error::conflict(format!(
            "state directory {} is owned by uid {}, not {me}; chown it or use another state directory",
            dir.display(),
            meta.uid()
        )));
    }
    if meta.mode() & SHARED_BITS == 0 {
        return Ok(());
    }
    narrow(dir, DIR_MODE)?;
    private_files(dir)
}

/// Narrows every file directly in `dir` to 0600: the database, its WAL and shared memory,
/// and whatever lock files live there.
pub fn private_files(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let entry = entry.context(|| format!("cannot read {}", dir.display()))?;
        let path = entry.path();
        // A file removed meanwhile (a WAL a checkpoint dropped) needs nothing.
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if meta.is_file() && meta.mode() & SHARED_BITS != 0 {
            narrow(&path, FILE_MODE)?;
        }
    }
    Ok(())
}

/// Opens `path` for writing, created 0600, or narrowed to 0600 when it exists wider.
pub fn open_private(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(FILE_MODE)
        .open(path)
        .context(|| format!("cannot open {}", path.display()))?;
    let mode = file.metadata().context(|| format!("cannot stat {}", path.display()))?.mode();
    if mode & SHARED_BITS != 0 {
        file.set_permissions(Permissions::from_mode(FILE_MODE))
            .context(|| format!("cannot set the mode of {}", path.display()))?;
    }
    Ok(file)
}

fn narrow(path: &Path, wanted: u32) -> Result<()> {
    std::fs::set_permissions(path, Permissions::from_mode(wanted))
        .context(|| format!("cannot set the mode of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wide_directory_and_its_files_are_narrowed() {
        let dir = std::env::temp_dir().join(format!("netpath-dir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        let db = dir.join("netpath.db");
        std::fs::write(&db, b"").unwrap();
        std::fs::set_permissions(&db, Permissions::from_mode(0o644)).unwrap();
        private_dir(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!((mode(&dir), mode(&db)), (0o700, 0o600));
        let fresh = dir.join("fresh");
        private_dir(&fresh).unwrap();
        drop(open_private(&fresh.join("a.lock")).unwrap());
        assert_eq!((mode(&fresh), mode(&fresh.join("a.lock"))), (0o700, 0o600));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
