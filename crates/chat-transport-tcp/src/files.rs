//! Client-side helpers for the file frames: chunk encoding and decoding,
//! and a safe local name for a downloaded file.
//!
//! Over frames a file travels in chunks of at most the `chunk_bytes` that
//! `upload_ready` announces, base64-encoded (standard alphabet, padded) in
//! `upload_chunk` and `file_chunk` frames:
//!
//! ```
//! use chat_core::ClientFrame;
//! use chat_transport_tcp::files;
//!
//! let frame = files::upload_chunk(1, b"hello");
//! let ClientFrame::UploadChunk { data, .. } = &frame else { unreachable!() };
//! assert_eq!(data, "aGVsbG8=");
//! assert_eq!(files::decode_chunk(data)?, b"hello");
//! assert_eq!(files::local_name("../../etc/passwd").as_deref(), Some("passwd"));
//! # Ok::<(), chat_transport_tcp::Error>(())
//! ```

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chat_core::ClientFrame;

use crate::Error;

/// Longest name [`local_name`] returns, in bytes.
pub const MAX_LOCAL_NAME_BYTES: usize = 128;

/// The `upload_chunk` frame carrying `data` for `upload`.
pub fn upload_chunk(upload: u64, data: &[u8]) -> ClientFrame {
    ClientFrame::UploadChunk {
        upload,
        data: STANDARD.encode(data),
    }
}

/// The bytes of a `file_chunk` frame's `data`.
pub fn decode_chunk(data: &str) -> Result<Vec<u8>, Error> {
    STANDARD
        .decode(data.as_bytes())
        .map_err(|_| Error::BadChunk)
}

/// A name under which a file named `name` by the server can be written in
/// the current folder: one plain path component (the last one of `name`),
/// without control characters, characters some file systems refuse, or
/// leading dots, at most [`MAX_LOCAL_NAME_BYTES`]. `None` when nothing
/// usable is left.
///
/// The server sanitises names already; a client does it again because a
/// name from the network must never choose where a file is written.
pub fn local_name(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base
        .chars()
        .map(|c| {
            if c.is_control() || ":*?\"<>|".contains(c) {
                '_'
            } else {
                c
            }
        })
        .collect();
    let trimmed = cleaned.trim().trim_start_matches('.').trim();
    let mut out = String::new();
    for c in trimmed.chars() {
        if out.len() + c.len_utf8() > MAX_LOCAL_NAME_BYTES {
            break;
        }
        out.push(c);
    }
    // Trailing dots and spaces are dropped by some file systems, which
    // could make two names the same file.
    let out = out.trim_end_matches(['.', ' ']).to_owned();
    let mut parts = std::path::Path::new(&out).components();
    match (parts.next(), parts.next()) {
        (Some(std::path::Component::Normal(_)), None) => Some(out),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_and_bad_base64_is_an_error() {
        let bytes: Vec<u8> = (0..=255).collect();
        let ClientFrame::UploadChunk { upload, data } = upload_chunk(7, &bytes) else {
            unreachable!()
        };
        assert_eq!(upload, 7);
        assert_eq!(decode_chunk(&data).unwrap(), bytes);
        assert!(matches!(decode_chunk("not base64!"), Err(Error::BadChunk)));
        // Padding is required, as the server sends it.
        assert!(decode_chunk("aGVsbG8").is_err());
    }

    #[test]
    fn local_names_are_one_plain_component() {
        for (name, want) in [
            ("plan.pdf", Some("plan.pdf")),
            ("../../etc/passwd", Some("passwd")),
            ("..\\..\\boot.ini", Some("boot.ini")),
            ("/abs/x.png", Some("x.png")),
            (".bashrc", Some("bashrc")),
            ("a\u{1b}[2Jb.txt", Some("a_[2Jb.txt")),
            ("c:evil.txt", Some("c_evil.txt")),
            ("notes.txt. . ", Some("notes.txt")),
            ("..", None),
            (".", None),
            ("", None),
            ("dir/", None),
            ("   ", None),
        ] {
            assert_eq!(local_name(name).as_deref(), want, "{name:?}");
        }
        let long = local_name(&"é".repeat(200)).unwrap();
        assert!(long.len() <= MAX_LOCAL_NAME_BYTES);
    }
}
