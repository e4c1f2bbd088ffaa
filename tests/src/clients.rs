//! What tests with real container engines share: a lock that serialises the tests that
//! write global paths (/etc/cni/net.d, /opt/cni/bin, /run/containerd), files placed there
//! and removed afterwards, and an offline OCI image.
use std::{
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::{Value, json};

use crate::run;

/// Held while a test uses global paths (engines' configuration and plugin directories,
/// /run/containerd, /run/docker/plugins): engines' tests never overlap, whichever test binary
/// or checkout they run from. The lock is taken on the `/run` directory itself, so it leaves
/// no file behind; it lasts as long as the open descriptor.
pub struct GlobalLock(#[allow(dead_code)] File);

impl GlobalLock {
    pub fn take() -> Self {
        let run = File::open("/run").unwrap();
        assert_eq!(unsafe { libc::flock(run.as_raw_fd(), libc::LOCK_EX) }, 0, "flock /run");
        Self(run)
    }
}

/// Files and directories a test put in global paths, removed (and what they replaced put
/// back) when it ends, passed or failed.
#[derive(Default)]
pub struct Placed {
    files: Vec<(PathBuf, Option<Vec<u8>>)>,
    dirs: Vec<PathBuf>,
    /// Shared directories this test made, removed only if nobody else put anything there.
    shared: Vec<PathBuf>,
}

impl Placed {
    /// Creates the directory and its missing parents, remembering which were made.
    pub fn dir(&mut self, dir: &Path) {
        let mut missing: Vec<PathBuf> = dir.ancestors().take_while(|d| !d.exists()).map(Path::to_path_buf).collect();
        missing.reverse();
        std::fs::create_dir_all(dir).unwrap();
        self.dirs.extend(missing);
    }

    /// Writes `path` (mode 0755 when `executable`), keeping what was there.
    pub fn file(&mut self, path: &Path, contents: &[u8], executable: bool) {
        self.dir(path.parent().unwrap());
        self.files.push((path.to_path_buf(), std::fs::read(path).ok()));
        std::fs::write(path, contents).unwrap();
        if executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    /// Remembers a path something else will create there (a runtime's state directory), or,
    /// when it exists already, the files in it that will be this test's.
    pub fn will_create(&mut self, dir: &Path, files: &[&str]) {
        if dir.exists() {
            self.files.extend(files.iter().map(|f| (dir.join(f), None)));
        } else {
            self.dirs.push(dir.to_path_buf());
        }
    }
}

impl Placed {
    /// Like `will_create`, for a directory another engine may use at the same time (shims'
    /// /run/containerd): only `ours` in it is removed, then the directories `made` under it
    /// and itself, each if this test created it and it is empty.
    pub fn shared(&mut self, dir: &Path, ours: &[&str], made: &[&str]) {
        if !dir.exists() {
            self.shared.extend(made.iter().map(|d| dir.join(d)));
            self.shared.push(dir.to_path_buf());
        }
        self.files.extend(ours.iter().map(|f| (dir.join(f), None)));
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        for (path, before) in self.files.drain(..).rev() {
            match before {
                Some(contents) => {
                    let _ = std::fs::write(&path, contents);
                }
                None if path.is_dir() => {
                    let _ = std::fs::remove_dir_all(&path);
                }
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        // Deepest first; a directory that is not empty is someone else's business now.
        self.dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for path in self.dirs.drain(..) {
            let _ = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        }
        for dir in self.shared.drain(..) {
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

/// Adds a blob to an OCI layout; returns its descriptor.
fn blob(layout: &Path, media_type: &str, path: &Path) -> Value {
    let digest = sha256(path);
    let size = std::fs::metadata(path).unwrap().len();
    std::fs::copy(path, layout.join("blobs/sha256").join(&digest)).unwrap();
    json!({ "mediaType": media_type, "digest": format!("sha256:{digest}"), "size": size })
}

/// A root filesystem tarball with the directories and the /bin, /lib… symlinks of a Debian
/// root and nothing else: a container that bind-mounts the host's /usr read-only runs the
/// host's programs, so no image has to be downloaded.
pub fn rootfs_tar(work: &Path) -> PathBuf {
    let rootfs = work.join("image-rootfs");
    for dir in ["usr", "etc", "tmp", "proc", "sys", "dev", "run", "var"] {
        std::fs::create_dir_all(rootfs.join(dir)).unwrap();
    }
    for (link, target) in [("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"), ("sbin", "usr/sbin")] {
        let _ = std::os::unix::fs::symlink(target, rootfs.join(link));
    }
    let layer = work.join("layer.tar");
    run(Command::new("tar").arg("-cf").arg(&layer).arg("-C").arg(&rootfs).arg("."));
    layer
}

/// An OCI image-layout tar named `name` (`docker.io/library/NAME:latest`) whose one layer is
/// `rootfs_tar`, for `ctr image import`.
pub fn image_tar(work: &Path, name: &str) -> PathBuf {
    let layout = work.join("image-layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let layer = blob(&layout, "application/vnd.oci.image.layer.v1.tar", &rootfs_tar(work));
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Cmd": ["/usr/bin/sleep", "600"] },
        "rootfs": { "type": "layers", "diff_ids": [layer["digest"]] }
    });
    let config_file = work.join("config.json");
    std::fs::write(&config_file, config.to_string()).unwrap();
    let config = blob(&layout, "application/vnd.oci.image.config.v1+json", &config_file);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": [layer]
    });
    let manifest_file = work.join("manifest.json");
    std::fs::write(&manifest_file, manifest.to_string()).unwrap();
    let mut manifest = blob(&layout, "application/vnd.oci.image.manifest.v1+json", &manifest_file);
    manifest["annotations"] = json!({
        "io.containerd.image.name": format!("docker.io/library/{name}:latest"),
        "org.opencontainers.image.ref.name": "latest"
    });
    let index = json!({ "schemaVersion": 2, "manifests": [manifest] });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let tar = work.join(format!("{name}.tar"));
    run(Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(&layout).arg("."));
    tar
}

/// Unmounts everything mounted under `dir`, deepest first (what an engine left behind).
pub fn unmount_under(dir: &Path) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = format!("{}/", dir.display());
    let mut mounts: Vec<&str> =
        mountinfo.lines().filter_map(|l| l.split_whitespace().nth(4)).filter(|m| m.starts_with(&prefix)).collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for mount in mounts {
        let _ = Command::new("umount").arg("-l").arg(mount).status();
    }
}

/// Removes the cgroup `name` (and the empty cgroups under it) from every hierarchy: engines
/// make one per namespace or parent and leave it behind.
pub fn remove_cgroups(name: &str) {
    let root = Path::new("/sys/fs/cgroup");
    let hierarchies = std::fs::read_dir(root).into_iter().flatten().flatten().map(|h| h.path());
    for dir in hierarchies.chain(std::iter::once(root.to_path_buf())).map(|h| h.join(name)).filter(|d| d.exists()) {
        let _ = Command::new("find").arg(&dir).args(["-depth", "-type", "d", "-exec", "rmdir", "{}", ";"]).status();
    }
}

/// Whether the cgroup `name` exists in some hierarchy (another engine's, then: not ours to
/// remove).
pub fn cgroup_exists(name: &str) -> bool {
    let root = Path::new("/sys/fs/cgroup");
    root.join(name).exists()
        || std::fs::read_dir(root).into_iter().flatten().flatten().any(|h| h.path().join(name).exists())
}
