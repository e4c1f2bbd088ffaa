//! The resolver's queries, by what became of them, counted where they are answered and read
//! at a scrape: atomics, so the resolver's tasks never wait for a scrape or for each other.
use std::sync::atomic::{AtomicU64, Ordering};

use super::text::{Exposition, Kind};

const QUERIES: &str = "netpath_dns_queries_total";

/// What became of a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryResult {
    /// A name of the asker's networks, with its records.
    Answered,
    /// A name of the asker's networks, without a record of the type asked.
    NoData,
    NxDomain,
    /// The asker is no endpoint.
    Refused,
    /// Not a query netpath can read.
    Malformed,
    /// Handed to the upstreams, which answered.
    Forwarded,
    /// Handed to the upstreams, none of which answered (the client got `SERVFAIL`).
    UpstreamFailed,
    /// Too many queries were with the upstreams already (the client got `SERVFAIL`).
    Busy,
}

impl QueryResult {
    const ALL: [QueryResult; 8] = [
        Self::Answered,
        Self::NoData,
        Self::NxDomain,
        Self::Refused,
        Self::Malformed,
        Self::Forwarded,
        Self::UpstreamFailed,
        Self::Busy,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::NoData => "nodata",
            Self::NxDomain => "nxdomain",
            Self::Refused => "refused",
            Self::Malformed => "malformed",
            Self::Forwarded => "forwarded",
            Self::UpstreamFailed => "upstream_failed",
            Self::Busy => "busy",
        }
    }
}

#[derive(Default)]
pub struct DnsQueries {
    counts: [AtomicU64; QueryResult::ALL.len()],
}

impl DnsQueries {
    pub fn record(&self, result: QueryResult) {
        self.counts[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn write(&self, page: &mut Exposition) {
        page.family(
            QUERIES,
            Kind::Counter,
            "DNS queries containers sent the daemon's resolver, by what became of them.",
        );
        for result in QueryResult::ALL {
            page.sample(QUERIES, &[("result", result.label())], self.counts[result as usize].load(Ordering::Relaxed));
        }
    }
}
