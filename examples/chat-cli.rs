//! Run with: `cargo run --example chat-cli -- --addr 127.0.0.1:7443 --fingerprint <HEX> --user alice --signup`
//!
//! A line-based terminal client for the TLS TCP transport, in the spirit of
//! an IRC client: type `/help` for the commands; any other line is sent to
//! the current room. Messages arrive while you type; a mention of you rings
//! the terminal bell. `/upload` and `/download` share files. When the
//! connection drops it reconnects with exponential backoff, logs in again
//! with its token and resumes every followed room from the last `seq` it
//! printed, so nothing is missed and nothing is shown twice; a download in
//! progress goes on from where it stopped.
//!
//! What is shown in the current room counts as read (`mark_read`, at most
//! every two seconds), and so does a room when you switch to it: `/rooms`
//! counts what is unread elsewhere, on every device.
//!
//! Trust the server with `--ca FILE` (PEM), `--fingerprint HEX` (the SHA-256
//! of its certificate, as the example server prints it) or `--insecure`.
//! The password comes from `--password`, else `CHAT_PASSWORD`, else a
//! prompt (read from standard input, which echoes it).

use std::io::Write;
use std::time::Duration;

use chat_core::{ClientFrame, ErrorCode, Request, ServerFrame};
use chat_transport_tcp::client::{Connector, FrameReader, FrameWriter, Trust};
use tokio::sync::mpsc;

#[path = "chat-cli/args.rs"]
mod args;
#[path = "chat-cli/commands.rs"]
mod commands;
#[path = "chat-cli/frames.rs"]
mod frames;
#[path = "chat-cli/state.rs"]
mod state;
#[path = "chat-cli/transfer.rs"]
mod transfer;

use state::{raw, Pending, State};

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often the client pings, well inside the server's idle timeout.
const PING_EVERY: Duration = Duration::from_secs(30);
/// How often what was shown in the current room is marked read.
const MARK_EVERY: Duration = Duration::from_secs(2);

/// How a session ended.
enum Outcome {
    Quit,
    Disconnected,
    Fatal(String),
}

#[tokio::main]
async fn main() {
    let args = match args::parse_args(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            let _ = writeln!(
                std::io::stdout(),
                "{}\n\n{}",
                args::USAGE,
                commands::COMMANDS
            );
            return;
        }
        Err(e) => {
            eprintln!("chat-cli: {e}\n\n{}", args::USAGE);
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
    let mut state = State::new(user, password, args.signup);
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

/// Sends requests in order; `false` when the connection is gone.
async fn send_all(wr: &mut FrameWriter, requests: impl IntoIterator<Item = Request>) -> bool {
    for req in requests {
        if wr.send(&req).await.is_err() {
            return false;
        }
    }
    true
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
    // Replies to requests sent on an earlier connection never come, and an
    // upload dies with its connection (the server drops what it got).
    state.pending.clear();
    if let Some(up) = state.upload.take() {
        state.say(format!(
            "! upload of {} was interrupted; /upload it again",
            up.name
        ));
    }
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
                (state.token, state.signup, state.user) = (Some(token), false, user);
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
                let reqs = frames::on_frame(state, other);
                if !send_all(&mut wr, reqs).await {
                    return Outcome::Disconnected;
                }
            }
        }
    }
    *backoff = Duration::from_millis(500);
    let mut resume: Vec<Request> = state.subscribe_all().into_iter().collect();
    if let Some(frame) = state.download.as_ref().map(|d| d.request()) {
        resume.push(state.request(Pending::Download, frame));
    }
    if !send_all(&mut wr, resume).await {
        return Outcome::Disconnected;
    }
    let start = tokio::time::Instant::now();
    let mut ping = tokio::time::interval_at(start + PING_EVERY, PING_EVERY);
    let mut mark = tokio::time::interval_at(start + MARK_EVERY, MARK_EVERY);
    loop {
        let to_send: Vec<Request> = tokio::select! {
            frame = rd.recv() => match frame {
                Ok(Some(f)) => frames::on_frame(state, f),
                Ok(None) => return Outcome::Disconnected,
                Err(e) => {
                    state.say(format!("! {e}"));
                    return Outcome::Disconnected;
                }
            },
            line = lines.recv() => match line {
                None => return Outcome::Quit,
                Some(line) => match commands::on_line(state, line.trim()) {
                    Some(reqs) => reqs,
                    None => {
                        let last = state.mark_current();
                        let _ = send_all(&mut wr, last).await;
                        let _ = wr.close().await;
                        return Outcome::Quit;
                    }
                },
            },
            _ = ping.tick() => vec![Request { id: None, frame: ClientFrame::Ping }],
            _ = mark.tick() => state.mark_current().into_iter().collect(),
        };
        if !send_all(&mut wr, to_send).await {
            return Outcome::Disconnected;
        }
    }
}
