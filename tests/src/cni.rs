//! Driving the `netpath` binary as a CNI runtime does: `CNI_*` variables and the network
//! configuration on stdin, the result or error JSON on stdout.
use std::{
    io::Write,
    process::{Command, Stdio},
};

use serde_json::Value;

use crate::{Topology, netpath_bin};

/// One CNI call's outcome.
#[derive(Debug)]
pub struct Reply {
    pub ok: bool,
    /// stdout as JSON, `Null` when empty.
    pub json: Value,
    pub stdout: String,
}

impl Reply {
    /// The error code of a failed call; panics (with the output) when it succeeded or its
    /// error is not the spec's error JSON with a one-line message.
    pub fn code(&self) -> u64 {
        assert!(!self.ok, "the call succeeded: {}", self.stdout);
        let msg = self.json["msg"].as_str().unwrap_or_else(|| panic!("no msg in {}", self.stdout));
        assert!(!msg.is_empty() && !msg.contains('\n'), "msg is not one line: {msg:?}");
        assert!(self.json["cniVersion"].is_string(), "no cniVersion in {}", self.stdout);
        self.json["code"].as_u64().unwrap_or_else(|| panic!("no code in {}", self.stdout))
    }

    pub fn msg(&self) -> &str {
        self.json["msg"].as_str().unwrap_or("")
    }
}

/// The CNI variables of one container interface.
pub struct Call<'a> {
    pub command: &'a str,
    pub container_id: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
}

impl Topology {
    /// The plugin command, run as a runtime would, bound to this topology's host namespace,
    /// state and pins through netpath's environment variables.
    pub fn cni_cmd(&self, call: &Call) -> Command {
        let mut cmd = Command::new(netpath_bin());
        cmd.env("CNI_COMMAND", call.command)
            .env("CNI_PATH", "/nonexistent")
            .env("NETPATH_STATE_DIR", self.state_dir())
            .env("NETPATH_BPFFS", self.pin_root())
            .env("NETPATH_HOST_NETNS", self.ns_path("host"));
        for (name, value) in
            [("CNI_CONTAINERID", call.container_id), ("CNI_NETNS", call.netns), ("CNI_IFNAME", call.ifname)]
        {
            if !value.is_empty() {
                cmd.env(name, value);
            }
        }
        cmd
    }

    /// Runs one CNI call with `config` on stdin.
    pub fn cni_with(&self, mut cmd: Command, config: &[u8]) -> Reply {
        let mut child =
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn netpath");
        // The plugin may refuse before reading everything (an oversized input): ignore EPIPE.
        let _ = child.stdin.take().unwrap().write_all(config);
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let json = if stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout}"))
        };
        Reply { ok: out.status.success(), json, stdout }
    }

    pub fn cni(&self, call: &Call, config: &Value) -> Reply {
        self.cni_with(self.cni_cmd(call), config.to_string().as_bytes())
    }
}
