//! `netpath restore`: after a reboot (bridges, veths and pins gone, the database kept), or at
//! any other time, make the kernel match the database again. Every network is ensured; every
//! endpoint whose namespace still exists is ensured in it (rewired if its veth is gone), the
//! others are released. Idempotent: a second run finds everything intact.
use serde::Serialize;

use crate::{
    core::controller::Controller, core::ensure::Wiring, core::gc::GcReport, error::Error, error::Result,
    kernel::netns::Netns, state::lock::Mode, state::store::State,
};

#[derive(Debug, Serialize)]
pub struct NetworkOutcome {
    pub name: String,
    /// What had to be created (empty: it was all there).
    pub created: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct EndpointOutcome {
    pub id: String,
    pub network: String,
    #[serde(flatten)]
    pub outcome: EndpointAction,
}

#[derive(Debug, Serialize)]
#[serde(tag = "action", content = "detail", rename_all = "lowercase")]
pub enum EndpointAction {
    /// Its veth pair was in place.
    Intact,
    /// Wired anew in its namespace, for the reason given.
    Rewired(String),
    /// Its namespace is gone: address and ports freed.
    Released,
    Failed(String),
}

#[derive(Debug, Serialize)]
pub struct RestoreReport {
    pub networks: Vec<NetworkOutcome>,
    pub endpoints: Vec<EndpointOutcome>,
    /// Half-created rows of killed commands, removed first.
    pub reaped: GcReport,
}

impl RestoreReport {
    /// Ok when every object was restored; else one error naming those that were not.
    pub fn into_result(self) -> Result<()> {
        let failed: Vec<String> = self
            .networks
            .iter()
            .filter_map(|n| n.error.as_ref().map(|e| format!("network '{}': {e}", n.name)))
            .chain(self.endpoints.iter().filter_map(|e| match &e.outcome {
                EndpointAction::Failed(why) => Some(format!("endpoint '{}': {why}", e.id)),
                _ => None,
            }))
            .collect();
        match failed.is_empty() {
            true => Ok(()),
            false => Err(Error::system("restore incomplete", failed.join("; "))),
        }
    }
}

impl Controller {
    /// `netpath restore`. Holds the global lock exclusively: nothing else changes the state
    /// meanwhile.
    pub async fn restore(&mut self) -> Result<RestoreReport> {
        let _all = self.locks.global(Mode::Exclusive)?;
        self.may_load = true;
        self.restore_locked().await
    }

    /// `restore` for a caller that holds the global lock.
    pub(crate) async fn restore_locked(&mut self) -> Result<RestoreReport> {
        // Networks first: releasing a dead endpoint needs no bridge, rewiring one does.
        let mut networks = Vec::new();
        let mut broken = Vec::new();
        for net in self.store.networks()?.into_iter().filter(|n| n.state == State::Ready) {
            let (created, error) = match self.ensure_network(&net).await {
                Ok(created) => (created, None),
                Err(e) => {
                    broken.push(net.id);
                    (Vec::new(), Some(e.to_string()))
                }
            };
            networks.push(NetworkOutcome { name: net.name, created, error });
        }
        // Dead endpoints are released below, where the report names them.
        let reaped = self.reap_abandoned().await?;
        let mut endpoints = Vec::new();
        for ep in self.store.endpoints(None)?.into_iter().filter(|e| e.state == State::Ready) {
            // An endpoint an engine wired has no namespace identity; its host end tells.
            let found = if ep.handed { None } else { Netns::find(&ep.netns_id, &ep.netns) };
            let action = match found {
                _ if ep.handed => self.restore_handed(&ep, broken.contains(&ep.network_id)).await,
                None => match self.teardown_endpoint(&ep).await {
                    Ok(()) => {
                        if let Some(lock) = self.locks.try_endpoint(&ep.id)? {
                            lock.remove();
                        }
                        EndpointAction::Released
                    }
                    Err(e) => EndpointAction::Failed(e.to_string()),
                },
                Some(_) if broken.contains(&ep.network_id) => {
                    EndpointAction::Failed(format!("network '{}' could not be restored", ep.network))
                }
                Some(ns) => {
                    if ns.path != ep.netns {
                        self.store.set_endpoint_netns(&ep.id, &ns.path, &ep.netns_id)?;
                    }
                    let net = self.store.network(&ep.network)?;
                    match self.ensure_endpoint(&ep, &net, &ns).await {
                        Ok(Wiring::Intact) => EndpointAction::Intact,
                        Ok(Wiring::Rebuilt(why)) => EndpointAction::Rewired(why),
                        Err(e) => EndpointAction::Failed(e.to_string()),
                    }
                }
            };
            endpoints.push(EndpointOutcome { id: ep.id, network: ep.network, outcome: action });
        }
        Ok(RestoreReport { networks, endpoints, reaped })
    }
}
