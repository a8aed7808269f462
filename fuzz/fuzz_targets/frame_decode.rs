//! The client frame decoder never panics, and whatever it accepts encodes
//! back and decodes to the same request.
#![no_main]

use chat_core::Codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let codec = Codec::new(64 * 1024);
    if let Ok(req) = codec.decode(data) {
        let again = Codec::encode_request(&req);
        let back = codec.decode(&again).expect("a re-encoded request decodes");
        assert_eq!(back, req);
    }
    // Server frames are decoded by clients: they must not panic either.
    let _ = Codec::decode_server(data);
});
