//! Shared by the targets that feed a parser input in pieces, as successive
//! reads would.

/// `data` cut at the (sorted) positions the fuzzer chose, modulo its length.
pub fn at_cuts<'a>(data: &'a [u8], cuts: &[u16]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|&c| usize::from(c) % (data.len() + 1))
        .collect();
    at.sort_unstable();
    let mut chunks = Vec::new();
    let mut from = 0;
    for cut in at {
        chunks.push(&data[from..cut]);
        from = cut;
    }
    chunks.push(&data[from..]);
    chunks
}
