//! netpath's eBPF programs: one module per attach point, shared modules for maps, packet
//! access and counters.
#![no_std]
#![no_main]

mod conntrack;
mod container_nat;
mod counters;
mod dns;
mod forward;
mod frame;
mod from_container;
mod from_uplink;
mod icmp_error;
mod maps;
mod nat;
mod packet;
mod portmap;
mod reference;
mod snat_quota;
mod sock;
mod uplink;
mod xdp_uplink;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach this; it only satisfies `no_std`.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
