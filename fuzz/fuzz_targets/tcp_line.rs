//! The TLS TCP transport's line reader, over input split at up to four
//! fuzzer-chosen points (with the read future cancelled before every read):
//! never panics, never stalls, returns lines of at most the limit without a
//! `\n`, and returns exactly the lines of the input, in order: each
//! `\n`-terminated line without one `\r` before the `\n`, blank lines
//! skipped, stopping with `TooLong` at a line over the limit. The one case
//! that depends on the split is a line exactly at the limit once its `\r`
//! is dropped: it may be refused before its `\n` arrives.
#![no_main]

use chat_transport_tcp::fuzzing::{read_lines, LineError};
use libfuzzer_sys::fuzz_target;

#[path = "split.rs"]
mod split;

fuzz_target!(|input: (u8, [u16; 4], &[u8])| {
    let (limit, cuts, data) = input;
    // Limits on both sides of the reader's 2 KiB read size.
    let max = usize::from(limit) * 17;
    let chunks = split::at_cuts(data, &cuts);

    let got = read_lines(&chunks, max);
    for item in &got {
        match item {
            Ok(line) => {
                assert!(line.len() <= max, "line of {} over {max}", line.len());
                assert!(!line.contains(&b'\n'), "line with a newline");
            }
            Err(LineError::TooLong) => {}
            Err(e) => panic!("reader failed on in-memory input: {e:?}"),
        }
    }
    if got.iter().any(Result::is_err) {
        assert!(got.last().is_some_and(Result::is_err), "error not last");
    }

    // The reference: split at every `\n`.
    let mut segments: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let last = segments.pop().unwrap_or_default();
    let mut got = got.into_iter();
    for raw in segments {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.len() > max {
            assert_eq!(got.next(), Some(Err(LineError::TooLong)));
            assert_eq!(got.next(), None);
            return;
        }
        let blank = line.iter().all(u8::is_ascii_whitespace);
        if raw.len() > max {
            // At the limit without its `\r`: refused (and nothing follows),
            // or accepted. A blank one leaves no trace when accepted, so
            // the comparison cannot go on past it.
            if blank {
                return;
            }
            match got.next() {
                Some(Ok(l)) => assert_eq!(l, line),
                Some(Err(LineError::TooLong)) => {
                    assert_eq!(got.next(), None);
                    return;
                }
                other => panic!("line at the limit: got {other:?}"),
            }
            continue;
        }
        if !blank {
            assert_eq!(got.next(), Some(Ok(line.to_vec())));
        }
    }
    if last.len() > max {
        assert_eq!(got.next(), Some(Err(LineError::TooLong)));
    }
    // An incomplete last line within the limit is dropped at the end.
    assert_eq!(got.next(), None);
});
