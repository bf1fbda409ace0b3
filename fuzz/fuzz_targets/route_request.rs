//! The proxy's route table and request routing: a `PUT /routes` body, then a request head
//! (see `cutover_proxy::fuzzing::route_request` for the format and the invariants).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cutover_proxy::fuzzing::route_request(data);
});
