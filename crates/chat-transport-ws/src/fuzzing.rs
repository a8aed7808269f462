//! Entry points for fuzzing (only with the `fuzzing` feature): the
//! transport's request parsing and routing, and its WebSocket frame
//! decoder ([`ws_frames`]), on arbitrary bytes, without a socket or an
//! engine.
//!
//! Used by `fuzz/fuzz_targets/http_request.rs`:
//!
//! ```
//! chat_transport_ws::fuzzing::http_request(
//!     b"POST /api/rooms/dm%3Aa%3Ab/files?name=x%20y.png HTTP/1.1\r\n\
//!       Authorization: Bearer abc\r\nContent-Length: 3\r\n\r\nabc",
//! );
//! ```

use hyper::header::HeaderValue;
use hyper::{Method, Uri};

use crate::api::{self, JsonBody, Route};
use crate::rest::{self, Credentials, NewMessage, NewRoom, ReadMark, UserRef};

/// The values of the headers named `name`.
fn header<'a>(
    headers: &'a [httparse::Header<'a>],
    name: &'static str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// Most headers parsed, as in hyper's default.
const MAX_HEADERS: usize = 100;

/// Parses `data` as an HTTP/1.1 request the way the server sees one: the
/// request line and headers with `httparse` (hyper's parser), the target
/// as a [`Uri`], then this crate's own logic: the route with its
/// percent-decoded path segments and query, the bearer token, the
/// `Content-Length` of uploads, the JSON body the route reads, and the
/// `Content-Disposition` built from an upload's file name.
///
/// Panics only when an invariant breaks (a `Content-Disposition` that is
/// not a valid header value); any input is otherwise fine.
pub fn http_request(data: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let body_at = match req.parse(data) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return,
    };
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let Ok(uri) = target.parse::<Uri>() else {
        return;
    };
    let path = uri.path();
    if !path.starts_with("/api/") {
        return;
    }
    for value in header(req.headers, "authorization") {
        let _ = api::bearer(value);
    }
    let lengths: Vec<&[u8]> = header(req.headers, "content-length").collect();
    let _ = api::content_length(&lengths);
    let Ok(route) = api::parse(&method, path, uri.query().unwrap_or("")) else {
        return;
    };
    let body = &data[body_at..];
    match route.json_body() {
        Some(JsonBody::Credentials) => {
            let _ = rest::parse_json::<Credentials>(body);
        }
        Some(JsonBody::NewRoom) => {
            let _ = rest::parse_json::<NewRoom>(body);
        }
        Some(JsonBody::UserRef) => {
            let _ = rest::parse_json::<UserRef>(body);
        }
        Some(JsonBody::ReadMark) => {
            let _ = rest::parse_json::<ReadMark>(body);
        }
        Some(JsonBody::NewMessage) => {
            let _ = rest::parse_json::<NewMessage>(body);
        }
        None => {}
    }
    if let Route::Upload(p) = route {
        let name = chat_core::files::sanitize_name(&p.name);
        let d: HeaderValue = crate::files::disposition(&name, false);
        assert!(
            d.to_str()
                .is_ok_and(|s| s.starts_with("attachment; filename=")),
            "bad Content-Disposition for {name:?}"
        );
    }
}

/// Feeds `chunks` to the server's WebSocket frame decoder one after
/// another, as successive reads would arrive, and returns what it made of
/// them: each message or control frame (`Debug`-printed), then the error
/// that stopped it, if any. Bytes of an incomplete last frame give nothing.
///
/// Used by `fuzz/fuzz_targets/ws_frames.rs`, which checks that the answer
/// does not depend on how the bytes were split.
///
/// ```
/// // A masked text frame "hi" (mask 0), cut inside its header.
/// let (frames, error) = chat_transport_ws::fuzzing::ws_frames(
///     &[&[0x81, 0x82, 0, 0], &[0, 0, b'h', b'i']],
///     1024,
/// );
/// assert_eq!(frames.len(), 1);
/// assert!(error.is_none());
/// ```
pub fn ws_frames(chunks: &[&[u8]], max_message: usize) -> (Vec<String>, Option<String>) {
    let mut dec = crate::frame::Decoder::new(max_message);
    let mut frames = Vec::new();
    for chunk in chunks {
        dec.push(chunk);
        loop {
            match dec.next() {
                Ok(Some(frame)) => frames.push(format!("{frame:?}")),
                Ok(None) => break,
                Err(e) => return (frames, Some(e.to_string())),
            }
        }
    }
    (frames, None)
}
