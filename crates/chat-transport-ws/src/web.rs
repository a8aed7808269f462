//! The web client: static HTML, CSS and JavaScript embedded in the binary
//! (no build step, nothing fetched from elsewhere), served at `/`.
//!
//! `web/app.js` is the entry (connection, protocol, actions); it imports the
//! ES modules `state.js` (rooms and messages by seq), `view.js` (rendering),
//! `auth.js` (log in and out, token refresh), `bots.js` (streamed bot
//! replies, smart replies), `files.js` (uploads with
//! progress, attachments, the image viewer, a room's files), `notify.js`
//! (mention toasts and desktop notifications) and `util.js` (DOM helpers,
//! icons).

use hyper::header::{HeaderValue, CONTENT_SECURITY_POLICY};
use hyper::{Response, StatusCode};

use crate::http::{self, Body};

const INDEX: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const AUTH_JS: &str = include_str!("../web/auth.js");
const BOTS_JS: &str = include_str!("../web/bots.js");
const FILES_JS: &str = include_str!("../web/files.js");
const NOTIFY_JS: &str = include_str!("../web/notify.js");
const STATE_JS: &str = include_str!("../web/state.js");
const UTIL_JS: &str = include_str!("../web/util.js");
const VIEW_JS: &str = include_str!("../web/view.js");
const APP_CSS: &str = include_str!("../web/app.css");
const ICON: &str = include_str!("../web/icon.svg");

/// Only this origin's own files; the socket to this origin; shared images
/// as `blob:` URLs (fetched with the token in a header).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
                   connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The response for a web client path, if it is one.
pub(crate) fn file(path: &str) -> Option<Response<Body>> {
    let (content_type, body) = match path {
        "/" | "/index.html" => ("text/html; charset=utf-8", INDEX),
        "/app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "/auth.js" => ("text/javascript; charset=utf-8", AUTH_JS),
        "/bots.js" => ("text/javascript; charset=utf-8", BOTS_JS),
        "/files.js" => ("text/javascript; charset=utf-8", FILES_JS),
        "/notify.js" => ("text/javascript; charset=utf-8", NOTIFY_JS),
        "/state.js" => ("text/javascript; charset=utf-8", STATE_JS),
        "/util.js" => ("text/javascript; charset=utf-8", UTIL_JS),
        "/view.js" => ("text/javascript; charset=utf-8", VIEW_JS),
        "/app.css" => ("text/css; charset=utf-8", APP_CSS),
        "/icon.svg" | "/favicon.ico" => ("image/svg+xml", ICON),
        _ => return None,
    };
    let mut res = http::with_body(StatusCode::OK, content_type, body);
    res.headers_mut()
        .insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    res.headers_mut()
        .insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    Some(res)
}
