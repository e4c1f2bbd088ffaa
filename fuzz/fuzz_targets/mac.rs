//! `--mac`: an accepted address is unicast, not zero, and prints back to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use netpath::types::mac as ipam;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(mac) = ipam::parse_mac(text) {
        assert!(mac[0] & 1 == 0 && mac != [0; 6]);
        assert_eq!(ipam::parse_mac(&ipam::format_mac(&mac)).unwrap(), mac);
    }
});
