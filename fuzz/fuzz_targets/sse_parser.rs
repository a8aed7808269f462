//! The OpenAI bot's server-sent-events parser never panics, and splitting
//! the same bytes at any point yields the same events.
#![no_main]

use chat_llm_openai::sse::SseParser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u16, &[u8])| {
    let (split, data) = input;
    let mut whole = Vec::new();
    let r1 = SseParser::new(4096).push(data, &mut whole);
    let at = usize::from(split) % (data.len() + 1);
    let mut parts = Vec::new();
    let mut p = SseParser::new(4096);
    let r2 = p
        .push(&data[..at], &mut parts)
        .and_then(|()| p.push(&data[at..], &mut parts));
    if r1.is_ok() && r2.is_ok() {
        assert_eq!(whole, parts);
    }
});
