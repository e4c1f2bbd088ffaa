//! `netpath monitor`: the datapath's drop events, as they happen.
use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use netpath_common::{DropEvent, drop_reason};
use serde::Serialize;

use crate::{core::controller::Controller, error::Result, view::output::Format};

#[derive(Debug, Serialize)]
pub struct Drop {
    pub reason: &'static str,
    pub ifindex: u32,
    pub source: Ipv4Addr,
    pub destination: Ipv4Addr,
    pub protocol: u8,
    pub length: u32,
}

impl From<&DropEvent> for Drop {
    fn from(e: &DropEvent) -> Self {
        Drop {
            reason: drop_reason::name(e.reason),
            ifindex: e.ifindex,
            source: Ipv4Addr::from(e.saddr.to_ne_bytes()),
            destination: Ipv4Addr::from(e.daddr.to_ne_bytes()),
            protocol: e.protocol,
            length: e.len,
        }
    }
}

/// How often the ring buffer is drained; drops are rare, so polling is cheap enough.
const POLL: Duration = Duration::from_millis(100);

/// Prints drop events until `duration` has passed (or forever), one per line.
pub fn run(ctl: &mut Controller, duration: Option<Duration>, format: Format) -> Result<()> {
    let mut events = ctl.datapath()?.events()?;
    let start = Instant::now();
    while duration.is_none_or(|d| start.elapsed() < d) {
        while let Some(item) = events.next() {
            if item.len() < size_of::<DropEvent>() {
                continue;
            }
            let event: DropEvent = bytemuck::pod_read_unaligned(&item[..size_of::<DropEvent>()]);
            let drop = Drop::from(&event);
            match format {
                Format::Json => println!("{}", serde_json::to_string(&drop).unwrap_or_default()),
                Format::Text => println!(
                    "drop {:<16} {} -> {} proto {} len {} on ifindex {}",
                    drop.reason, drop.source, drop.destination, drop.protocol, drop.length, drop.ifindex
                ),
            }
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}
