//! How the Docker driver words the core's errors: each part of a request by `docker`'s flag or
//! the driver's `-o` option.
use std::borrow::Cow;

use crate::error::Field;

/// How the Docker driver names each part of a request: by `docker`'s flag or the driver's
/// `-o` option.
pub fn option(field: Field) -> Cow<'static, str> {
    Cow::Borrowed(match field {
        Field::Subnet => "--subnet",
        Field::Gateway => "--gateway",
        Field::Bridge => "-o bridge",
        Field::Mtu => "-o mtu",
        Field::Uplink => "-o uplink",
        Field::Xdp => "-o xdp",
        Field::EndpointId => "the endpoint id",
        Field::Ip => "--ip",
        Field::Mac => "--mac-address",
        Field::Ifname => "the interface name",
        Field::Publish => "-p",
        Field::Force => "--force",
        // Docker serves its containers' names itself and passes none to the driver.
        Field::Name => "the container name",
        Field::Alias => "--network-alias",
    })
}
