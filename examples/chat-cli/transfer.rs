//! `/upload` and `/download`: one of each at a time, driven by the replies
//! to their frames.
//!
//! An upload sends up to [`WINDOW`] chunks ahead of their `ok`s and
//! finishes once every chunk is acknowledged; it ends with the connection
//! (the server drops what it received). A download asks for one piece at a
//! time from the offset it has reached, so after a reconnection it goes on
//! where it stopped. Local files are read and written with blocking calls,
//! one chunk (32 KiB by default) at a time: a terminal client has nothing
//! else to do meanwhile.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use chat_core::{ClientFrame, FileRef};
use chat_transport_tcp::files;

use crate::state::{clean, human_size, Pending};

/// Upload chunks sent ahead of their acknowledgements.
const WINDOW: usize = 4;

/// Progress in quarters (0 to 4) of `done` out of `total`.
fn quarter(done: u64, total: u64) -> u64 {
    done.saturating_mul(4).checked_div(total).unwrap_or(4)
}

/// A line each time a multi-chunk transfer passes a quarter (not at 100 %:
/// the end has its own line).
fn progress(
    verb: &str,
    name: &str,
    done: u64,
    total: u64,
    chunk: u64,
    shown: &mut u64,
) -> Option<String> {
    let q = quarter(done, total);
    if total <= chunk || q == *shown || q >= 4 {
        return None;
    }
    *shown = q;
    Some(format!(
        "* {verb} {name}: {}% ({} of {})",
        q * 25,
        human_size(done),
        human_size(total)
    ))
}

/// An upload in progress.
pub struct Upload {
    pub name: String,
    pub room: String,
    caption: String,
    file: File,
    pub size: u64,
    /// The server's handle, once `upload_ready` came.
    handle: Option<u64>,
    chunk: usize,
    sent: u64,
    acked: u64,
    in_flight: usize,
    finishing: bool,
    shown: u64,
}

impl Upload {
    /// Opens `path` for an upload to `room`; the `upload_start` frame. The
    /// server gets the file's base name and decides whether it is safe.
    pub fn open(
        path: &Path,
        room: String,
        caption: String,
    ) -> Result<(Upload, ClientFrame), String> {
        let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let meta = file
            .metadata()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if !meta.is_file() {
            return Err(format!("{} is not a file", path.display()));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| format!("{} has no file name", path.display()))?;
        let frame = ClientFrame::UploadStart {
            room: room.clone(),
            name: name.clone(),
            size: meta.len(),
        };
        let upload = Upload {
            name,
            room,
            caption,
            file,
            size: meta.len(),
            handle: None,
            chunk: 0,
            sent: 0,
            acked: 0,
            in_flight: 0,
            finishing: false,
            shown: 0,
        };
        Ok((upload, frame))
    }

    pub fn handle(&self) -> Option<u64> {
        self.handle
    }

    /// `upload_ready` came: chunks may go.
    pub fn ready(&mut self, handle: u64, chunk_bytes: usize) -> Result<(), String> {
        if chunk_bytes == 0 {
            return Err("the server announced empty chunks".to_owned());
        }
        (self.handle, self.chunk) = (Some(handle), chunk_bytes);
        Ok(())
    }

    /// A chunk of `len` bytes was acknowledged; maybe a progress line.
    pub fn acked(&mut self, len: u64) -> Option<String> {
        self.acked += len;
        self.in_flight = self.in_flight.saturating_sub(1);
        let chunk = self.chunk as u64;
        progress(
            "uploading",
            &self.name,
            self.acked,
            self.size,
            chunk,
            &mut self.shown,
        )
    }

    /// The frames to send now: chunks up to the window, then, once every
    /// chunk is acknowledged, the finish.
    pub fn next(&mut self) -> Result<Vec<(Pending, ClientFrame)>, String> {
        let Some(upload) = self.handle else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        while self.in_flight < WINDOW && self.sent < self.size {
            let len = (self.size - self.sent).min(self.chunk as u64);
            let mut buf = vec![0u8; len as usize];
            self.file
                .read_exact(&mut buf)
                .map_err(|e| format!("reading the file: {e} (did it change?)"))?;
            self.sent += len;
            self.in_flight += 1;
            out.push((
                Pending::Chunk { upload, len },
                files::upload_chunk(upload, &buf),
            ));
        }
        if self.acked == self.size && !self.finishing {
            self.finishing = true;
            let frame = ClientFrame::UploadFinish {
                upload,
                body: std::mem::take(&mut self.caption),
                client_id: Some(format!("cli-up-{}-{upload}", std::process::id())),
            };
            out.push((Pending::UploadFinish, frame));
        }
        Ok(out)
    }
}

/// Where a download goes.
enum Dest {
    /// `./<name>`, the name from the server made safe.
    Here,
    /// Into this existing folder, under the safe name.
    Folder(PathBuf),
    /// Exactly this path (given by the user).
    Path(PathBuf),
}

/// What a received piece calls for.
pub enum Step {
    /// Ask for the next piece; maybe print a progress line.
    More(Option<String>),
    /// Complete; the line to print.
    Done(String),
}

/// A download in progress. Dropped before it completes, it removes the
/// partial file it wrote.
pub struct Download {
    pub id: String,
    dest: Dest,
    /// The file being written, once the first piece named it.
    out: Option<(File, PathBuf)>,
    received: u64,
    complete: bool,
    shown: u64,
}

impl Download {
    /// A download of file `id` to `path`, or `./<its name>` when `None`.
    /// An existing file is never overwritten.
    pub fn new(id: &str, path: Option<&str>) -> Result<Download, String> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!("{id:?} is not a file id (see /files)"));
        }
        let dest = match path.map(PathBuf::from) {
            None => Dest::Here,
            Some(p) if p.is_dir() => Dest::Folder(p),
            Some(p) if p.exists() || p.is_symlink() => {
                return Err(format!("{} exists; not overwriting it", p.display()))
            }
            Some(p) => Dest::Path(p),
        };
        Ok(Download {
            id: id.to_owned(),
            dest,
            out: None,
            received: 0,
            complete: false,
            shown: 0,
        })
    }

    /// The request for the next piece.
    pub fn request(&self) -> ClientFrame {
        ClientFrame::Download {
            file: self.id.clone(),
            offset: self.received,
        }
    }

    /// A piece arrived. An error ends the download (and removes what it
    /// wrote, when the download is dropped).
    pub fn piece(
        &mut self,
        file: &FileRef,
        offset: u64,
        data: &str,
        eof: bool,
    ) -> Result<Step, String> {
        if offset != self.received {
            return Err(format!("piece at {offset}, expected {}", self.received));
        }
        let bytes = files::decode_chunk(data).map_err(|e| e.to_string())?;
        let len = bytes.len() as u64;
        if self.received + len > file.size || (len == 0 && !eof) {
            return Err("the server sent more or less than the file's size".to_owned());
        }
        if self.out.is_none() {
            let path = self.path_for(&file.name)?;
            let out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists => format!(
                        "{} exists; not overwriting it (give a PATH: /download ID PATH)",
                        path.display()
                    ),
                    _ => format!("{}: {e}", path.display()),
                })?;
            self.out = Some((out, path));
        }
        let Some((out, path)) = self.out.as_mut() else {
            return Err("no file to write to".to_owned());
        };
        out.write_all(&bytes)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        self.received += len;
        if !eof {
            let line = progress(
                "downloading",
                &clean(&file.name),
                self.received,
                file.size,
                len,
                &mut self.shown,
            );
            return Ok(Step::More(line));
        }
        if self.received != file.size {
            return Err(format!("got {} of {} bytes", self.received, file.size));
        }
        out.sync_all()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        self.complete = true;
        Ok(Step::Done(format!(
            "* saved {} ({}) to {}",
            clean(&file.name),
            human_size(file.size),
            path.display()
        )))
    }

    fn path_for(&self, name: &str) -> Result<PathBuf, String> {
        let safe = || {
            files::local_name(name)
                .ok_or_else(|| format!("no usable file name in {name:?}: give a PATH"))
        };
        Ok(match &self.dest {
            Dest::Here => Path::new(".").join(safe()?),
            Dest::Folder(dir) => dir.join(safe()?),
            Dest::Path(p) => p.clone(),
        })
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        if let (false, Some((_, path))) = (self.complete, self.out.take()) {
            let _ = std::fs::remove_file(path);
        }
    }
}
