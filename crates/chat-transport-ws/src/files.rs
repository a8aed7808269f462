//! File sharing over HTTP: uploads streamed to the engine's vault, and
//! downloads streamed from it. Access, size, type and quota rules are the
//! engine's ([`Engine::begin_upload`](chat_core::Engine::begin_upload),
//! [`Engine::file_for`](chat_core::Engine::file_for)); this module moves
//! bytes.
//!
//! # `POST /api/rooms/{room}/files?name=NAME[&body=TEXT][&client_id=ID]`
//!
//! The request body is the file's raw bytes and `Content-Length` is
//! required (411 without it, or with `Transfer-Encoding`): it is the
//! declared size, checked against the limits, the room's access rules
//! (404 for a non-member), the name's type and the uploader's quota
//! *before* a byte of the body is read. The body then goes to disk piece
//! by piece as hyper receives it, never whole in memory
//! ([`WsSettings::rest_body_limit`](crate::WsSettings::rest_body_limit)
//! does not apply; the engine's file size limit does). Content that does
//! not sniff as its extension's type is refused with 400 as soon as its
//! first bytes show it. A client that disconnects, stalls for
//! [`WsSettings::upload_read_timeout`](crate::WsSettings::upload_read_timeout),
//! or sends a refused body leaves nothing behind: the engine's
//! `PendingUpload` is dropped and deletes its temporary file. Success: 201
//! `{room, seq, client_id?, duplicate, file: {id, name, size, mime}}`, and
//! the room gets a message carrying the file.
//!
//! # `GET /api/files/{id}`
//!
//! Streams the file from disk with `Content-Type` (the sniffed type),
//! `Content-Length`, `Content-Disposition` (`inline` for images, else
//! `attachment`; an ASCII `filename` and a UTF-8 `filename*`),
//! `X-Content-Type-Options: nosniff`, a sandboxing CSP and an `ETag`
//! (`If-None-Match` answers 304). 404 unless the bearer may read the
//! file's room.
//!
//! # Why only the `Authorization` header, no `?token=`?
//!
//! A token in a URL ends up in browser history, proxies' logs and
//! `Referer` headers. The web client fetches files with the header and
//! shows them through `blob:` URLs instead, which costs one fetch into
//! memory per file shown (files are at most 10 MiB by default).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use chat_core::{ErrorCode, FileRecord};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_SECURITY_POLICY,
    CONTENT_TYPE, ETAG, EXPECT, IF_NONE_MATCH, TRANSFER_ENCODING,
};
use hyper::{Request, Response, StatusCode};
use serde_json::json;
use tokio::io::{AsyncRead, ReadBuf};

use crate::api::{self, UploadParams};
use crate::http::{self, Body};
use crate::rest::{fail, Fail, Reply};
use crate::server::Shared;

/// `POST /api/rooms/{room}/files`: streams the body into the vault.
pub(crate) async fn upload(
    shared: &Shared,
    req: Request<Incoming>,
    user: &str,
    p: UploadParams,
) -> Reply {
    let headers = req.headers();
    let lengths: Vec<&[u8]> = headers
        .get_all(CONTENT_LENGTH)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let declared = api::content_length(&lengths)?;
    let Some(declared) = declared.filter(|_| !headers.contains_key(TRANSFER_ENCODING)) else {
        return Ok(http::error_with_status(
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            "send the file with a Content-Length (the declared size), not chunked",
        ));
    };
    // A client waiting for `100 Continue` has sent nothing to drain.
    let waits = headers
        .get(EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let mut body = req.into_body();
    let Ok(_slot) = shared.uploads.try_acquire() else {
        shared.stats.uploads_failed.inc();
        let e = fail(ErrorCode::ServerBusy, "too many uploads in progress");
        return refuse(shared, body, waits, declared, e);
    };
    let engine = &shared.engine;
    let mut pending = match engine.begin_upload(user, &p.room, &p.name, declared).await {
        Ok(pending) => pending,
        Err(e) => {
            shared.stats.uploads_failed.inc();
            return refuse(shared, body, waits, declared, e.into());
        }
    };
    let timeout = shared.settings.upload_read_timeout;
    loop {
        let failure = match tokio::time::timeout(timeout, body.frame()).await {
            Ok(None) => break,
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => match pending.write(&data).await {
                    Ok(()) => continue,
                    Err(e) => Fail::from(e),
                },
                Err(_trailers) => continue,
            },
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, received = pending.received(), "upload interrupted");
                drop(pending);
                shared.stats.uploads_failed.inc();
                return Err(fail(ErrorCode::BadFrame, "the upload was interrupted"));
            }
            Err(_) => {
                tracing::info!(received = pending.received(), "upload stalled");
                drop(pending);
                shared.stats.uploads_failed.inc();
                return Err(fail(ErrorCode::Idle, "the upload stalled"));
            }
        };
        // Dropping the upload deletes what was written.
        let left = declared.saturating_sub(pending.received());
        drop(pending);
        shared.stats.uploads_failed.inc();
        return refuse(shared, body, waits, left, failure);
    }
    match engine.finish_upload(pending, p.body, p.client_id).await {
        Ok(appended) => {
            shared.stats.uploads.inc();
            let m = appended.message;
            let res = crate::rest::ack(
                m.room,
                m.seq,
                m.client_id,
                appended.duplicate,
                m.file.as_ref(),
            );
            Ok(res)
        }
        Err(e) => {
            shared.stats.uploads_failed.inc();
            Err(e.into())
        }
    }
}

/// Answers a refused upload at once, and reads the rest of its body in
/// the background (at most
/// [`upload_drain_bytes`](crate::WsSettings::upload_drain_bytes), each
/// piece within [`upload_read_timeout`](crate::WsSettings::upload_read_timeout)),
/// discarding it: a client still sending then reads the answer instead of
/// a connection reset, and one that sent it all keeps its connection. A
/// client waiting for `100 Continue` has sent nothing, and is sent nothing.
fn refuse(shared: &Shared, mut body: Incoming, waits: bool, left: u64, e: Fail) -> Reply {
    if !waits && left > 0 && !body.is_end_stream() {
        let (limit, idle) = (
            shared.settings.upload_drain_bytes,
            shared.settings.upload_read_timeout,
        );
        tokio::spawn(async move {
            let mut seen = 0u64;
            while let Ok(Some(Ok(frame))) = tokio::time::timeout(idle, body.frame()).await {
                seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                if seen >= limit {
                    break;
                }
            }
        });
    }
    Err(e)
}

/// `GET /api/files/{id}`: streams the file.
pub(crate) async fn download(
    shared: &Shared,
    req: &Request<Incoming>,
    user: &str,
    id: &str,
) -> Reply {
    let engine = &shared.engine;
    let rec = engine.file_for(user, id).await?;
    let etag = HeaderValue::from_str(&format!("\"{}\"", rec.file.id))
        .map_err(|_| fail(ErrorCode::NotFound, "no such file"))?;
    let fresh = req
        .headers()
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == etag.to_str().unwrap_or("") || t.trim() == "*");
    if fresh {
        let mut res = http::status(StatusCode::NOT_MODIFIED);
        res.headers_mut().insert(ETAG, etag);
        return Ok(res);
    }
    let path = engine.file_path(&rec)?;
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(file = %rec.file.id, error = %e, "stored file cannot be opened");
            return Err(fail(ErrorCode::StoreFailed, "the file cannot be read"));
        }
    };
    shared.stats.downloads.inc();
    let body = FileBody {
        file,
        remaining: rec.file.size,
        buf: Vec::new(),
        chunk: shared.settings.download_chunk_bytes.max(1),
    };
    let mut res = Response::new(BodyExt::boxed_unsync(body));
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, content_type(&rec));
    h.insert(CONTENT_LENGTH, HeaderValue::from(rec.file.size));
    h.insert(
        CONTENT_DISPOSITION,
        disposition(&rec.file.name, is_image(&rec.file.mime)),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    // Revalidated every time: access follows the room and may end.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
    h.insert(ETAG, etag);
    Ok(res)
}

/// `GET /api/files`: whether file sharing is on, and its limits (for
/// clients to check before uploading).
pub(crate) fn limits(shared: &Shared) -> Response<Body> {
    let v = match shared.engine.file_settings() {
        None => json!({ "enabled": false }),
        Some(f) => {
            const EXTENSIONS: [&str; 12] = [
                "png", "jpg", "jpeg", "gif", "webp", "pdf", "txt", "md", "log", "csv", "json",
                "zip",
            ];
            let extensions: Vec<&str> = EXTENSIONS
                .into_iter()
                .filter(|e| {
                    chat_core::files::type_from_name(&format!("x.{e}"))
                        .is_some_and(|t| f.allowed_types.iter().any(|a| a == t))
                })
                .collect();
            json!({
                "enabled": true,
                "max_file_bytes": f.max_file_bytes,
                "allowed_types": f.allowed_types,
                "extensions": extensions,
            })
        }
    };
    http::json(StatusCode::OK, &v)
}

fn is_image(mime: &str) -> bool {
    matches!(
        mime,
        "image/png" | "image/jpeg" | "image/gif" | "image/webp"
    )
}

fn content_type(rec: &FileRecord) -> HeaderValue {
    let mime = if rec.file.mime == "text/plain" {
        "text/plain; charset=utf-8"
    } else {
        rec.file.mime.as_str()
    };
    HeaderValue::from_str(mime).unwrap_or(HeaderValue::from_static("application/octet-stream"))
}

/// `Content-Disposition` for a file name: an ASCII `filename` (quotes,
/// backslashes, controls and non-ASCII replaced by `_`) and the exact name
/// percent-encoded as `filename*` (RFC 6266 / RFC 8187).
pub(crate) fn disposition(name: &str, inline: bool) -> HeaderValue {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    let kind = if inline { "inline" } else { "attachment" };
    HeaderValue::from_str(&format!(
        "{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or(HeaderValue::from_static("attachment"))
}

/// A response body reading a file from disk in chunks, exactly
/// `remaining` bytes long.
struct FileBody {
    file: tokio::fs::File,
    remaining: u64,
    buf: Vec<u8>,
    chunk: usize,
}

impl hyper::body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = usize::try_from(this.remaining)
            .unwrap_or(usize::MAX)
            .min(this.chunk);
        this.buf.resize(want, 0);
        let mut rb = ReadBuf::new(&mut this.buf);
        match Pin::new(&mut this.file).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                if n == 0 {
                    this.remaining = 0;
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "stored file is shorter than its record",
                    ))));
                }
                this.remaining -= n as u64;
                let data = Bytes::copy_from_slice(&this.buf[..n]);
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dispositions() {
        let d = disposition("plan.pdf", false);
        assert_eq!(
            d.to_str().unwrap(),
            "attachment; filename=\"plan.pdf\"; filename*=UTF-8''plan.pdf"
        );
        let d = disposition("café \"x\".png", true);
        assert_eq!(
            d.to_str().unwrap(),
            "inline; filename=\"caf_ _x_.png\"; filename*=UTF-8''caf%C3%A9%20%22x%22.png"
        );
    }

    proptest! {
        #[test]
        fn any_name_gives_a_full_header(name in "\\PC{0,60}") {
            let d = disposition(&name, false);
            prop_assert!(d.to_str().unwrap().starts_with("attachment; filename=\""));
        }
    }
}
