//! Parsing of REST requests, with no I/O: the path and query of a request
//! under `/api/` become a [`Route`] with its decoded parameters, and the
//! `Authorization` and `Content-Length` headers are read here. Kept apart
//! from the handlers so that it can be unit-tested, property-tested and
//! fuzzed (the `fuzzing` feature) on arbitrary input.

use chat_core::ErrorCode;
use hyper::Method;

/// One REST endpoint with its decoded parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Signup,
    Login,
    Tokens,
    Session,
    Logout,
    Refresh,
    ListRooms,
    CreateRoom,
    Direct,
    Join(String),
    Leave(String),
    Invite(String),
    Read(String),
    Members(String),
    History {
        room: String,
        page: Page,
    },
    Send(String),
    Upload(UploadParams),
    ListFiles(String),
    Download(String),
    FileLimits,
    /// A known path with the wrong method: the `Allow` header.
    WrongMethod(&'static str),
    /// No such endpoint.
    NotFound,
}

/// `before`, `after` and `limit` of a history page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Page {
    pub(crate) before: Option<u64>,
    pub(crate) after: Option<u64>,
    pub(crate) limit: Option<u32>,
}

/// The query of `POST /api/rooms/{room}/files`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UploadParams {
    pub(crate) room: String,
    pub(crate) name: String,
    pub(crate) body: String,
    pub(crate) client_id: Option<String>,
}

/// The JSON body a route reads, if any.
#[cfg(feature = "fuzzing")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonBody {
    Credentials,
    NewRoom,
    UserRef,
    ReadMark,
    NewMessage,
}

#[cfg(feature = "fuzzing")]
impl Route {
    /// The JSON body this route reads.
    pub(crate) fn json_body(&self) -> Option<JsonBody> {
        Some(match self {
            Route::Signup | Route::Login | Route::Tokens => JsonBody::Credentials,
            Route::CreateRoom => JsonBody::NewRoom,
            Route::Direct | Route::Invite(_) => JsonBody::UserRef,
            Route::Read(_) => JsonBody::ReadMark,
            Route::Send(_) => JsonBody::NewMessage,
            _ => return None,
        })
    }
}

/// A request the parser refuses, with the engine error code to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

fn refused(code: ErrorCode, message: impl Into<String>) -> Refused {
    Refused {
        code,
        message: message.into(),
    }
}

/// The route of a request whose path starts with `/api/`. `query` is the
/// raw query string (without `?`).
pub(crate) fn parse(method: &Method, path: &str, query: &str) -> Result<Route, Refused> {
    let rest = path.strip_prefix("/api/").unwrap_or(path);
    let segments: Vec<String> = rest
        .split('/')
        .map(|s| percent_decode(s, false))
        .collect::<Result<_, _>>()?;
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let room = |r: &str| r.to_owned();
    let m = method;
    Ok(match seg.as_slice() {
        ["signup"] if m == Method::POST => Route::Signup,
        ["login"] if m == Method::POST => Route::Login,
        ["tokens"] if m == Method::POST => Route::Tokens,
        ["direct"] if m == Method::POST => Route::Direct,
        ["signup" | "login" | "tokens" | "direct"] => Route::WrongMethod("POST"),
        ["session"] => match *m {
            Method::GET => Route::Session,
            Method::DELETE => Route::Logout,
            _ => Route::WrongMethod("GET, DELETE"),
        },
        ["session", "refresh"] => match *m {
            Method::POST => Route::Refresh,
            _ => Route::WrongMethod("POST"),
        },
        ["rooms"] => match *m {
            Method::GET => Route::ListRooms,
            Method::POST => Route::CreateRoom,
            _ => Route::WrongMethod("GET, POST"),
        },
        ["rooms", _, "join" | "leave" | "invite" | "read"] if m != Method::POST => {
            Route::WrongMethod("POST")
        }
        ["rooms", r, "join"] => Route::Join(room(r)),
        ["rooms", r, "leave"] => Route::Leave(room(r)),
        ["rooms", r, "invite"] => Route::Invite(room(r)),
        ["rooms", r, "read"] => Route::Read(room(r)),
        ["rooms", r, "members"] => match *m {
            Method::GET => Route::Members(room(r)),
            _ => Route::WrongMethod("GET"),
        },
        ["rooms", r, "messages"] => match *m {
            Method::GET => Route::History {
                room: room(r),
                page: history_query(query)?,
            },
            Method::POST => Route::Send(room(r)),
            _ => Route::WrongMethod("GET, POST"),
        },
        ["rooms", r, "files"] => match *m {
            Method::GET => Route::ListFiles(room(r)),
            Method::POST => Route::Upload(upload_query(r, query)?),
            _ => Route::WrongMethod("GET, POST"),
        },
        ["files"] => match *m {
            Method::GET => Route::FileLimits,
            _ => Route::WrongMethod("GET"),
        },
        ["files", id] => match *m {
            Method::GET => Route::Download((*id).to_owned()),
            _ => Route::WrongMethod("GET"),
        },
        _ => Route::NotFound,
    })
}

/// The decoded `key=value` pairs of a query string (`+` is a space).
pub(crate) fn query_pairs(query: &str) -> Result<Vec<(String, String)>, Refused> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(k, true)?, percent_decode(v, true)?))
        })
        .collect()
}

fn history_query(query: &str) -> Result<Page, Refused> {
    let mut page = Page::default();
    for (k, v) in query_pairs(query)? {
        let bad = || {
            refused(
                ErrorCode::Invalid,
                format!("query parameter {k} must be a non-negative integer"),
            )
        };
        match k.as_str() {
            "before" => page.before = Some(v.parse().map_err(|_| bad())?),
            "after" => page.after = Some(v.parse().map_err(|_| bad())?),
            "limit" => page.limit = Some(v.parse().map_err(|_| bad())?),
            _ => {}
        }
    }
    Ok(page)
}

fn upload_query(room: &str, query: &str) -> Result<UploadParams, Refused> {
    let mut p = UploadParams {
        room: room.to_owned(),
        name: String::new(),
        body: String::new(),
        client_id: None,
    };
    for (k, v) in query_pairs(query)? {
        match k.as_str() {
            "name" => p.name = v,
            "body" => p.body = v,
            "client_id" => p.client_id = Some(v),
            _ => {}
        }
    }
    if p.name.is_empty() {
        return Err(refused(
            ErrorCode::Invalid,
            "the file name is required: ?name=...",
        ));
    }
    Ok(p)
}

/// Percent-decodes one path segment or query component; in a query (`plus`
/// true) `+` stands for a space. The result must be UTF-8.
pub(crate) fn percent_decode(s: &str, plus: bool) -> Result<String, Refused> {
    let bad = || refused(ErrorCode::Invalid, "malformed percent-encoding");
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
                let hi = (hex[0] as char).to_digit(16).ok_or_else(bad)?;
                let lo = (hex[1] as char).to_digit(16).ok_or_else(bad)?;
                out.push(u8::try_from(hi * 16 + lo).map_err(|_| bad())?);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// The bearer token of an `Authorization` header value; anything but
/// `Bearer <token>` is refused with `invalid_token`.
pub(crate) fn bearer(value: &[u8]) -> Result<String, Refused> {
    let bad = || {
        refused(
            ErrorCode::InvalidToken,
            "Authorization must be `Bearer <token>`",
        )
    };
    let value = std::str::from_utf8(value).map_err(|_| bad())?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(bad)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(bad());
    }
    Ok(token.to_owned())
}

/// The declared body size of an upload: `Content-Length`, required
/// (`None` when missing), one plain decimal number.
pub(crate) fn content_length(values: &[&[u8]]) -> Result<Option<u64>, Refused> {
    let bad = || refused(ErrorCode::Invalid, "malformed Content-Length");
    let mut found: Option<u64> = None;
    for v in values {
        let s = std::str::from_utf8(v).map_err(|_| bad())?.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: u64 = s.parse().map_err(|_| bad())?;
        if found.is_some_and(|f| f != n) {
            return Err(bad());
        }
        found = Some(n);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("dm%3Aalice%3Abob", false).unwrap(),
            "dm:alice:bob"
        );
        assert_eq!(percent_decode("a+b", false).unwrap(), "a+b");
        assert_eq!(percent_decode("a+b%20c", true).unwrap(), "a b c");
        assert_eq!(percent_decode("caf%C3%A9", false).unwrap(), "café");
        assert!(percent_decode("bad%zz", false).is_err());
        assert!(percent_decode("cut%4", false).is_err());
        assert!(percent_decode("%+1", false).is_err());
        assert!(percent_decode("%ff", false).is_err());
    }

    #[test]
    fn routes() {
        let p = |m: Method, path: &str, q: &str| parse(&m, path, q);
        assert_eq!(
            p(
                Method::POST,
                "/api/rooms/dm%3Aa%3Ab/files",
                "name=x%20y.png&body=hi+there"
            )
            .unwrap(),
            Route::Upload(UploadParams {
                room: "dm:a:b".into(),
                name: "x y.png".into(),
                body: "hi there".into(),
                client_id: None,
            })
        );
        assert_eq!(
            p(Method::POST, "/api/rooms/x/files", "body=1")
                .unwrap_err()
                .code,
            ErrorCode::Invalid
        );
        assert_eq!(
            p(Method::GET, "/api/files/abc", "").unwrap(),
            Route::Download("abc".into())
        );
        assert_eq!(p(Method::GET, "/api/files", "").unwrap(), Route::FileLimits);
        assert_eq!(
            p(Method::DELETE, "/api/files/abc", "").unwrap(),
            Route::WrongMethod("GET")
        );
        assert_eq!(
            p(Method::POST, "/api/session/refresh", "").unwrap(),
            Route::Refresh
        );
        assert_eq!(
            p(Method::GET, "/api/login", "").unwrap(),
            Route::WrongMethod("POST")
        );
        assert_eq!(
            p(Method::GET, "/api/files/a/b", "").unwrap(),
            Route::NotFound
        );
        assert_eq!(
            p(
                Method::GET,
                "/api/rooms/lobby/messages",
                "before=10&limit=5"
            )
            .unwrap(),
            Route::History {
                room: "lobby".into(),
                page: Page {
                    before: Some(10),
                    after: None,
                    limit: Some(5)
                }
            }
        );
        assert!(p(Method::GET, "/api/rooms/l/messages", "limit=-1").is_err());
    }

    #[test]
    fn headers() {
        assert_eq!(bearer(b"Bearer abc").unwrap(), "abc");
        assert_eq!(bearer(b"bearer   abc ").unwrap(), "abc");
        assert!(bearer(b"Basic abc").is_err());
        assert!(bearer(b"Bearer ").is_err());
        assert_eq!(content_length(&[]).unwrap(), None);
        assert_eq!(content_length(&[b"42"]).unwrap(), Some(42));
        assert_eq!(content_length(&[b"42", b"42"]).unwrap(), Some(42));
        assert!(content_length(&[b"42", b"43"]).is_err());
        assert!(content_length(&[b"+42"]).is_err());
        assert!(content_length(&[b"99999999999999999999999"]).is_err());
    }

    proptest! {
        #[test]
        fn parsing_never_panics(path in ".{0,80}", query in ".{0,80}", m in 0..5usize) {
            let method = [Method::GET, Method::POST, Method::DELETE, Method::PUT, Method::HEAD][m].clone();
            let _ = parse(&method, &format!("/api/{path}"), &query);
            let _ = query_pairs(&query);
        }

        #[test]
        fn encoded_segments_round_trip(s in "\\PC{0,40}") {
            let enc: String = s.bytes().map(|b| format!("%{b:02X}")).collect();
            prop_assert_eq!(percent_decode(&enc, false).unwrap(), s);
        }
    }
}
