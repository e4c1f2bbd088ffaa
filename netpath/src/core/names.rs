//! The names netpath checks and makes: networks' and endpoints', host veths', random ids,
//! the names a container answers to.
use crate::{
    error::{Error, Field, Message, Result},
    kernel::{link::HOST_VETH_PREFIX, random},
    types::name::Hostname,
};

/// The most aliases one endpoint may have: each is a row the resolver will search.
pub const ALIASES_MAX: usize = 64;

/// An endpoint's aliases, each once (whatever its case), in the order given.
pub(crate) fn distinct_aliases(aliases: &[Hostname]) -> Result<Vec<Hostname>> {
    let mut kept: Vec<Hostname> = Vec::new();
    for alias in aliases {
        if !kept.iter().any(|k| k.is(alias.as_str())) {
            kept.push(alias.clone());
        }
    }
    if kept.len() > ALIASES_MAX {
        return Err(Error::invalid(
            Message::from(format!("{} names given as ", kept.len()))
                .and_field(Field::Alias)
                .and(format!("; an endpoint may have {ALIASES_MAX} at most")),
        ));
    }
    Ok(kept)
}

/// The host end of an endpoint's veth: `npv` and a hash of the endpoint id (≤ 15 bytes).
pub fn host_veth_name(id: &str) -> String {
    let hash = id.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    format!("{HOST_VETH_PREFIX}{hash:08x}")
}

pub(crate) fn random_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    random::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
