//! The REST API under `/api/`: JSON in and out, bearer tokens
//! (`Authorization: Bearer <token>`), errors as
//! `{"error":{"code":"forbidden","message":"..."}}` with the status of the
//! code. Every request runs through the engine
//! ([`Engine::call`](chat_core::Engine::call) or its file API), so the same
//! access rules guard REST and WebSocket alike.
//!
//! | method and path | body | reply |
//! |---|---|---|
//! | `POST /api/signup` | `{username, password}` | 201 `{user, token, expires_at}` |
//! | `POST /api/login` | `{username, password}` | 200 `{user, token, expires_at}` |
//! | `POST /api/tokens` | `{username, password}` | 201 `{user, token, expires_at}`: one more token (another device) |
//! | `GET /api/session` | | 200 `{user, expires_at}` of the bearer's token |
//! | `POST /api/session/refresh` | | 200 `{user, token, expires_at}`: a fresh token for the bearer (no password); the old one stays valid until it expires or is revoked |
//! | `DELETE /api/session` | | 204: the bearer's token is revoked |
//! | `GET /api/rooms` | | 200 `{rooms: [RoomInfo]}` (with `last_read` and `unread`) |
//! | `POST /api/rooms` | `{room, kind?, topic?}` | 201 `{room: RoomInfo}` |
//! | `POST /api/rooms/{room}/join` | | 200 `{room: RoomInfo}` |
//! | `POST /api/rooms/{room}/leave` | | 204 |
//! | `GET /api/rooms/{room}/members` | | 200 `{room, members: [MemberInfo]}` |
//! | `POST /api/rooms/{room}/invite` | `{user}` | 204 |
//! | `GET /api/rooms/{room}/messages?before=&after=&limit=` | | 200 `{room, messages, has_more}` |
//! | `POST /api/rooms/{room}/messages` | `{body, client_id?}` | 201 `{room, seq, client_id?, duplicate}` |
//! | `POST /api/rooms/{room}/read` | `{seq}` | 204: read marker set (`unread` in `GET /api/rooms` follows it) |
//! | `POST /api/direct` | `{user}` | 200 `{room: RoomInfo}`: the direct room with `user` |
//! | `POST /api/rooms/{room}/files?name=&body=&client_id=` | the file's bytes | 201 `{room, seq, client_id?, duplicate, file}` (see [`crate::files`]) |
//! | `GET /api/rooms/{room}/files` | | 200 `{room, files: [FileInfo]}`, newest first |
//! | `GET /api/files/{id}` | | 200: the file's bytes, streamed |
//! | `GET /api/files` | | 200 `{enabled, max_file_bytes?, allowed_types?, extensions?}`: whether file sharing is on, and its limits |
//!
//! `{room}` is percent-decoded (`dm%3Aalice%3Abob`); in query strings `+`
//! is a space too.
//!
//! # Why both `/api/tokens` and `/api/session/refresh`?
//!
//! `POST /api/tokens` proves the password again and mints a token for
//! another device; `POST /api/session/refresh` needs only a valid bearer
//! token, so a client can renew its token before it expires without asking
//! for the password (the web client does, at half its lifetime, then
//! revokes the old one).

use bytes::Bytes;
use chat_core::{ClientFrame, EngineError, ErrorCode, ServerFrame};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{self, Route};
use crate::http::{self, Body};
use crate::server::Shared;

#[derive(Deserialize)]
pub(crate) struct Credentials {
    pub(crate) username: String,
    pub(crate) password: String,
}

#[derive(Deserialize)]
pub(crate) struct NewRoom {
    pub(crate) room: String,
    #[serde(default)]
    pub(crate) kind: Option<String>,
    #[serde(default)]
    pub(crate) topic: String,
}

#[derive(Deserialize)]
pub(crate) struct NewMessage {
    pub(crate) body: String,
    #[serde(default)]
    pub(crate) client_id: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct ReadMark {
    pub(crate) seq: u64,
}

#[derive(Deserialize)]
pub(crate) struct UserRef {
    pub(crate) user: String,
}

/// A REST failure: an engine error or a request the transport refuses.
pub(crate) struct Fail(pub(crate) Box<Response<Body>>);

impl From<EngineError> for Fail {
    fn from(e: EngineError) -> Self {
        fail(e.code(), e.message())
    }
}

impl From<api::Refused> for Fail {
    fn from(r: api::Refused) -> Self {
        fail(r.code, &r.message)
    }
}

pub(crate) type Reply = Result<Response<Body>, Fail>;

pub(crate) fn fail(code: ErrorCode, message: &str) -> Fail {
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
    let token = match req.headers().get(AUTHORIZATION) {
        Some(v) => Some(api::bearer(v.as_bytes())?),
        None => None,
    };
    let route = api::parse(
        req.method(),
        req.uri().path(),
        req.uri().query().unwrap_or(""),
    )?;
    let run = |frame| shared.engine.call(token.as_deref(), frame);
    match route {
        Route::Signup => {
            let c: Credentials = body(shared, req).await?;
            let frame = ClientFrame::Signup {
                username: c.username,
                password: c.password,
            };
            authed(StatusCode::CREATED, run(frame).await?)
        }
        Route::Login | Route::Tokens => {
            let status = if route == Route::Tokens {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let c: Credentials = body(shared, req).await?;
            let frame = ClientFrame::Login {
                username: c.username,
                password: c.password,
            };
            authed(status, run(frame).await?)
        }
        Route::Session => {
            let token = require(&token)?.to_owned();
            match run(ClientFrame::Auth { token }).await? {
                ServerFrame::Authed {
                    user, expires_at, ..
                } => Ok(http::json(
                    StatusCode::OK,
                    &json!({ "user": user, "expires_at": expires_at }),
                )),
                other => unexpected(&other),
            }
        }
        Route::Refresh => {
            require(&token)?;
            authed(StatusCode::OK, run(ClientFrame::RefreshToken).await?)
        }
        Route::Logout => {
            require(&token)?;
            run(ClientFrame::Logout).await?;
            Ok(http::status(StatusCode::NO_CONTENT))
        }
        Route::ListRooms => {
            require(&token)?;
            match run(ClientFrame::ListRooms).await? {
                ServerFrame::Rooms { rooms, .. } => {
                    Ok(http::json(StatusCode::OK, &json!({ "rooms": rooms })))
                }
                other => unexpected(&other),
            }
        }
        Route::CreateRoom => {
            require(&token)?;
            let r: NewRoom = body(shared, req).await?;
            let frame = ClientFrame::CreateRoom {
                room: r.room,
                kind: r.kind.unwrap_or_else(|| "public".to_owned()),
                topic: r.topic,
            };
            room_reply(StatusCode::CREATED, run(frame).await?)
        }
        Route::Direct => {
            require(&token)?;
            let u: UserRef = body(shared, req).await?;
            let frame = ClientFrame::OpenDirect { user: u.user };
            room_reply(StatusCode::OK, run(frame).await?)
        }
        Route::Join(room) => {
            require(&token)?;
            room_reply(StatusCode::OK, run(ClientFrame::Join { room }).await?)
        }
        Route::Leave(room) => {
            require(&token)?;
            run(ClientFrame::Leave { room }).await?;
            Ok(http::status(StatusCode::NO_CONTENT))
        }
        Route::Invite(room) => {
            require(&token)?;
            let u: UserRef = body(shared, req).await?;
            run(ClientFrame::Invite { room, user: u.user }).await?;
            Ok(http::status(StatusCode::NO_CONTENT))
        }
        Route::Read(room) => {
            require(&token)?;
            let r: ReadMark = body(shared, req).await?;
            run(ClientFrame::MarkRead { room, seq: r.seq }).await?;
            Ok(http::status(StatusCode::NO_CONTENT))
        }
        Route::Members(room) => {
            require(&token)?;
            match run(ClientFrame::Members { room }).await? {
                ServerFrame::Members { room, members, .. } => Ok(http::json(
                    StatusCode::OK,
                    &json!({ "room": room, "members": members }),
                )),
                other => unexpected(&other),
            }
        }
        Route::History { room, page } => {
            require(&token)?;
            let frame = ClientFrame::History {
                room,
                before: page.before,
                after: page.after,
                limit: page.limit,
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
        Route::Send(room) => {
            require(&token)?;
            let m: NewMessage = body(shared, req).await?;
            let frame = ClientFrame::Send {
                room,
                body: m.body,
                client_id: m.client_id,
            };
            match run(frame).await? {
                ServerFrame::Ack {
                    room,
                    seq,
                    client_id,
                    duplicate,
                    ..
                } => Ok(ack(room, seq, client_id, duplicate, None)),
                other => unexpected(&other),
            }
        }
        Route::ListFiles(room) => {
            require(&token)?;
            match run(ClientFrame::ListFiles { room }).await? {
                ServerFrame::Files { room, files, .. } => Ok(http::json(
                    StatusCode::OK,
                    &json!({ "room": room, "files": files }),
                )),
                other => unexpected(&other),
            }
        }
        Route::FileLimits => {
            require(&token)?;
            Ok(crate::files::limits(shared))
        }
        Route::Upload(params) => {
            let user = user(shared, &token).await?;
            crate::files::upload(shared, req, &user, params).await
        }
        Route::Download(id) => {
            let user = user(shared, &token).await?;
            crate::files::download(shared, &req, &user, &id).await
        }
        Route::WrongMethod(allow) => Ok(http::wrong_method(allow)),
        Route::NotFound => Ok(http::no_route()),
    }
}

fn require(token: &Option<String>) -> Result<&str, Fail> {
    token.as_deref().ok_or_else(|| {
        fail(
            ErrorCode::Unauthenticated,
            "send Authorization: Bearer <token>",
        )
    })
}

/// The bearer's user name, for the routes that do not go through
/// [`Engine::call`](chat_core::Engine::call).
async fn user(shared: &Shared, token: &Option<String>) -> Result<String, Fail> {
    Ok(shared.engine.authenticate(require(token)?).await?)
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
    parse_json(&bytes)
}

/// Parses a JSON request body.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Fail> {
    serde_json::from_slice(bytes)
        .map_err(|e| fail(ErrorCode::BadFrame, &format!("malformed JSON body: {e}")))
}

/// The reply to a stored message: 201, or 200 for a duplicate.
pub(crate) fn ack(
    room: String,
    seq: u64,
    client_id: Option<String>,
    duplicate: bool,
    file: Option<&chat_core::FileRef>,
) -> Response<Body> {
    let status = if duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut v = json!({ "room": room, "seq": seq, "duplicate": duplicate });
    if let Some(c) = client_id {
        v["client_id"] = Value::String(c);
    }
    if let Some(f) = file {
        v["file"] = json!(f);
    }
    http::json(status, &v)
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
