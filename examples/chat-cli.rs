//! Run with: `cargo run --example chat-cli -- --addr 127.0.0.1:7443 --fingerprint <HEX> --user alice --signup`
//!
//! A line-based terminal client for the TLS TCP transport, in the spirit of
//! an IRC client: type `/help` for the commands; any other line is sent to
//! the current room. Messages arrive while you type. When the connection
//! drops it reconnects with exponential backoff, logs in again with its
//! token and resumes every followed room from the last `seq` it printed,
//! so nothing is missed and nothing is shown twice.
//!
//! Trust the server with `--ca FILE` (PEM), `--fingerprint HEX` (the SHA-256
//! of its certificate, as the example server prints it) or `--insecure`.
//! The password comes from `--password`, else `CHAT_PASSWORD`, else a
//! prompt (read from standard input, which echoes it).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::Duration;

use chat_core::{BotTask, ClientFrame, Cursor, ErrorCode, MemberChange, Request, ServerFrame};
use chat_transport_tcp::client::{Connector, FrameReader, FrameWriter, Trust};
use tokio::sync::mpsc;

const USAGE: &str = "\
chat-cli: a terminal client for the chat engine's TLS TCP transport

USAGE: chat-cli [OPTIONS]

OPTIONS:
  --addr HOST:PORT      server address (default 127.0.0.1:7443)
  --server-name NAME    name to check the certificate against with --ca
                        (default: the host of --addr)
  --ca FILE             trust certificates from this PEM file
  --fingerprint HEX     trust exactly the certificate with this SHA-256
  --insecure            trust any certificate (encrypts, no authentication)
  --user NAME           user name (prompted for when absent)
  --password PW         password (else env CHAT_PASSWORD, else prompted for)
  --signup              create the account first
  -h, --help            show this help";

const COMMANDS: &str = "\
commands:
  /join ROOM               join a room and make it current
  /leave [ROOM]            leave a room (default: the current one)
  /create ROOM [--private] create a room (public unless --private)
  /invite ROOM USER        add a user to a room you administer
  /dm USER                 open the direct room with a user
  /rooms                   list rooms
  /history [N]             show the last N messages of the current room
  /who                     list the members of the current room
  /ask QUESTION            ask the room's bot
  /summarize [N]           have the bot summarise the last N messages
  /quit                    leave the program
  /help                    show this list
  anything else            is sent to the current room";

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often the client pings, well inside the server's idle timeout.
const PING_EVERY: Duration = Duration::from_secs(30);
/// Messages shown when joining a room not followed before.
const BACKLOG_ON_JOIN: u64 = 10;

struct Args {
    addr: String,
    server_name: Option<String>,
    trust: Trust,
    user: Option<String>,
    password: Option<String>,
    signup: bool,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut addr = "127.0.0.1:7443".to_owned();
    let (mut server_name, mut trust, mut user, mut password, mut signup) =
        (None, None, None, None, false);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        let mut set_trust = |t: Trust| match trust.replace(t) {
            None => Ok(()),
            Some(_) => Err("give only one of --ca, --fingerprint, --insecure".to_owned()),
        };
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--addr" => addr = value("--addr")?,
            "--server-name" => server_name = Some(value("--server-name")?),
            "--ca" => set_trust(Trust::CaFile(value("--ca")?.into()))?,
            "--fingerprint" => {
                let fp = value("--fingerprint")?
                    .parse()
                    .map_err(|e| format!("{e}"))?;
                set_trust(Trust::Fingerprint(fp))?;
            }
            "--insecure" => set_trust(Trust::Insecure)?,
            "--user" => user = Some(value("--user")?),
            "--password" => password = Some(value("--password")?),
            "--signup" => signup = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let trust = trust.ok_or("give one of --ca FILE, --fingerprint HEX or --insecure")?;
    let password = password.or_else(|| std::env::var("CHAT_PASSWORD").ok());
    Ok(Some(Args {
        addr,
        server_name,
        trust,
        user,
        password,
        signup,
    }))
}

/// What a pending request was for, to act on its reply.
enum Pending {
    Enter,
    Leave(String),
    Invite(String, String),
    Quiet,
}

/// How a session ended.
enum Outcome {
    Quit,
    Disconnected,
    Fatal(String),
}

/// The client's state, kept across reconnections.
struct State {
    user: String,
    password: String,
    signup: bool,
    token: Option<String>,
    /// Followed rooms and the last `seq` shown from each.
    cursors: BTreeMap<String, u64>,
    current: Option<String>,
    next_id: u64,
    pending: HashMap<u64, Pending>,
    /// The bot stream whose line is open on screen: (stream, room, bot).
    open_stream: Option<(u64, String, String)>,
}

impl State {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn request(&mut self, pending: Pending, frame: ClientFrame) -> Request {
        let id = self.id();
        // Only requests whose reply is acted on are remembered; each gets
        // exactly one reply (or an error) unless the connection drops.
        if !matches!(pending, Pending::Quiet) {
            self.pending.insert(id, pending);
        }
        Request {
            id: Some(id),
            frame,
        }
    }

    /// Prints a line, ending an open bot line first.
    fn say(&mut self, text: impl AsRef<str>) {
        let mut out = std::io::stdout().lock();
        if self.open_stream.take().is_some() {
            let _ = writeln!(out);
        }
        let _ = writeln!(out, "{}", text.as_ref());
        let _ = out.flush();
    }

    fn saw(&mut self, room: &str, seq: u64) {
        if let Some(c) = self.cursors.get_mut(room) {
            *c = (*c).max(seq);
        }
    }

    fn subscribe_all(&mut self) -> Option<Request> {
        let rooms: Vec<Cursor> = chat_core::protocol::cursors(&self.cursors);
        (!rooms.is_empty()).then(|| self.request(Pending::Quiet, ClientFrame::Subscribe { rooms }))
    }
}

#[tokio::main]
async fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            let _ = writeln!(std::io::stdout(), "{USAGE}\n\n{COMMANDS}");
            return;
        }
        Err(e) => {
            eprintln!("chat-cli: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    // One thread reads standard input for the whole run (prompts included),
    // so that no line is lost between two readers.
    let (tx, mut lines) = mpsc::channel::<String>(64);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { return };
            if tx.blocking_send(line).is_err() {
                return;
            }
        }
    });
    let mut prompt = async |what: &str| {
        raw(&format!("{what}: "));
        lines.recv().await.unwrap_or_default().trim().to_owned()
    };
    let user = match args.user {
        Some(u) => u,
        None => prompt("user").await,
    };
    let password = match args.password {
        Some(p) => p,
        None => prompt("password").await,
    };
    let connector = match Connector::new(&args.trust) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chat-cli: {e}");
            std::process::exit(2);
        }
    };
    let mut state = State {
        user,
        password,
        signup: args.signup,
        token: None,
        cursors: BTreeMap::new(),
        current: None,
        next_id: 0,
        pending: HashMap::new(),
        open_stream: None,
    };
    let initial = Duration::from_millis(500);
    let mut backoff = initial;
    loop {
        match connector
            .connect(&args.addr, args.server_name.as_deref())
            .await
        {
            Ok(client) => {
                if matches!(args.trust, Trust::Insecure) {
                    if let Some(fp) = client.peer_fingerprint() {
                        state.say(format!("* server certificate SHA-256 {fp}"));
                    }
                }
                let (rd, wr) = client.split();
                match session(&mut state, rd, wr, &mut lines, &mut backoff).await {
                    Outcome::Quit => return,
                    Outcome::Fatal(msg) => {
                        state.say(format!("! {msg}"));
                        std::process::exit(1);
                    }
                    Outcome::Disconnected => state.say("! disconnected"),
                }
            }
            Err(e) => state.say(format!("! cannot connect: {e}")),
        }
        state.say(format!("* reconnecting in {:.1}s", backoff.as_secs_f32()));
        let wait = tokio::time::sleep(backoff);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                () = &mut wait => break,
                line = lines.recv() => match line.as_deref().map(str::trim) {
                    None | Some("/quit") => return,
                    Some(_) => state.say("! not connected; line dropped"),
                },
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection: log in, resume, then relay frames and typed lines.
async fn session(
    state: &mut State,
    mut rd: FrameReader,
    mut wr: FrameWriter,
    lines: &mut mpsc::Receiver<String>,
    backoff: &mut Duration,
) -> Outcome {
    let login = |state: &mut State| {
        let (username, password) = (state.user.clone(), state.password.clone());
        let frame = match (&state.token, state.signup) {
            (Some(token), _) => ClientFrame::Auth {
                token: token.clone(),
            },
            (None, true) => ClientFrame::Signup { username, password },
            (None, false) => ClientFrame::Login { username, password },
        };
        state.request(Pending::Quiet, frame)
    };
    // Replies to requests sent on an earlier connection never come.
    state.pending.clear();
    let mut login_id = {
        let req = login(state);
        if wr.send(&req).await.is_err() {
            return Outcome::Disconnected;
        }
        req.id
    };
    // Wait for the login's reply; typed lines wait in their queue.
    loop {
        let frame = match rd.recv().await {
            Ok(Some(f)) => f,
            Ok(None) | Err(_) => return Outcome::Disconnected,
        };
        match frame {
            ServerFrame::Authed {
                id, user, token, ..
            } if id == login_id => {
                state.say(format!("* logged in as {user}"));
                (state.token, state.signup) = (Some(token), false);
                break;
            }
            ServerFrame::Error { id, code, message } if id == login_id => match code {
                ErrorCode::InvalidToken | ErrorCode::TokenExpired => {
                    state.token = None;
                    let req = login(state);
                    login_id = req.id;
                    if wr.send(&req).await.is_err() {
                        return Outcome::Disconnected;
                    }
                }
                ErrorCode::ServerBusy | ErrorCode::ShuttingDown | ErrorCode::StoreFailed => {
                    state.say(format!("! {code}: {message}"));
                    return Outcome::Disconnected;
                }
                _ => return Outcome::Fatal(format!("login failed: {code}: {message}")),
            },
            other => {
                for req in on_frame(state, other) {
                    if wr.send(&req).await.is_err() {
                        return Outcome::Disconnected;
                    }
                }
            }
        }
    }
    *backoff = Duration::from_millis(500);
    if let Some(req) = state.subscribe_all() {
        if wr.send(&req).await.is_err() {
            return Outcome::Disconnected;
        }
    }
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    loop {
        let to_send: Vec<Request> = tokio::select! {
            frame = rd.recv() => match frame {
                Ok(Some(f)) => on_frame(state, f),
                Ok(None) => return Outcome::Disconnected,
                Err(e) => {
                    state.say(format!("! {e}"));
                    return Outcome::Disconnected;
                }
            },
            line = lines.recv() => match line {
                None => return Outcome::Quit,
                Some(line) => match on_line(state, line.trim()) {
                    Some(Some(req)) => vec![req],
                    Some(None) => Vec::new(),
                    None => {
                        let _ = wr.close().await;
                        return Outcome::Quit;
                    }
                },
            },
            _ = ping.tick() => vec![Request { id: None, frame: ClientFrame::Ping }],
        };
        for req in to_send {
            if wr.send(&req).await.is_err() {
                return Outcome::Disconnected;
            }
        }
    }
}

/// Acts on a typed line: `None` to quit, `Some(request)` to send.
fn on_line(state: &mut State, line: &str) -> Option<Option<Request>> {
    if line.is_empty() {
        return Some(None);
    }
    let Some(cmd) = line.strip_prefix('/') else {
        let Some(room) = state.current.clone() else {
            state.say("! no current room: /join ROOM or /create ROOM first");
            return Some(None);
        };
        let client_id = Some(format!("cli-{}-{}", std::process::id(), state.id()));
        let frame = ClientFrame::Send {
            room,
            body: line.to_owned(),
            client_id,
        };
        return Some(Some(state.request(Pending::Quiet, frame)));
    };
    let (name, rest) = cmd.split_once(' ').unwrap_or((cmd, ""));
    let rest = rest.trim();
    let words: Vec<&str> = rest.split_whitespace().collect();
    let current = state.current.clone();
    let number = |default: u32| words.first().map_or(Ok(default), |n| n.parse::<u32>());
    let (pending, frame) = match (name, words.as_slice(), current) {
        ("quit", _, _) => return None,
        ("help", _, _) => {
            state.say(COMMANDS);
            return Some(None);
        }
        ("join", [room], _) => {
            state.current = Some((*room).to_owned());
            (
                Pending::Enter,
                ClientFrame::Join {
                    room: (*room).to_owned(),
                },
            )
        }
        ("create", [room, flags @ ..], _) if flags.iter().all(|f| *f == "--private") => {
            let kind = if flags.is_empty() {
                "public"
            } else {
                "private"
            };
            state.current = Some((*room).to_owned());
            let frame = ClientFrame::CreateRoom {
                room: (*room).to_owned(),
                kind: kind.into(),
                topic: String::new(),
            };
            (Pending::Enter, frame)
        }
        ("leave", [room], _) => (
            Pending::Leave((*room).to_owned()),
            ClientFrame::Leave {
                room: (*room).to_owned(),
            },
        ),
        ("leave", [], Some(room)) => (Pending::Leave(room.clone()), ClientFrame::Leave { room }),
        ("invite", [room, user], _) => (
            Pending::Invite((*room).to_owned(), (*user).to_owned()),
            ClientFrame::Invite {
                room: (*room).to_owned(),
                user: (*user).to_owned(),
            },
        ),
        ("dm", [user], _) => {
            let me = state.user.to_lowercase();
            state.current = Some(chat_core::room::direct_room_name(&me, &user.to_lowercase()));
            (
                Pending::Enter,
                ClientFrame::OpenDirect {
                    user: (*user).to_owned(),
                },
            )
        }
        ("rooms", [], _) => (Pending::Quiet, ClientFrame::ListRooms),
        ("history", [] | [_], Some(room)) => match number(20) {
            Ok(n) => (
                Pending::Quiet,
                ClientFrame::History {
                    room,
                    before: None,
                    after: None,
                    limit: Some(n),
                },
            ),
            Err(_) => return usage(state, "/history [N]"),
        },
        ("who", [], Some(room)) => (Pending::Quiet, ClientFrame::Members { room }),
        ("ask", [_, ..], Some(room)) => {
            let task = BotTask::Answer {
                prompt: rest.to_owned(),
            };
            (
                Pending::Quiet,
                ClientFrame::Ask {
                    room,
                    bot: None,
                    task,
                },
            )
        }
        ("summarize", [] | [_], Some(room)) => match number(50) {
            Ok(count) => (
                Pending::Quiet,
                ClientFrame::Ask {
                    room,
                    bot: None,
                    task: BotTask::Summarize { count },
                },
            ),
            Err(_) => return usage(state, "/summarize [N]"),
        },
        ("history" | "who" | "ask" | "summarize" | "leave", _, None) => {
            state.say("! no current room: /join ROOM first");
            return Some(None);
        }
        (
            "join" | "create" | "leave" | "invite" | "dm" | "rooms" | "history" | "who" | "ask"
            | "summarize",
            _,
            _,
        ) => {
            return usage(state, "see /help");
        }
        _ => return usage(state, "unknown command; /help lists them"),
    };
    Some(Some(state.request(pending, frame)))
}

/// Writes to standard output as is; a closed output is not an error here.
fn raw(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

fn usage(state: &mut State, text: &str) -> Option<Option<Request>> {
    state.say(format!("! {text}"));
    Some(None)
}

/// Prints a server frame and returns the requests it calls for.
fn on_frame(state: &mut State, frame: ServerFrame) -> Vec<Request> {
    let mut out = Vec::new();
    match frame {
        ServerFrame::Hello { server, .. } => state.say(format!("* connected to {server}")),
        ServerFrame::Room { id, room } => {
            let name = room.name.clone();
            if let Some(Pending::Enter) = id.and_then(|i| state.pending.remove(&i)) {
                state.current = Some(name.clone());
                let topic = if room.topic.is_empty() {
                    String::new()
                } else {
                    format!(": {}", room.topic)
                };
                state.say(format!("* now in {name} ({}){topic}", room.kind));
                if !state.cursors.contains_key(&name) {
                    let from = room.last_seq.saturating_sub(BACKLOG_ON_JOIN);
                    state.cursors.insert(name.clone(), from);
                    let rooms = vec![Cursor {
                        room: name,
                        last_seq: Some(from),
                    }];
                    out.push(state.request(Pending::Quiet, ClientFrame::Subscribe { rooms }));
                }
            }
        }
        ServerFrame::Subscribed { room, last_seq, .. } => {
            state.saw(&room, last_seq);
            state.say(format!("* following {room} (up to #{last_seq})"));
        }
        ServerFrame::Message { message: m } => {
            state.saw(&m.room, m.seq);
            let streamed =
                matches!(&state.open_stream, Some((_, r, b)) if *r == m.room && *b == m.sender);
            if streamed {
                state.open_stream = None;
                raw(&format!(" (#{})\n", m.seq));
            } else {
                state.say(format!("[{} #{}] {}: {}", m.room, m.seq, m.sender, m.body));
            }
        }
        ServerFrame::Ack {
            id,
            room,
            seq,
            duplicate,
            ..
        } => {
            id.and_then(|i| state.pending.remove(&i));
            let again = if duplicate { " (already stored)" } else { "" };
            state.say(format!("* ack {room} #{seq}{again}"));
        }
        ServerFrame::BotDelta {
            room,
            bot,
            stream,
            delta,
            ..
        } => {
            let mut o = std::io::stdout().lock();
            if state.open_stream.as_ref().map(|s| s.0) != Some(stream) {
                if state.open_stream.is_some() {
                    let _ = writeln!(o);
                }
                let _ = write!(o, "[{room}] {bot}: ");
                state.open_stream = Some((stream, room, bot));
            }
            let _ = write!(o, "{delta}");
            let _ = o.flush();
        }
        // A reply that was not stored (or a fallback): end its line here.
        ServerFrame::BotDone {
            stream, fallback, ..
        } if state.open_stream.as_ref().map(|s| s.0) == Some(stream) => {
            state.open_stream = None;
            raw(if fallback { " (bot failed)\n" } else { "\n" });
        }
        ServerFrame::History {
            room,
            messages,
            has_more,
            ..
        } => {
            if has_more {
                state.say(format!("* {room}: older messages exist"));
            }
            for m in messages {
                state.say(format!("[{} #{}] {}: {}", m.room, m.seq, m.sender, m.body));
            }
        }
        ServerFrame::Rooms { rooms, .. } => {
            state.say(format!("* rooms: {}", rooms.len()));
            for r in rooms {
                let role = r
                    .role
                    .map_or(String::new(), |r| format!(" [{r:?}]").to_lowercase());
                let topic = if r.topic.is_empty() {
                    String::new()
                } else {
                    format!(": {}", r.topic)
                };
                state.say(format!(
                    "  {} ({}, last #{}){role}{topic}",
                    r.name, r.kind, r.last_seq
                ));
            }
        }
        ServerFrame::Members { room, members, .. } => {
            let list: Vec<String> = members
                .iter()
                .map(|m| {
                    format!(
                        "{} ({:?}{})",
                        m.user,
                        m.role,
                        if m.online { ", online" } else { "" }
                    )
                    .to_lowercase()
                })
                .collect();
            state.say(format!("* in {room}: {}", list.join(", ")));
        }
        ServerFrame::MemberEvent {
            room, user, change, ..
        } => {
            let what = match change {
                MemberChange::Joined => "joined",
                MemberChange::Invited => "was invited to",
                MemberChange::Left => "left",
                MemberChange::Removed => "was removed from",
                MemberChange::RoleChanged => "changed role in",
            };
            state.say(format!("* {user} {what} {room}"));
        }
        ServerFrame::Ok { id } => match id.and_then(|i| state.pending.remove(&i)) {
            Some(Pending::Leave(room)) => {
                state.cursors.remove(&room);
                if state.current.as_deref() == Some(room.as_str()) {
                    state.current = state.cursors.keys().next().cloned();
                }
                state.say(format!("* left {room}"));
            }
            Some(Pending::Invite(room, user)) => state.say(format!("* invited {user} to {room}")),
            _ => {}
        },
        ServerFrame::Suggestions { replies, .. } => {
            state.say(format!("* suggestions: {}", replies.join(" | ")))
        }
        ServerFrame::Error { id, code, message } => {
            if let Some(Pending::Enter) = id.and_then(|i| state.pending.remove(&i)) {
                state.current = state.cursors.keys().next().cloned();
            }
            state.say(format!("! error {code}: {message}"));
        }
        ServerFrame::Closing { reason, message } => {
            state.say(format!("! server closing: {reason}: {message}"))
        }
        // Pong, typing and presence notices are not shown.
        _ => {}
    }
    out
}
