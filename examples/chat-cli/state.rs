//! The client's state, kept across reconnections, and how it prints.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use chat_core::{ClientFrame, Cursor, Message, Request};

use crate::transfer::{Download, Upload};

/// What a pending request was for, to act on its reply.
pub enum Pending {
    /// Join, create or open-direct: the room becomes current.
    Enter,
    Leave(String),
    Invite(String, String),
    /// `upload_start` of the current upload.
    UploadStart,
    /// One chunk of upload `upload`, of this many bytes.
    Chunk {
        upload: u64,
        len: u64,
    },
    /// `upload_finish` of the current upload.
    UploadFinish,
    /// A `download` of the current download.
    Download,
    Quiet,
}

pub struct State {
    pub user: String,
    pub password: String,
    pub signup: bool,
    pub token: Option<String>,
    /// Followed rooms and the last `seq` shown from each.
    pub cursors: BTreeMap<String, u64>,
    /// The last `seq` marked read per room, by this client.
    pub marked: HashMap<String, u64>,
    pub current: Option<String>,
    pub next_id: u64,
    pub pending: HashMap<u64, Pending>,
    /// The bot stream whose line is open on screen: (stream, room, bot).
    pub open_stream: Option<(u64, String, String)>,
    pub upload: Option<Upload>,
    pub download: Option<Download>,
}

impl State {
    pub fn new(user: String, password: String, signup: bool) -> State {
        State {
            user,
            password,
            signup,
            token: None,
            cursors: BTreeMap::new(),
            marked: HashMap::new(),
            current: None,
            next_id: 0,
            pending: HashMap::new(),
            open_stream: None,
            upload: None,
            download: None,
        }
    }

    pub fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn request(&mut self, pending: Pending, frame: ClientFrame) -> Request {
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
    pub fn say(&mut self, text: impl AsRef<str>) {
        let mut out = std::io::stdout().lock();
        if self.open_stream.take().is_some() {
            let _ = writeln!(out);
        }
        let _ = writeln!(out, "{}", text.as_ref());
        let _ = out.flush();
    }

    /// Records that `seq` of a followed room was shown.
    pub fn saw(&mut self, room: &str, seq: u64) {
        if let Some(c) = self.cursors.get_mut(room) {
            *c = (*c).max(seq);
        }
    }

    /// Whether `user` is the logged-in user.
    pub fn is_me(&self, user: &str) -> bool {
        user.eq_ignore_ascii_case(&self.user)
    }

    /// `mark_read` for the current room up to the last `seq` shown there,
    /// when that is newer than what was marked already.
    pub fn mark_current(&mut self) -> Option<Request> {
        let room = self.current.clone()?;
        let seq = *self.cursors.get(&room)?;
        let marked = self.marked.entry(room.clone()).or_insert(0);
        if seq <= *marked {
            return None;
        }
        *marked = seq;
        Some(self.request(Pending::Quiet, ClientFrame::MarkRead { room, seq }))
    }

    pub fn subscribe_all(&mut self) -> Option<Request> {
        let rooms: Vec<Cursor> = chat_core::protocol::cursors(&self.cursors);
        (!rooms.is_empty()).then(|| self.request(Pending::Quiet, ClientFrame::Subscribe { rooms }))
    }
}

/// Writes to standard output as is; a closed output is not an error here.
pub fn raw(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Text from other people, made safe for a terminal: control characters
/// (escape sequences, bells, carriage returns) become `�`, and a line break
/// continues on an indented line.
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\n    "),
            '\t' => out.push(' '),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A byte count for people: `812 B`, `48 KB`, `3.1 MB` (powers of 1000).
pub fn human_size(bytes: u64) -> String {
    match bytes {
        0..1000 => format!("{bytes} B"),
        1000..1_000_000 => format!("{} KB", (bytes + 500) / 1000),
        _ => format!("{:.1} MB", bytes as f64 / 1e6),
    }
}

/// `[room #seq] sender: body [file: name size id=...]`.
pub fn message_line(m: &Message) -> String {
    let mut line = format!("[{} #{}] {}: {}", m.room, m.seq, m.sender, clean(&m.body));
    if let Some(f) = &m.file {
        if !m.body.is_empty() {
            line.push(' ');
        }
        line.push_str(&format!(
            "[file: {} {} id={}]",
            clean(&f.name),
            human_size(f.size),
            clean(&f.id)
        ));
    }
    line
}
