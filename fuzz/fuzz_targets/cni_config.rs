//! A CNI network configuration: any input is either refused with a code the spec or netpath
//! defines and a one-line message, or yields a configuration in a supported version.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match netpath::frontend::cni::parse_config(data) {
        Ok(config) => assert!(netpath::frontend::cni::SUPPORTED_VERSIONS.contains(&config.version.as_str())),
        Err(e) => {
            assert!([1, 6, 7].contains(&e.code), "code {}", e.code);
            assert!(!e.msg.is_empty() && !e.msg.contains('\n'), "{:?}", e.msg);
        }
    }
});
