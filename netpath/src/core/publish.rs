//! Published ports: checked against the host, written to `PORTMAP`, reached from the host
//! through the socket programs, which stay attached only while a port is published.

use crate::core::request::ipv4_addr;
use crate::error::{Field, Message};
use crate::kernel::ports;
use crate::{
    core::controller::Controller, error::Error, error::Result, state::store::EndpointRecord, types::port::Port,
};

impl Controller {
    /// Refuses host ports a host process already listens on or masqueraded connections leave
    /// from (the SNAT range), and host addresses the host does not have: the publication would
    /// silently steal or never see the traffic.
    pub(crate) async fn check_host_ports(&self, ports: &[Port]) -> Result<()> {
        if ports.is_empty() {
            return Ok(());
        }
        let addrs = self.nl.all_ipv4_addresses().await?;
        let snat = self.settings()?.snat_ports();
        for port in ports {
            if snat.contains(&port.host_port) {
                return Err(Error::conflict(
                    Message::from(format!("host port {}/{} of ", port.host_port, port.proto))
                        .and_field(Field::Publish)
                        .and(format!(
                            " {port} is in the SNAT port range {}-{}, where masqueraded connections get their answers; pick a port outside it (see `netpath datapath show`)",
                            snat.start(),
                            snat.end()
                        )),
                ));
            }
            if let Some(ip) = port.host_ip.map(|ip| ipv4_addr(Field::Publish, ip)).transpose()? {
                if !addrs.contains(&ip) {
                    return Err(Error::invalid(
                        Message::from(format!("host address {ip} of ")).and_field(Field::Publish).and(format!(
                            " {port} is not an address of this host; pick one of its addresses or leave it out"
                        )),
                    ));
                }
            }
            if ports::host_port_in_use(port) {
                return Err(Error::conflict(format!(
                    "host port {}/{} is in use by a process of this host; pick another",
                    port.host_port, port.proto
                )));
            }
        }
        Ok(())
    }

    /// Publishes the endpoint's ports, with the host addresses they answer on.
    pub(crate) async fn publish(&mut self, ep: &EndpointRecord) -> Result<()> {
        if ep.ports.is_empty() {
            return Ok(());
        }
        self.refresh_host_addrs().await?;
        let dp = self.datapath()?;
        dp.publish(ep.ip, &ep.ports)?;
        dp.attach_sock_programs()
    }

    /// Writes the host's current addresses to `HOST_ADDRS`: where ports published on every
    /// address answer, and how the datapath tells the host's own addresses from the outside
    /// when the routing lookup is unavailable (see the datapath's `route_into`).
    pub(crate) async fn refresh_host_addrs(&mut self) -> Result<()> {
        let addrs = self.nl.all_ipv4_addresses().await?;
        self.datapath()?.set_host_addrs(&addrs)
    }

    /// Every published port, with its endpoint.
    pub fn ports(&self) -> Result<Vec<(EndpointRecord, Port)>> {
        let endpoints = self.store.endpoints(None)?;
        Ok(endpoints.into_iter().flat_map(|ep| ep.ports.clone().into_iter().map(move |p| (ep.clone(), p))).collect())
    }

    /// The socket programs see every connect() on the machine: none without a published port.
    /// Checked under the lock, so a concurrent publish is not left without them.
    pub(crate) fn detach_sock_programs_if_unused(&mut self) -> Result<()> {
        let _lock = self.datapath()?.lock()?;
        if self.store.has_published_ports()? { Ok(()) } else { self.datapath()?.detach_sock_programs() }
    }
}
