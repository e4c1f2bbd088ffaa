//! Addresses and routes over netlink: a container's address and default route, the host's
//! addresses and routes that IPAM and the datapath must know.
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::{
    RouteMessageBuilder,
    packet_route::{
        address::AddressAttribute,
        route::{RouteAddress, RouteAttribute, RouteType},
    },
};

use crate::{error::Context, error::Result, types::net::Ipv4Net};

use super::Netlink;

impl Netlink {
    pub async fn add_address(&self, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<()> {
        self.handle
            .address()
            .add(index, IpAddr::V4(ip), prefix)
            .execute()
            .await
            .context(|| format!("cannot add address {ip}/{prefix}"))
    }

    pub async fn add_default_route(&self, gateway: Ipv4Addr) -> Result<()> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gateway).build();
        self.handle.route().add(route).execute().await.context(|| format!("cannot add default route via {gateway}"))
    }

    /// The destinations of the IPv4 unicast routes in every table but the local one, except
    /// default routes: what a new subnet must not overlap.
    pub async fn ipv4_routes(&self) -> Result<Vec<Ipv4Net>> {
        let mut routes = self.handle.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute();
        let mut out = Vec::new();
        while let Some(route) = routes.try_next().await.context(|| "cannot list routes")? {
            let len = route.header.destination_prefix_length;
            if route.header.kind != RouteType::Unicast || len == 0 {
                continue;
            }
            for attr in &route.attributes {
                if let RouteAttribute::Destination(RouteAddress::Inet(dst)) = attr {
                    if let Some(net) = Ipv4Net::from_octets(dst.octets(), len) {
                        out.push(net);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The device of the IPv4 default route of the main table with the lowest metric (the one
    /// the kernel uses), if there is one.
    pub async fn default_route_device(&self) -> Result<Option<u32>> {
        const RT_TABLE_MAIN: u32 = 254;
        let mut routes = self.handle.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute();
        let mut best: Option<(u32, u32)> = None;
        while let Some(route) = routes.try_next().await.context(|| "cannot list routes")? {
            if route.header.destination_prefix_length != 0 || route.header.kind != RouteType::Unicast {
                continue;
            }
            let attr = |f: fn(&RouteAttribute) -> Option<u32>| route.attributes.iter().find_map(f);
            let table = attr(|a| if let RouteAttribute::Table(t) = a { Some(*t) } else { None })
                .unwrap_or(u32::from(route.header.table));
            let metric = attr(|a| if let RouteAttribute::Priority(p) = a { Some(*p) } else { None }).unwrap_or(0);
            let oif = attr(|a| if let RouteAttribute::Oif(i) = a { Some(*i) } else { None });
            if let (RT_TABLE_MAIN, Some(oif)) = (table, oif) {
                if best.is_none_or(|(m, _)| metric < m) {
                    best = Some((metric, oif));
                }
            }
        }
        Ok(best.map(|(_, oif)| oif))
    }

    /// Every IPv4 address of the namespace.
    pub async fn all_ipv4_addresses(&self) -> Result<Vec<Ipv4Addr>> {
        self.addresses(self.handle.address().get()).await
    }

    /// The interface's IPv4 addresses, primary first.
    pub async fn ipv4_addresses(&self, index: u32) -> Result<Vec<Ipv4Addr>> {
        self.addresses(self.handle.address().get().set_link_index_filter(index)).await
    }

    async fn addresses(&self, request: rtnetlink::AddressGetRequest) -> Result<Vec<Ipv4Addr>> {
        let mut addrs = request.execute();
        let mut out = Vec::new();
        while let Some(msg) = addrs.try_next().await.context(|| "cannot list addresses")? {
            for attr in &msg.attributes {
                if let AddressAttribute::Local(IpAddr::V4(ip)) = attr {
                    out.push(*ip);
                }
            }
        }
        Ok(out)
    }
}
