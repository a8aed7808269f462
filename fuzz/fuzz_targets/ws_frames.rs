//! The WebSocket transport's frame decoder, over input split at up to four
//! fuzzer-chosen points: never panics, and gives the same frames and the
//! same error however the bytes were split (a frame's header and payload
//! may arrive in any pieces).
#![no_main]

use chat_transport_ws::fuzzing::ws_frames;
use libfuzzer_sys::fuzz_target;

#[path = "split.rs"]
mod split;

fuzz_target!(|input: (u8, [u16; 4], &[u8])| {
    let (limit, cuts, data) = input;
    // Limits below and above the 7- and 16-bit payload lengths.
    let max = 1 + usize::from(limit) * 300;
    let chunks = split::at_cuts(data, &cuts);

    let whole = ws_frames(&[data], max);
    let pieces = ws_frames(&chunks, max);
    assert_eq!(whole, pieces, "the split changed what was decoded");
});
