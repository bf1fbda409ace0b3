//! The proxy's header handling on the forwarding path: the smuggling check and hop-by-hop
//! removal (see `cutover_proxy::fuzzing::forward_headers`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cutover_proxy::fuzzing::forward_headers(data);
});
