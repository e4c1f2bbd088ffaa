//! Values every layer speaks in, with no I/O: subnets and addresses of either family, MAC
//! addresses, published ports, who made an endpoint.
pub mod creator;
pub mod hook;
pub mod identity;
pub mod mac;
pub mod name;
pub mod net;
pub mod port;
