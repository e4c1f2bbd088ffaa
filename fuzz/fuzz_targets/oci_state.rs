//! An OCI container state on a hook's stdin: parsed or refused with one line, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = netpath::frontend::oci::read_state(data) {
        assert!(!e.to_string().contains('\n'), "{e}");
    }
});
