//! The WebSocket transport's HTTP request handling (request line and
//! headers, routes, percent-decoding of room names and queries, bearer
//! tokens, Content-Length, REST JSON bodies, Content-Disposition of file
//! names) never panics on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    chat_transport_ws::fuzzing::http_request(data);
});
