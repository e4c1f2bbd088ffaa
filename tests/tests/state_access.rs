//! The state directory against local users. Its database names every namespace, address and
//! port, and its lock files order every command: a user who is not root may open neither.
//! And a lock a stuck process holds makes commands fail, naming its holder, instead of hang.
use std::{
    os::unix::{fs::MetadataExt, process::CommandExt},
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use netpath_tests::{Topology, ip_of, users::TestUser};

/// A netpath command run with umask 0, so that only the modes netpath sets itself protect
/// what it creates.
fn np_umask0(t: &Topology, args: &[&str]) {
    let mut cmd = t.netpath_cmd(args);
    // SAFETY: umask is async-signal-safe and touches nothing the parent shares.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let out = cmd.output().expect("run netpath");
    assert!(out.status.success(), "netpath {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Every directory under `dir` (itself included) and every file, whose mode has a group or
/// other bit.
fn shared_modes(dir: &Path) -> Vec<String> {
    let meta = std::fs::metadata(dir).unwrap();
    let mut found = Vec::new();
    if meta.mode() & 0o077 != 0 {
        found.push(format!("{} {:o}", dir.display(), meta.mode() & 0o777));
    }
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let (path, meta) = (entry.path(), entry.metadata().unwrap());
        if meta.is_dir() {
            found.extend(shared_modes(&path));
        } else if meta.mode() & 0o077 != 0 {
            found.push(format!("{} {:o}", path.display(), meta.mode() & 0o777));
        }
    }
    found
}

fn refused(out: &Output) -> bool {
    !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Permission denied")
}

#[test]
fn a_local_user_can_neither_lock_nor_read_the_state() {
    let mut t = Topology::new("usr");
    np_umask0(&t, &["network", "create", "web"]);
    let a = t.container("a", "web", &[]);
    // What an older netpath left: everything readable by all. The next commands narrow it.
    let widened = Command::new("chmod").args(["-R", "u=rwX,go=rX"]).arg(t.state_dir()).status().unwrap();
    assert!(widened.success());
    t.netpath_cmd(&["network", "ls"]).output().unwrap();
    t.netns("b");
    np_umask0(&t, &["attach", "--network", "web", "--netns", &t.ns_path("b"), "--id", "b"]);
    let left = shared_modes(&t.state_dir());
    assert!(left.is_empty(), "readable by others: {left:?}");

    let user = TestUser::create("st");
    let (lock, db) = (t.state_dir().join("locks/all.lock"), t.state_dir().join("netpath.db"));
    // The user reaches the state directory itself: what refuses it is the directory's mode.
    let reached = user.run(&["stat", t.state_dir().to_str().unwrap()]);
    assert!(reached.status.success(), "{}", String::from_utf8_lossy(&reached.stderr));
    let locked = user.run(&["flock", "--nonblock", "--exclusive", lock.to_str().unwrap(), "true"]);
    let read = user.run(&["cat", db.to_str().unwrap()]);
    assert!(refused(&locked), "the user took the global lock: {locked:?}");
    assert!(refused(&read), "the user read the database ({} bytes)", read.stdout.len());

    let b = t.np_json(&["endpoint", "inspect", "b"]);
    assert!(t.ping("a", &ip_of(&b).to_string(), 2), "a cannot reach b");
    assert!(t.ping("b", &ip_of(&a).to_string(), 2), "b cannot reach a");
    t.teardown();
}

/// Runs `cmd`, killing it (by its pid) if it has not ended after `limit`.
fn output_within(cmd: &mut Command, limit: Duration) -> Option<Output> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(child.wait_with_output().unwrap())
}

#[test]
fn a_command_gives_up_on_a_held_lock_naming_its_holder() {
    let t = Topology::new("lck");
    t.network("web", &[]);
    let held = t.hold_global_lock();
    let mut create = t.netpath_cmd(&["network", "create", "db"]);
    create.env("NETPATH_LOCK_TIMEOUT", "1");
    let started = Instant::now();
    let out = output_within(&mut create, Duration::from_secs(30)).expect("netpath hung on the held lock");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20), "gave up only after {:?}", started.elapsed());
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let me = format!("pid {}", std::process::id());
    assert!(err.contains("locks/all.lock") && err.contains(&me), "the error names neither lock nor {me}: {err}");

    drop(held);
    t.network("db", &[]);
    t.teardown();
}
