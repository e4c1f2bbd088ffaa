//! `--subnet`: an accepted subnet of either family has no host bits and prints back to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use netpath::types::net::IpNet;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(net) = text.parse::<IpNet>() {
        match net {
            IpNet::V4(n) => assert_eq!(u32::from(n.addr()) & !u32::from(n.mask()), 0),
            IpNet::V6(n) => assert_eq!(u128::from(n.addr()) & !u128::from(n.mask()), 0),
        }
        assert_eq!(net.to_string().parse::<IpNet>().unwrap(), net);
    }
});
