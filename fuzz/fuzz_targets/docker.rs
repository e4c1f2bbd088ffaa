//! The Docker plugin API's requests: any method path and body is parsed into a typed request
//! or refused, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use netpath::frontend::docker;

const METHODS: &[&str] = &[
    "/Plugin.Activate",
    "/NetworkDriver.CreateNetwork",
    "/NetworkDriver.DeleteNetwork",
    "/NetworkDriver.CreateEndpoint",
    "/NetworkDriver.EndpointOperInfo",
    "/NetworkDriver.Join",
    "/NetworkDriver.Leave",
    "/NetworkDriver.ProgramExternalConnectivity",
    "/IpamDriver.RequestPool",
    "/IpamDriver.RequestAddress",
    "/IpamDriver.ReleaseAddress",
    "/Unknown.Method",
];

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else { return };
    let _ = docker::parse(METHODS[usize::from(which) % METHODS.len()], body);
});
