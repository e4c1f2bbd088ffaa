//! `-p`: any input either fails with an error or yields aligned, non-zero port ranges.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = std::str::from_utf8(data) else { return };
    if let Ok(ports) = netpath::types::port::parse_publish(spec) {
        assert!(!ports.is_empty());
        let offset = i32::from(ports[0].container_port) - i32::from(ports[0].host_port);
        for p in &ports {
            assert!(p.host_port > 0 && p.container_port > 0);
            assert_eq!(i32::from(p.container_port) - i32::from(p.host_port), offset);
        }
    }
});
