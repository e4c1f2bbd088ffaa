//! `netpath status`: what the kernel offers and whether the object verifies (the kernel's
//! probes), then whether the pinned maps agree with the database.
use netpath_common::limits;

use crate::{
    core::controller::Controller,
    error::Result,
    kernel::probe::{self, Check},
    state::store::State,
};

impl Controller {
    pub async fn status(&mut self) -> Result<Vec<Check>> {
        let mut checks = probe::kernel(&self.paths.pin_root);
        checks.push(probe::check("datapath-sync", self.sync().await));
        checks.push(probe::check("conntrack", self.conntrack_usage()));
        if self.store.networks()?.iter().any(|n| n.external_id.is_some()) {
            checks.push(docker_dns());
        }
        Ok(checks)
    }

    /// How full the two connection tables are: a flood of unanswered opens fills only the small
    /// one, and must never show in the established one.
    fn conntrack_usage(&mut self) -> std::result::Result<String, String> {
        let (established, new) = self.datapath().map_err(|e| e.to_string())?.conntrack_usage();
        Ok(format!(
            "{established}/{} entries established (CT), {new}/{} not yet (CT_NEW); two per connection",
            limits::MAX_CT,
            limits::MAX_CT_NEW
        ))
    }

    /// Every ready endpoint is in ENDPOINTS with its veth's ifindex, and nothing else is.
    async fn sync(&mut self) -> std::result::Result<String, String> {
        let endpoints = self.store.endpoints(None).map_err(|e| e.to_string())?;
        let mut expected = Vec::new();
        for ep in endpoints.iter().filter(|e| e.state == State::Ready) {
            let ifindex = self.host_ifindex(ep).await.map_err(|e| e.to_string())?;
            expected.push((ep.ip, ifindex));
        }
        let in_map = self.datapath().map_err(|e| e.to_string())?.endpoints().map_err(|e| e.to_string())?;
        let mut problems = Vec::new();
        for (ip, ifindex) in &expected {
            match in_map.iter().find(|(mip, _)| mip == ip) {
                None => problems.push(format!("{ip} missing from ENDPOINTS")),
                Some((_, info)) if Some(info.host_ifindex) != *ifindex => {
                    problems.push(format!("{ip} points at a stale ifindex"))
                }
                Some(_) => {}
            }
        }
        for (ip, _) in &in_map {
            if !expected.iter().any(|(eip, _)| eip == ip) {
                problems.push(format!("{ip} in ENDPOINTS has no endpoint"));
            }
        }
        if problems.is_empty() {
            Ok(format!("{} endpoint(s) in the database and in ENDPOINTS", expected.len()))
        } else {
            Err(problems.join("; "))
        }
    }
}

/// dockerd's embedded resolver (127.0.0.11) answers containers of a remote driver's network
/// only through the redirect it installs in each container's namespace with `iptables` or
/// `nft`; without either it fails silently and containers resolve no names. Looked up on this
/// command's `PATH`, the best stand-in for dockerd's.
fn docker_dns() -> Check {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = ["iptables", "nft"]
        .iter()
        .flat_map(|tool| std::env::split_paths(&path).map(move |dir| dir.join(tool)))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            candidate.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        });
    match found {
        Some(tool) => probe::check(
            "docker-dns",
            Ok(format!("dockerd finds {}: its embedded DNS serves Docker networks on netpath", tool.display())),
        ),
        None => probe::warning(
            "docker-dns",
            "a Docker network uses netpath but neither iptables nor nft is on PATH: dockerd's embedded DNS \
             (127.0.0.11) cannot install its redirect, so containers resolve no names; install iptables or nftables"
                .into(),
        ),
    }
}
