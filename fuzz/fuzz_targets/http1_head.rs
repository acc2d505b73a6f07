//! The HTTP/1.1 codec on what a client or an upstream can send: request heads (with the bytes
//! after them as a chunked body) and response heads. See `proxy::fuzzing` for the properties.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    proxy::fuzzing::request(data);
    proxy::fuzzing::response(data);
});
