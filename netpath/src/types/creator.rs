//! Which frontend asked for an endpoint: a runtime collects only the endpoints it made.

/// Recorded with each endpoint (schema 6); endpoints of older rows have none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Creator {
    /// `netpath attach`.
    Cli,
    /// A CNI ADD.
    Cni,
    /// An OCI `createRuntime` hook.
    Oci,
    /// An engine's Join (Docker's remote driver).
    Engine,
}

impl Creator {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cli => "cli",
            Self::Cni => "cni",
            Self::Oci => "oci",
            Self::Engine => "engine",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Cli, Self::Cni, Self::Oci, Self::Engine].into_iter().find(|c| c.as_str() == text)
    }
}
