//! Typed lines: `/commands` and messages to the current room.

use chat_core::{BotTask, ClientFrame, Request};

use crate::state::{Pending, State};
use crate::transfer::{Download, Upload};

pub const COMMANDS: &str = "\
commands:
  /join ROOM               join a room and make it current (marks it read)
  /leave [ROOM]            leave a room (default: the current one)
  /create ROOM [--private] create a room (public unless --private)
  /invite ROOM USER        add a user to a room you administer
  /dm USER                 open the direct room with a user
  /rooms                   list rooms, with unread counts
  /history [N]             show the last N messages of the current room
  /who                     list the members of the current room
  /ask QUESTION            ask the room's bot
  /summarize [N]           have the bot summarise the last N messages
  /upload PATH [CAPTION]   share a file in the current room (quote a PATH
                           with spaces: \"my file.pdf\")
  /download ID [PATH]      save a shared file to PATH (a file or a folder),
                           else to ./NAME; never overwrites a file
  /files                   list the files shared in the current room
  /quit                    leave the program
  /help                    show this list
  anything else            is sent to the current room";

/// Acts on a typed line: `None` to quit, else the requests to send.
pub fn on_line(state: &mut State, line: &str) -> Option<Vec<Request>> {
    if line.is_empty() {
        return Some(Vec::new());
    }
    let Some(cmd) = line.strip_prefix('/') else {
        let Some(room) = state.current.clone() else {
            return usage(state, "no current room: /join ROOM or /create ROOM first");
        };
        let client_id = Some(format!("cli-{}-{}", std::process::id(), state.id()));
        let frame = ClientFrame::Send {
            room,
            body: line.to_owned(),
            client_id,
        };
        return Some(vec![state.request(Pending::Quiet, frame)]);
    };
    let (name, rest) = cmd.split_once(' ').unwrap_or((cmd, ""));
    let rest = rest.trim();
    let words: Vec<&str> = rest.split_whitespace().collect();
    let current = state.current.clone();
    let number = |default: u32| words.first().map_or(Ok(default), |n| n.parse::<u32>());
    let (pending, frame) = match (name, words.as_slice(), current) {
        ("quit", _, _) => return None,
        ("help", _, _) => {
            state.say(crate::commands::COMMANDS);
            return Some(Vec::new());
        }
        ("join", [room], _) => {
            state.current = Some((*room).to_owned());
            let room = (*room).to_owned();
            (Pending::Enter, ClientFrame::Join { room })
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
        ("leave", [room], _) => {
            let room = (*room).to_owned();
            (Pending::Leave(room.clone()), ClientFrame::Leave { room })
        }
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
            let user = (*user).to_owned();
            (Pending::Enter, ClientFrame::OpenDirect { user })
        }
        ("rooms", [], _) => {
            // Mark the current room first, so that its count is right.
            let mut out: Vec<Request> = state.mark_current().into_iter().collect();
            out.push(state.request(Pending::Quiet, ClientFrame::ListRooms));
            return Some(out);
        }
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
        ("files", [], Some(room)) => (Pending::Quiet, ClientFrame::ListFiles { room }),
        ("upload", [_, ..], Some(room)) => {
            if let Some(up) = &state.upload {
                let busy = format!("already uploading {}; wait for it to finish", up.name);
                return usage(state, &busy);
            }
            let (path, caption) = split_path(rest);
            match Upload::open(std::path::Path::new(path), room, caption.to_owned()) {
                Ok((upload, frame)) => {
                    state.upload = Some(upload);
                    (Pending::UploadStart, frame)
                }
                Err(e) => return usage(state, &format!("cannot upload: {e}")),
            }
        }
        ("download", [id, ..], _) => {
            if let Some(d) = &state.download {
                let busy = format!("already downloading {}; wait for it to finish", d.id);
                return usage(state, &busy);
            }
            let (_, path) = split_path(rest);
            let path = (!path.is_empty()).then(|| unquote(path));
            match Download::new(id, path) {
                Ok(d) => {
                    let frame = d.request();
                    state.download = Some(d);
                    (Pending::Download, frame)
                }
                Err(e) => return usage(state, &format!("cannot download: {e}")),
            }
        }
        ("history" | "who" | "ask" | "summarize" | "leave" | "files" | "upload", _, None) => {
            return usage(state, "no current room: /join ROOM first");
        }
        (
            "join" | "create" | "leave" | "invite" | "dm" | "rooms" | "history" | "who" | "ask"
            | "summarize" | "files" | "upload" | "download",
            _,
            _,
        ) => {
            return usage(state, "see /help");
        }
        _ => return usage(state, "unknown command; /help lists them"),
    };
    Some(vec![state.request(pending, frame)])
}

/// Splits `"a path" rest` or `path rest` into the path and the rest.
fn split_path(text: &str) -> (&str, &str) {
    let text = text.trim();
    if let Some(quoted) = text.strip_prefix('"') {
        if let Some((path, rest)) = quoted.split_once('"') {
            return (path, rest.trim());
        }
    }
    match text.split_once(char::is_whitespace) {
        Some((path, rest)) => (path, rest.trim()),
        None => (text, ""),
    }
}

/// `"text"` without its quotes; other text as it is.
fn unquote(text: &str) -> &str {
    text.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text)
}

fn usage(state: &mut State, text: &str) -> Option<Vec<Request>> {
    state.say(format!("! {text}"));
    Some(Vec::new())
}
