//! Where an endpoint's `from_container` runs.
use serde::Serialize;

use crate::error::{Error, Result};

/// How an endpoint's host veth gets `from_container` (`datapath configure --endpoint-hook`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndpointHook {
    /// Its `clsact` ingress bound to the network's tc block, which carries the program once:
    /// no RCU grace period per attach.
    #[default]
    TcBlock,
    /// A TCX link of its own: the first on a new device waits for an RCU grace period.
    Tcx,
}

impl EndpointHook {
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "tc-block" => Ok(Self::TcBlock),
            "tcx" => Ok(Self::Tcx),
            _ => Err(Error::invalid(format!("endpoint hook '{text}' is not one netpath has; pick tc-block or tcx"))),
        }
    }

    /// As the settings table keeps it.
    pub fn code(self) -> i64 {
        match self {
            Self::TcBlock => 0,
            Self::Tcx => 1,
        }
    }

    pub fn from_code(code: i64) -> Self {
        if code == 1 { Self::Tcx } else { Self::TcBlock }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TcBlock => "tc-block",
            Self::Tcx => "tcx",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::EndpointHook;

    #[test]
    fn hooks_round_trip_and_others_are_refused() {
        for hook in [EndpointHook::TcBlock, EndpointHook::Tcx] {
            assert_eq!(EndpointHook::parse(hook.as_str()).unwrap(), hook);
            assert_eq!(EndpointHook::from_code(hook.code()), hook);
        }
        let err = EndpointHook::parse("xdp").unwrap_err().to_string();
        assert!(err.contains("pick tc-block or tcx"), "{err}");
    }
}
