//! `--subnet`: an accepted subnet has no host bits and prints back to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use netpath::cidr::{self, Ipv4Net};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(net) = text.parse::<Ipv4Net>() {
        assert_eq!(u32::from(net.addr()) & !cidr::mask(net.prefix()), 0);
        assert_eq!(net.to_string().parse::<Ipv4Net>().unwrap(), net);
    }
});
