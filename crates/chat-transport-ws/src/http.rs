//! Response helpers shared by the routes: JSON bodies, JSON errors and
//! static files.

use bytes::Bytes;
use chat_core::ErrorCode;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};

/// Every response body of the transport: whole (JSON, the web client) or
/// streamed (file downloads, see [`crate::files`]).
pub(crate) type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// A body held whole in memory.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub(crate) fn empty() -> Body {
    Body::default()
}

/// An empty response with this status.
pub(crate) fn status(status: StatusCode) -> Response<Body> {
    let mut res = Response::new(empty());
    *res.status_mut() = status;
    res
}

/// A response with a body and a content type.
pub(crate) fn with_body(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    res
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    with_body(status, "application/json", body)
}

/// A JSON error `{"error":{"code":...,"message":...}}` with the status of
/// its code; 401s carry `WWW-Authenticate: Bearer`.
pub(crate) fn error(code: ErrorCode, message: &str) -> Response<Body> {
    let status =
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error_with_status(status, code.as_str(), message)
}

/// A JSON error with an explicit status (for HTTP-level errors that have no
/// engine code, such as `method_not_allowed`).
pub(crate) fn error_with_status(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let mut res = json(
        status,
        &serde_json::json!({ "error": { "code": code, "message": message } }),
    );
    if status == StatusCode::UNAUTHORIZED {
        res.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    res
}

/// 404 for an unknown path.
pub(crate) fn no_route() -> Response<Body> {
    error_with_status(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// 405 for a known path with the wrong method.
pub(crate) fn wrong_method(allow: &'static str) -> Response<Body> {
    let mut res = error_with_status(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    );
    res.headers_mut()
        .insert(hyper::header::ALLOW, HeaderValue::from_static(allow));
    res
}
