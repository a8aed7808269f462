//! The REST API under `/api/`: JSON in and out, bearer tokens
//! (`Authorization: Bearer <token>`), errors as
//! `{"error":{"code":"forbidden","message":"..."}}` with the status of the
//! code. Every request runs through [`Engine::call`](chat_core::Engine::call), so the same access
//! rules guard REST and WebSocket alike.
//!
//! | method and path | body | reply |
//! |---|---|---|
//! | `POST /api/signup` | `{username, password}` | 201 `{user, token, expires_at}` |
//! | `POST /api/login` | `{username, password}` | 200 `{user, token, expires_at}` |
//! | `POST /api/tokens` | `{username, password}` | 201 `{user, token, expires_at}`: one more token (another device) |
//! | `GET /api/session` | | 200 `{user, expires_at}` of the bearer's token |
//! | `DELETE /api/session` | | 204: the bearer's token is revoked |
//! | `GET /api/rooms` | | 200 `{rooms: [RoomInfo]}` |
//! | `POST /api/rooms` | `{room, kind?, topic?}` | 201 `{room: RoomInfo}` |
//! | `POST /api/rooms/{room}/join` | | 200 `{room: RoomInfo}` |
//! | `POST /api/rooms/{room}/leave` | | 204 |
//! | `GET /api/rooms/{room}/members` | | 200 `{room, members: [MemberInfo]}` |
//! | `POST /api/rooms/{room}/invite` | `{user}` | 204 |
//! | `GET /api/rooms/{room}/messages?before=&after=&limit=` | | 200 `{room, messages, has_more}` |
//! | `POST /api/rooms/{room}/messages` | `{body, client_id?}` | 201 `{room, seq, client_id?, duplicate}` |
//! | `POST /api/rooms/{room}/read` | `{seq}` | 204: read marker set (`unread` in `GET /api/rooms` follows it) |
//! | `POST /api/direct` | `{user}` | 200 `{room: RoomInfo}`: the direct room with `user` |
//!
//! `{room}` is percent-decoded (`dm%3Aalice%3Abob`).

use bytes::Bytes;
use chat_core::{ClientFrame, EngineError, ErrorCode, ServerFrame};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::{self, Body};
use crate::server::Shared;

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

#[derive(Deserialize)]
struct NewRoom {
    room: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    topic: String,
}

#[derive(Deserialize)]
struct NewMessage {
    body: String,
    #[serde(default)]
    client_id: Option<String>,
}

#[derive(Deserialize)]
struct ReadMark {
    seq: u64,
}

#[derive(Deserialize)]
struct UserRef {
    user: String,
}

/// A REST failure: an engine error or a request the transport refuses.
struct Fail(Box<Response<Body>>);

impl From<EngineError> for Fail {
    fn from(e: EngineError) -> Self {
        Fail(Box::new(http::error(e.code(), e.message())))
    }
}

type Reply = Result<Response<Body>, Fail>;

fn fail(code: ErrorCode, message: &str) -> Fail {
    Fail(Box::new(http::error(code, message)))
}

/// Answers one `/api/` request.
pub(crate) async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    match dispatch(shared, req).await {
        Ok(res) => res,
        Err(Fail(res)) => *res,
    }
}

async fn dispatch(shared: &Shared, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().trim_start_matches("/api/").to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let method = req.method().clone();
    let token = bearer(&req)?;
    let segments: Vec<String> = path
        .split('/')
        .map(percent_decode)
        .collect::<Result<_, _>>()?;
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let run = |frame| call(shared, token.as_deref(), frame);
    match (seg.as_slice(), &method) {
        (["signup"], &Method::POST) => {
            let c: Credentials = body(shared, req).await?;
            authed(
                StatusCode::CREATED,
                run(ClientFrame::Signup {
                    username: c.username,
                    password: c.password,
                })
                .await?,
            )
        }
        (["login"], &Method::POST) | (["tokens"], &Method::POST) => {
            let status = if seg[0] == "tokens" {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let c: Credentials = body(shared, req).await?;
            authed(
                status,
                run(ClientFrame::Login {
                    username: c.username,
                    password: c.password,
                })
                .await?,
            )
        }
        (["session"], &Method::GET) => {
            let token = token.as_deref().ok_or_else(|| {
                fail(
                    ErrorCode::Unauthenticated,
                    "send Authorization: Bearer <token>",
                )
            })?;
            match run(ClientFrame::Auth {
                token: token.to_owned(),
            })
            .await?
            {
                ServerFrame::Authed {
                    user, expires_at, ..
                } => Ok(http::json(
                    StatusCode::OK,
                    &json!({ "user": user, "expires_at": expires_at }),
                )),
                other => unexpected(&other),
            }
        }
        (["session"], &Method::DELETE) => {
            require(&token)?;
            run(ClientFrame::Logout).await?;
            Ok(no_content())
        }
        (["rooms"], &Method::GET) => {
            require(&token)?;
            match run(ClientFrame::ListRooms).await? {
                ServerFrame::Rooms { rooms, .. } => {
                    Ok(http::json(StatusCode::OK, &json!({ "rooms": rooms })))
                }
                other => unexpected(&other),
            }
        }
        (["rooms"], &Method::POST) => {
            require(&token)?;
            let r: NewRoom = body(shared, req).await?;
            let frame = ClientFrame::CreateRoom {
                room: r.room,
                kind: r.kind.unwrap_or_else(|| "public".to_owned()),
                topic: r.topic,
            };
            room_reply(StatusCode::CREATED, run(frame).await?)
        }
        (["direct"], &Method::POST) => {
            require(&token)?;
            let u: UserRef = body(shared, req).await?;
            room_reply(
                StatusCode::OK,
                run(ClientFrame::OpenDirect { user: u.user }).await?,
            )
        }
        (["rooms", room, "join"], &Method::POST) => {
            require(&token)?;
            room_reply(
                StatusCode::OK,
                run(ClientFrame::Join {
                    room: (*room).to_owned(),
                })
                .await?,
            )
        }
        (["rooms", room, "leave"], &Method::POST) => {
            require(&token)?;
            run(ClientFrame::Leave {
                room: (*room).to_owned(),
            })
            .await?;
            Ok(no_content())
        }
        (["rooms", room, "invite"], &Method::POST) => {
            require(&token)?;
            let room = (*room).to_owned();
            let u: UserRef = body(shared, req).await?;
            run(ClientFrame::Invite { room, user: u.user }).await?;
            Ok(no_content())
        }
        (["rooms", room, "read"], &Method::POST) => {
            require(&token)?;
            let room = (*room).to_owned();
            let r: ReadMark = body(shared, req).await?;
            run(ClientFrame::MarkRead { room, seq: r.seq }).await?;
            Ok(no_content())
        }
        (["rooms", room, "members"], &Method::GET) => {
            require(&token)?;
            match run(ClientFrame::Members {
                room: (*room).to_owned(),
            })
            .await?
            {
                ServerFrame::Members { room, members, .. } => Ok(http::json(
                    StatusCode::OK,
                    &json!({ "room": room, "members": members }),
                )),
                other => unexpected(&other),
            }
        }
        (["rooms", room, "messages"], &Method::GET) => {
            require(&token)?;
            let (before, after, limit) = history_query(&query)?;
            let frame = ClientFrame::History {
                room: (*room).to_owned(),
                before,
                after,
                limit,
            };
            match run(frame).await? {
                ServerFrame::History {
                    room,
                    messages,
                    has_more,
                    ..
                } => Ok(http::json(
                    StatusCode::OK,
                    &json!({ "room": room, "messages": messages, "has_more": has_more }),
                )),
                other => unexpected(&other),
            }
        }
        (["rooms", room, "messages"], &Method::POST) => {
            require(&token)?;
            let room = (*room).to_owned();
            let m: NewMessage = body(shared, req).await?;
            match run(ClientFrame::Send {
                room,
                body: m.body,
                client_id: m.client_id,
            })
            .await?
            {
                ServerFrame::Ack {
                    room,
                    seq,
                    client_id,
                    duplicate,
                    ..
                } => {
                    let status = if duplicate {
                        StatusCode::OK
                    } else {
                        StatusCode::CREATED
                    };
                    let mut v = json!({ "room": room, "seq": seq, "duplicate": duplicate });
                    if let Some(c) = client_id {
                        v["client_id"] = Value::String(c);
                    }
                    Ok(http::json(status, &v))
                }
                other => unexpected(&other),
            }
        }
        (["signup" | "login" | "tokens" | "rooms" | "direct"], _) => {
            Ok(http::wrong_method(allowed(seg[0])))
        }
        (["session"], _) => Ok(http::wrong_method("GET, DELETE")),
        (["rooms", _, "join" | "leave" | "invite" | "read"], _) => Ok(http::wrong_method("POST")),
        (["rooms", _, "members"], _) => Ok(http::wrong_method("GET")),
        (["rooms", _, "messages"], _) => Ok(http::wrong_method("GET, POST")),
        _ => Ok(http::no_route()),
    }
}

fn allowed(first: &str) -> &'static str {
    match first {
        "rooms" => "GET, POST",
        _ => "POST",
    }
}

async fn call(
    shared: &Shared,
    token: Option<&str>,
    frame: ClientFrame,
) -> Result<ServerFrame, EngineError> {
    shared.engine.call(token, frame).await
}

fn require(token: &Option<String>) -> Result<(), Fail> {
    match token {
        Some(_) => Ok(()),
        None => Err(fail(
            ErrorCode::Unauthenticated,
            "send Authorization: Bearer <token>",
        )),
    }
}

/// The bearer token, if any; a malformed `Authorization` header is a 401.
fn bearer(req: &Request<Incoming>) -> Result<Option<String>, Fail> {
    let Some(value) = req.headers().get(AUTHORIZATION) else {
        return Ok(None);
    };
    let bad = || {
        fail(
            ErrorCode::InvalidToken,
            "Authorization must be `Bearer <token>`",
        )
    };
    let value = value.to_str().map_err(|_| bad())?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(bad)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(bad());
    }
    Ok(Some(token.to_owned()))
}

/// Reads a JSON body of at most `rest_body_limit` bytes.
async fn body<T: DeserializeOwned>(shared: &Shared, req: Request<Incoming>) -> Result<T, Fail> {
    let limit = shared.settings.rest_body_limit;
    let bytes: Bytes = match Limited::new(req.into_body(), limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(fail(
                ErrorCode::FrameTooLarge,
                &format!("request body exceeds {limit} bytes"),
            ));
        }
        Err(e) => {
            return Err(fail(
                ErrorCode::BadFrame,
                &format!("cannot read the request body: {e}"),
            ))
        }
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| fail(ErrorCode::BadFrame, &format!("malformed JSON body: {e}")))
}

fn authed(status: StatusCode, frame: ServerFrame) -> Reply {
    match frame {
        ServerFrame::Authed {
            user,
            token,
            expires_at,
            ..
        } => Ok(http::json(
            status,
            &json!({ "user": user, "token": token, "expires_at": expires_at }),
        )),
        other => unexpected(&other),
    }
}

fn room_reply(status: StatusCode, frame: ServerFrame) -> Reply {
    match frame {
        ServerFrame::Room { room, .. } => Ok(http::json(status, &json!({ "room": room }))),
        other => unexpected(&other),
    }
}

fn unexpected(frame: &ServerFrame) -> Reply {
    tracing::error!(?frame, "REST: unexpected reply from the engine");
    Err(fail(ErrorCode::Internal, "unexpected reply"))
}

fn no_content() -> Response<Body> {
    let mut res = Response::new(Body::default());
    *res.status_mut() = StatusCode::NO_CONTENT;
    res
}

/// `before`, `after` and `limit` of a history query string.
/// `before`, `after` and `limit` of a history page.
type Page = (Option<u64>, Option<u64>, Option<u32>);

fn history_query(query: &str) -> Result<Page, Fail> {
    let (mut before, mut after, mut limit) = (None, None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = || {
            fail(
                ErrorCode::Invalid,
                &format!("query parameter {k} must be a non-negative integer"),
            )
        };
        match k {
            "before" => before = Some(v.parse().map_err(|_| bad())?),
            "after" => after = Some(v.parse().map_err(|_| bad())?),
            "limit" => limit = Some(v.parse().map_err(|_| bad())?),
            _ => {}
        }
    }
    Ok((before, after, limit))
}

/// Percent-decodes one path segment.
fn percent_decode(s: &str) -> Result<String, Fail> {
    let bad = || fail(ErrorCode::Invalid, "malformed percent-encoding in the path");
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("dm%3Aalice%3Abob").ok().unwrap(),
            "dm:alice:bob"
        );
        assert_eq!(percent_decode("lobby").ok().unwrap(), "lobby");
        assert!(percent_decode("bad%zz").is_err());
        assert!(percent_decode("cut%4").is_err());
    }

    #[test]
    fn history_queries() {
        assert_eq!(
            history_query("before=10&limit=5").ok().unwrap(),
            (Some(10), None, Some(5))
        );
        assert_eq!(history_query("").ok().unwrap(), (None, None, None));
        assert!(history_query("limit=-1").is_err());
    }
}
