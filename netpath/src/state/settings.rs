//! Datapath-wide settings (`netpath datapath configure`): the SNAT port range, how many of its
//! ports one endpoint may hold, the conntrack timeouts (kept in the database, written to the
//! `CONFIG` map), and how endpoints get their program (kept in the database, read by attach).
use std::ops::RangeInclusive;

use netpath_common::{Config, limits::MAX_SNAT_QUOTA};
use serde::Serialize;

use crate::{error::Error, error::Result, state::store::Store, types::hook::EndpointHook};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Settings {
    pub snat_port_min: u16,
    pub snat_port_max: u16,
    pub tcp_established_timeout: u32,
    pub tcp_transient_timeout: u32,
    pub udp_timeout: u32,
    pub icmp_timeout: u32,
    /// SNAT ports (connections masqueraded or hairpinned) one endpoint may hold at once.
    pub snat_quota: u32,
    pub endpoint_hook: EndpointHook,
}

/// What `netpath datapath configure` changes; `None` keeps the current value.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    pub snat_ports: Option<String>,
    pub tcp_established_timeout: Option<u32>,
    pub tcp_transient_timeout: Option<u32>,
    pub udp_timeout: Option<u32>,
    pub icmp_timeout: Option<u32>,
    pub snat_quota: Option<u32>,
    pub endpoint_hook: Option<String>,
}

const KEYS: [&str; 8] = [
    "snat_port_min",
    "snat_port_max",
    "tcp_established_timeout",
    "tcp_transient_timeout",
    "udp_timeout",
    "icmp_timeout",
    "snat_quota",
    "endpoint_hook",
];

/// The fewest SNAT ports a default range may have.
const MIN_DEFAULT_PORTS: u32 = 1000;
/// A quarter of the default range per endpoint: plenty for one container's connections, and
/// no single one takes a destination's ports from the others.
const DEFAULT_SNAT_QUOTA: u32 = 1024;

impl Settings {
    /// Defaults: SNAT ports above the host's ephemeral range (below it if there is no room),
    /// so masqueraded flows never collide with the host's own connections.
    pub fn defaults(ephemeral: (u16, u16)) -> Self {
        let (lo, hi) = ephemeral;
        let (min, max) = if 65535 - u32::from(hi) >= MIN_DEFAULT_PORTS {
            (hi + 1, 65535)
        } else if u32::from(lo) >= 1024 + MIN_DEFAULT_PORTS {
            (1024, lo - 1)
        } else {
            (61000, 65535)
        };
        Self {
            snat_port_min: min,
            snat_port_max: max,
            tcp_established_timeout: 21600,
            tcp_transient_timeout: 60,
            udp_timeout: 60,
            icmp_timeout: 30,
            snat_quota: DEFAULT_SNAT_QUOTA,
            endpoint_hook: EndpointHook::default(),
        }
    }

    /// The recorded settings; what was never set defaults around `ephemeral`, the host's
    /// ephemeral port range.
    pub fn load(store: &Store, ephemeral: (u16, u16)) -> Result<Self> {
        let d = Self::defaults(ephemeral);
        let get = |key: &str, default: i64| -> Result<i64> { Ok(store.setting(key)?.unwrap_or(default)) };
        Ok(Self {
            snat_port_min: get(KEYS[0], d.snat_port_min.into())? as u16,
            snat_port_max: get(KEYS[1], d.snat_port_max.into())? as u16,
            tcp_established_timeout: get(KEYS[2], d.tcp_established_timeout.into())? as u32,
            tcp_transient_timeout: get(KEYS[3], d.tcp_transient_timeout.into())? as u32,
            udp_timeout: get(KEYS[4], d.udp_timeout.into())? as u32,
            icmp_timeout: get(KEYS[5], d.icmp_timeout.into())? as u32,
            snat_quota: get(KEYS[6], d.snat_quota.into())? as u32,
            endpoint_hook: EndpointHook::from_code(get(KEYS[7], d.endpoint_hook.code())?),
        })
    }

    /// The endpoint hook alone: what every attach reads.
    pub fn endpoint_hook(store: &Store) -> Result<EndpointHook> {
        Ok(store.setting(KEYS[7])?.map_or_else(EndpointHook::default, EndpointHook::from_code))
    }

    pub fn save(&self, store: &Store) -> Result<()> {
        let values = [
            i64::from(self.snat_port_min),
            i64::from(self.snat_port_max),
            i64::from(self.tcp_established_timeout),
            i64::from(self.tcp_transient_timeout),
            i64::from(self.udp_timeout),
            i64::from(self.icmp_timeout),
            i64::from(self.snat_quota),
            self.endpoint_hook.code(),
        ];
        KEYS.iter().zip(values).try_for_each(|(k, v)| store.set_setting(k, v))
    }

    /// Applies `changes`, checking the result against the host's ephemeral port range.
    pub fn apply(mut self, changes: &Changes, ephemeral: (u16, u16)) -> Result<Self> {
        if let Some(range) = &changes.snat_ports {
            (self.snat_port_min, self.snat_port_max) = parse_port_range(range)?;
            let (lo, hi) = ephemeral;
            if self.snat_port_min <= hi && lo <= self.snat_port_max {
                return Err(Error::invalid(format!(
                    "SNAT ports {range} overlap the host's ephemeral ports {lo}-{hi} (net.ipv4.ip_local_port_range); pick ports outside them"
                )));
            }
        }
        for (value, field) in [
            (changes.tcp_established_timeout, &mut self.tcp_established_timeout),
            (changes.tcp_transient_timeout, &mut self.tcp_transient_timeout),
            (changes.udp_timeout, &mut self.udp_timeout),
            (changes.icmp_timeout, &mut self.icmp_timeout),
        ] {
            if let Some(v) = value {
                if v == 0 {
                    return Err(Error::invalid("timeouts are at least 1 second"));
                }
                *field = v;
            }
        }
        if let Some(quota) = changes.snat_quota {
            if quota == 0 || quota > MAX_SNAT_QUOTA {
                return Err(Error::invalid(format!(
                    "SNAT quota {quota} is out of range; pick 1 to {MAX_SNAT_QUOTA} (SNAT ports one endpoint may hold at once)"
                )));
            }
            self.snat_quota = quota;
        }
        if let Some(hook) = &changes.endpoint_hook {
            self.endpoint_hook = EndpointHook::parse(hook)?;
        }
        Ok(self)
    }

    /// The source ports masqueraded connections leave with. A publication on one of them would
    /// take the answers of those connections for packets to the published port.
    pub fn snat_ports(&self) -> RangeInclusive<u16> {
        self.snat_port_min..=self.snat_port_max
    }

    /// The `CONFIG` value; `host_netns_cookie` identifies the namespace netpath serves.
    pub fn to_config(self, host_netns_cookie: u64) -> Config {
        Config {
            snat_port_min: self.snat_port_min,
            snat_port_max: self.snat_port_max,
            timeout_tcp_established: self.tcp_established_timeout,
            timeout_tcp_transient: self.tcp_transient_timeout,
            timeout_udp: self.udp_timeout,
            timeout_icmp: self.icmp_timeout,
            snat_quota: self.snat_quota,
            host_netns_cookie,
        }
    }
}

/// `A-B` (or a single port), 1 to 65535, A ≤ B.
pub fn parse_port_range(s: &str) -> Result<(u16, u16)> {
    let bad = || Error::invalid(format!("invalid port range '{s}': expected FIRST-LAST such as 61000-65535"));
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u16 = a.parse().map_err(|_| bad())?;
    let b: u16 = b.parse().map_err(|_| bad())?;
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_snat_ports_avoid_the_ephemeral_range() {
        let d = Settings::defaults((32768, 60999));
        assert_eq!((d.snat_port_min, d.snat_port_max), (61000, 65535));
        let d = Settings::defaults((40000, 65000));
        assert_eq!((d.snat_port_min, d.snat_port_max), (1024, 39999));
    }

    #[test]
    fn changes_are_checked() {
        let d = Settings::defaults((32768, 60999));
        let c = |r: &str| Changes { snat_ports: Some(r.into()), ..Default::default() };
        assert_eq!(d.apply(&c("20000-29999"), (32768, 60999)).unwrap().snat_port_min, 20000);
        let err = d.apply(&c("30000-40000"), (32768, 60999)).unwrap_err().to_string();
        assert!(err.contains("overlap the host's ephemeral ports 32768-60999"), "{err}");
        assert!(d.apply(&c("5-4"), (32768, 60999)).is_err());
        assert!(d.apply(&c("0-4"), (32768, 60999)).is_err());
        let zero = Changes { udp_timeout: Some(0), ..Default::default() };
        assert!(d.apply(&zero, (32768, 60999)).is_err());
    }

    #[test]
    fn the_snat_quota_is_one_to_the_most_a_claim_index_holds() {
        let d = Settings::defaults((32768, 60999));
        assert_eq!(d.snat_quota, 1024);
        let q = |n| d.apply(&Changes { snat_quota: Some(n), ..Default::default() }, (32768, 60999));
        assert_eq!(q(1).unwrap().snat_quota, 1);
        assert_eq!(q(65535).unwrap().snat_quota, 65535);
        for refused in [0, 65536] {
            let err = q(refused).unwrap_err().to_string();
            assert!(err.contains(&format!("SNAT quota {refused} is out of range")), "{err}");
        }
    }
}
