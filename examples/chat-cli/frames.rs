//! Frames from the server: what is printed, and the requests they call for.

use std::io::Write;

use chat_core::{ClientFrame, Cursor, MemberChange, Request, ServerFrame};

use crate::state::{clean, human_size, message_line, raw, Pending, State};
use crate::transfer::Step;

/// Messages shown when joining a room not followed before.
const BACKLOG_ON_JOIN: u64 = 10;

/// Prints a server frame and returns the requests it calls for.
pub fn on_frame(state: &mut State, frame: ServerFrame) -> Vec<Request> {
    let mut out = Vec::new();
    match frame {
        ServerFrame::Hello { server, .. } => {
            state.say(format!("* connected to {}", clean(&server)))
        }
        ServerFrame::Room { id, room } => {
            let name = room.name.clone();
            if let Some(Pending::Enter) = id.and_then(|i| state.pending.remove(&i)) {
                state.current = Some(name.clone());
                let topic = if room.topic.is_empty() {
                    String::new()
                } else {
                    format!(": {}", clean(&room.topic))
                };
                state.say(format!("* now in {name} ({}){topic}", room.kind));
                if state.cursors.contains_key(&name) {
                    // Switching to a followed room: what was shown is read.
                    out.extend(state.mark_current());
                } else {
                    let from = room.last_seq.saturating_sub(BACKLOG_ON_JOIN);
                    out.push(follow(state, name, from));
                }
            }
        }
        ServerFrame::Subscribed { room, last_seq, .. } => {
            state.saw(&room, last_seq);
            state.say(format!("* following {room} (up to #{last_seq})"));
            if state.current.as_deref() == Some(room.as_str()) {
                out.extend(state.mark_current());
            }
        }
        ServerFrame::Message { message: m } => {
            state.saw(&m.room, m.seq);
            let streamed =
                matches!(&state.open_stream, Some((_, r, b)) if *r == m.room && *b == m.sender);
            if streamed && m.file.is_none() {
                state.open_stream = None;
                raw(&format!(" (#{})\n", m.seq));
            } else {
                state.say(message_line(&m));
            }
        }
        ServerFrame::Mention {
            room,
            from,
            excerpt,
            ..
        } => {
            // The bell rings in the terminal; the line says why.
            state.say(format!(
                "\x07!! @mention in #{room} from {from}: {}",
                clean(&excerpt)
            ));
        }
        ServerFrame::Ack {
            id,
            room,
            seq,
            duplicate,
            ..
        } => {
            let again = if duplicate { " (already stored)" } else { "" };
            match id.and_then(|i| state.pending.remove(&i)) {
                Some(Pending::UploadFinish) => {
                    if let Some(up) = state.upload.take() {
                        state.say(format!(
                            "* uploaded {} ({}) to {room} as #{seq}{again}",
                            up.name,
                            human_size(up.size)
                        ));
                    }
                }
                _ => state.say(format!("* ack {room} #{seq}{again}")),
            }
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
            let _ = write!(o, "{}", clean(&delta));
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
                state.say(message_line(&m));
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
                    format!(": {}", clean(&r.topic))
                };
                let unread = if r.unread > 0 {
                    format!(", {} unread", r.unread)
                } else {
                    String::new()
                };
                state.say(format!(
                    "  {} ({}, last #{}{unread}){role}{topic}",
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
            if change == MemberChange::Invited && state.is_me(&user) {
                out.extend(added_to(state, room));
            } else {
                let what = match change {
                    MemberChange::Joined => "joined",
                    MemberChange::Invited => "was invited to",
                    MemberChange::Left => "left",
                    MemberChange::Removed => "was removed from",
                    MemberChange::RoleChanged => "changed role in",
                };
                state.say(format!("* {user} {what} {room}"));
            }
        }
        ServerFrame::Files { room, files, .. } => {
            if files.is_empty() {
                state.say(format!("* no files in #{room}"));
            }
            for f in files {
                state.say(format!(
                    "  {}  {}  {}  by {}",
                    clean(&f.file.id),
                    clean(&f.file.name),
                    human_size(f.file.size),
                    f.uploader
                ));
            }
        }
        ServerFrame::UploadReady {
            id,
            upload,
            chunk_bytes,
        } => {
            if let Some(Pending::UploadStart) = id.and_then(|i| state.pending.remove(&i)) {
                let started = match state.upload.as_mut() {
                    Some(up) => up.ready(upload, chunk_bytes),
                    None => Err("no upload in progress".to_owned()),
                };
                match started {
                    Ok(()) => out.extend(pump_upload(state)),
                    Err(e) => {
                        out.push(
                            state.request(Pending::Quiet, ClientFrame::UploadAbort { upload }),
                        );
                        upload_failed(state, &e);
                    }
                }
            }
        }
        ServerFrame::FileChunk {
            id,
            file,
            offset,
            data,
            eof,
        } => {
            if let Some(Pending::Download) = id.and_then(|i| state.pending.remove(&i)) {
                let step = match state.download.as_mut() {
                    Some(d) if d.id == file.id => d.piece(&file, offset, &data, eof),
                    _ => return out,
                };
                match step {
                    Ok(Step::More(line)) => {
                        if let Some(line) = line {
                            state.say(line);
                        }
                        if let Some(frame) = state.download.as_ref().map(|d| d.request()) {
                            out.push(state.request(Pending::Download, frame));
                        }
                    }
                    Ok(Step::Done(line)) => {
                        state.download = None;
                        state.say(line);
                    }
                    Err(e) => {
                        // Dropping the download removes its partial file.
                        state.download = None;
                        state.say(format!("! download failed: {e}"));
                    }
                }
            }
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
            Some(Pending::Chunk { upload, len }) => {
                let current = state.upload.as_mut().filter(|u| u.handle() == Some(upload));
                if let Some(line) = current.and_then(|u| u.acked(len)) {
                    state.say(line);
                }
                out.extend(pump_upload(state));
            }
            _ => {}
        },
        ServerFrame::Suggestions { replies, .. } => {
            let replies: Vec<String> = replies.iter().map(|r| clean(r)).collect();
            state.say(format!("* suggestions: {}", replies.join(" | ")))
        }
        ServerFrame::Error { id, code, message } => {
            let message = clean(&message);
            match id.and_then(|i| state.pending.remove(&i)) {
                Some(Pending::Enter) => {
                    state.current = state.cursors.keys().next().cloned();
                    state.say(format!("! error {code}: {message}"));
                }
                Some(Pending::UploadStart | Pending::UploadFinish) => {
                    upload_failed(state, &format!("{code}: {message}"));
                }
                // Later chunks of a refused upload are refused too: only
                // the first error is news.
                Some(Pending::Chunk { upload, .. }) => {
                    if state.upload.as_ref().and_then(|u| u.handle()) == Some(upload) {
                        upload_failed(state, &format!("{code}: {message}"));
                    }
                }
                Some(Pending::Download) => {
                    state.download = None;
                    state.say(format!("! download failed: {code}: {message}"));
                }
                _ => state.say(format!("! error {code}: {message}")),
            }
        }
        ServerFrame::Closing { reason, message } => {
            state.say(format!("! server closing: {reason}: {}", clean(&message)))
        }
        // Pong, typing and presence notices are not shown.
        _ => {}
    }
    out
}

/// Follows a room from `from`: the `subscribe` request.
fn follow(state: &mut State, room: String, from: u64) -> Request {
    state.cursors.insert(room.clone(), from);
    let rooms = vec![Cursor {
        room,
        last_seq: Some(from),
    }];
    state.request(Pending::Quiet, ClientFrame::Subscribe { rooms })
}

/// The user was added to a room (an invitation, or someone opened a direct
/// room with them). Direct rooms are followed at once, from their start.
fn added_to(state: &mut State, room: String) -> Option<Request> {
    if let Some(other) = room
        .strip_prefix("dm:")
        .and_then(|pair| pair.split(':').find(|u| !state.is_me(u)))
    {
        state.say(format!(
            "* {other} opened a direct conversation with you: {room}"
        ));
        if !state.cursors.contains_key(&room) {
            return Some(follow(state, room, 0));
        }
        return None;
    }
    state.say(format!(
        "* you were added to #{room} (/join {room} to enter it)"
    ));
    None
}

/// The upload's next chunks (or its finish), as requests.
fn pump_upload(state: &mut State) -> Vec<Request> {
    let next = match state.upload.as_mut() {
        Some(up) => up.next(),
        None => return Vec::new(),
    };
    match next {
        Ok(frames) => frames
            .into_iter()
            .map(|(pending, frame)| state.request(pending, frame))
            .collect(),
        Err(e) => {
            let abort = state
                .upload
                .as_ref()
                .and_then(|u| u.handle())
                .map(|upload| state.request(Pending::Quiet, ClientFrame::UploadAbort { upload }));
            upload_failed(state, &e);
            abort.into_iter().collect()
        }
    }
}

fn upload_failed(state: &mut State, why: &str) {
    if let Some(up) = state.upload.take() {
        state.say(format!(
            "! upload of {} to {} failed: {why}",
            up.name, up.room
        ));
    }
}
