//! A `netpath daemon` under test and calls of its Docker plugin API over its unix socket.
use std::{
    io::{Read, Write},
    net::Shutdown,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::Topology;

/// A running `netpath daemon`, stopped by its PID.
pub struct Daemon {
    pub child: Option<Child>,
    pub socket: PathBuf,
}

impl Daemon {
    pub fn start(t: &Topology, socket: &Path) -> Self {
        Self::start_with(t, socket, &[])
    }

    /// Started with more arguments than the socket and a short gc interval.
    pub fn start_with(t: &Topology, socket: &Path, extra: &[&str]) -> Self {
        let mut cmd = t.netpath_cmd(&["daemon", "--docker-socket", socket.to_str().unwrap(), "--gc-interval", "2"]);
        Self::spawn(cmd.args(extra).stderr(Stdio::inherit()), socket)
    }

    pub fn spawn(cmd: &mut Command, socket: &Path) -> Self {
        let child = cmd.stdout(Stdio::null()).spawn().expect("spawn daemon");
        let daemon = Self { child: Some(child), socket: socket.to_path_buf() };
        daemon.wait_ready();
        daemon
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&self.socket).is_err() {
            assert!(Instant::now() < deadline, "daemon did not listen on {}", self.socket.display());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// SIGTERM, and the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
            .unwrap();
        child.wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends raw bytes, half-closes, and returns whatever came back.
pub fn raw(socket: &Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(bytes).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// One plugin call: the HTTP status and the JSON answer.
pub fn call(socket: &Path, method: &str, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let req = format!(
        "POST /{method} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/vnd.docker.plugins.v1.2+json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    parse_response(&raw(socket, req.as_bytes()))
}

pub fn parse_response(text: &str) -> (u16, Value) {
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status: {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or_else(|e| panic!("answer {body:?}: {e}")))
}

/// A call that must succeed.
pub fn ok(socket: &Path, method: &str, body: Value) -> Value {
    let (status, answer) = call(socket, method, &body);
    assert_eq!(status, 200, "{method} {body}: {answer}");
    assert!(answer.get("Err").is_none(), "{method}: {answer}");
    answer
}
