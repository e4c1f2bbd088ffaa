//! Throwaway unprivileged users, for tests of what a local user who is not root can do.
use std::{
    process::{Command, Output},
    time::Duration,
};

/// A user `np<tag><pid>` with a group of its own, no home and no shell, removed when dropped,
/// whether the test passed or failed.
pub struct TestUser {
    pub name: String,
}

impl TestUser {
    pub fn create(tag: &str) -> Self {
        let name = format!("np{tag}{}", std::process::id());
        // A run killed before its cleanup left this name behind; it is this test's own.
        let _ = shadow_tool(&["userdel", &name]);
        let out = shadow_tool(&["useradd", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin", &name]);
        assert!(out.status.success(), "useradd {name}: {}", String::from_utf8_lossy(&out.stderr));
        Self { name }
    }

    /// Runs `cmd` as this user, with its own group and no capabilities.
    pub fn run(&self, cmd: &[&str]) -> Output {
        Command::new("setpriv")
            .args([&format!("--reuid={}", self.name), &format!("--regid={}", self.name), "--init-groups", "--"])
            .args(cmd)
            .output()
            .expect("run setpriv")
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let out = shadow_tool(&["userdel", &self.name]);
        if !out.status.success() {
            eprintln!("userdel {}: {}", self.name, String::from_utf8_lossy(&out.stderr).trim());
        }
    }
}

/// useradd and userdel give up at once while another process (another test, another
/// checkout's tests) holds the lock on /etc/passwd: try again for a while.
fn shadow_tool(args: &[&str]) -> Output {
    for _ in 0..50 {
        let out = Command::new(args[0]).args(&args[1..]).output().expect("run useradd/userdel");
        if !String::from_utf8_lossy(&out.stderr).contains("cannot lock") {
            return out;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{args:?}: /etc/passwd stayed locked for 5 s");
}
