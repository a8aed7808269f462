//! File sharing: [`FileSettings`] (size, type and quota limits), content
//! sniffing, name sanitising, and the [`FileVault`]: a folder where files
//! are stored by content hash.
//!
//! No name from a client ever reaches the file system: an upload is written
//! to a temporary file with a server-chosen name, hashed as it arrives, and
//! renamed to `<dir>/<first two hex digits>/<sha256>` once complete and
//! accepted. An upload that is abandoned, interrupted or refused removes its
//! temporary file, so nothing partial is left behind.

use std::path::PathBuf;

use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::error::{EngineError, ErrorCode};

/// Bounds and location of file sharing.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FileSettings {
    /// The vault folder.
    pub dir: PathBuf,
    /// Largest file, in bytes. Default 10 MiB.
    pub max_file_bytes: u64,
    /// Media types accepted, as sniffed from the content and as implied by
    /// the name's extension (both must agree). Default: PNG, JPEG, GIF,
    /// WebP, PDF, plain text, ZIP.
    pub allowed_types: Vec<String>,
    /// Total bytes one user may upload. Default 100 MiB.
    pub user_quota_bytes: u64,
    /// Largest upload chunk over frames, before base64. Default 32 KiB (fits
    /// the default 64 KiB frame once encoded).
    pub chunk_bytes: usize,
    /// Uploads one session may have open at once. Default 4.
    pub max_uploads_per_session: usize,
}

impl FileSettings {
    /// Defaults, storing files in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileSettings {
            dir: dir.into(),
            max_file_bytes: 10 * 1024 * 1024,
            allowed_types: [
                "image/png",
                "image/jpeg",
                "image/gif",
                "image/webp",
                "application/pdf",
                "text/plain",
                "application/zip",
            ]
            .map(str::to_owned)
            .to_vec(),
            user_quota_bytes: 100 * 1024 * 1024,
            chunk_bytes: 32 * 1024,
            max_uploads_per_session: 4,
        }
    }

    /// Sets [`FileSettings::max_file_bytes`].
    #[must_use]
    pub fn max_file_bytes(mut self, v: u64) -> Self {
        self.max_file_bytes = v;
        self
    }

    /// Sets [`FileSettings::allowed_types`].
    #[must_use]
    pub fn allowed_types(mut self, v: &[&str]) -> Self {
        self.allowed_types = v.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Sets [`FileSettings::user_quota_bytes`].
    #[must_use]
    pub fn user_quota_bytes(mut self, v: u64) -> Self {
        self.user_quota_bytes = v;
        self
    }

    /// Sets [`FileSettings::chunk_bytes`].
    #[must_use]
    pub fn chunk_bytes(mut self, v: usize) -> Self {
        self.chunk_bytes = v;
        self
    }
}

/// The media type of content, from its first bytes;
/// `application/octet-stream` when unknown.
pub fn sniff(head: &[u8]) -> &'static str {
    const SIGS: [(&[u8], &str); 8] = [
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xff\xd8\xff", "image/jpeg"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"%PDF-", "application/pdf"),
        (b"PK\x03\x04", "application/zip"),
        (b"PK\x05\x06", "application/zip"),
        (b"\x7fELF", "application/x-executable"),
    ];
    for (sig, mime) in SIGS {
        if head.starts_with(sig) {
            return mime;
        }
    }
    if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        return "image/webp";
    }
    if head.starts_with(b"MZ") {
        return "application/x-msdownload";
    }
    // Text: no NUL and valid UTF-8, allowing a multi-byte character cut at
    // the end of the sniffed window.
    if !head.contains(&0) {
        match std::str::from_utf8(head) {
            Ok(_) => return "text/plain",
            Err(e) if e.error_len().is_none() => return "text/plain",
            Err(_) => {}
        }
    }
    "application/octet-stream"
}

/// The media type a file name's extension claims, if known.
pub fn type_from_name(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        "txt" | "md" | "log" | "csv" | "json" => "text/plain",
        "zip" => "application/zip",
        _ => return None,
    })
}

/// Longest kept file name, in bytes.
const MAX_NAME_BYTES: usize = 128;

/// A safe display name: the last path component, without control
/// characters, leading dots or path separators, at most 128 bytes.
pub fn sanitize_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base
        .chars()
        .map(|c| {
            if c.is_control() || ":*?\"<>|".contains(c) {
                '_'
            } else {
                c
            }
        })
        .collect();
    let trimmed = cleaned.trim().trim_start_matches('.').trim();
    let mut out = String::new();
    for c in trimmed.chars() {
        if out.len() + c.len_utf8() > MAX_NAME_BYTES {
            break;
        }
        out.push(c);
    }
    if out.is_empty() {
        "file".to_owned()
    } else {
        out
    }
}

/// Bytes sniffed at the start of an upload.
const SNIFF_BYTES: usize = 512;

/// The folder where shared files live, by content hash.
#[derive(Debug)]
pub struct FileVault {
    settings: FileSettings,
}

/// What a finished upload stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Hex SHA-256 of the content.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Media type, sniffed from the content.
    pub mime: String,
    /// Sanitised name.
    pub name: String,
}

fn file_error(code: ErrorCode, message: impl Into<String>) -> EngineError {
    EngineError::new(code, message)
}

fn io_error(e: std::io::Error) -> EngineError {
    tracing::error!(error = %e, "file vault I/O failed");
    file_error(ErrorCode::StoreFailed, "the file could not be stored")
}

impl FileVault {
    /// Opens (creating) the vault folder and clears temporary files left by
    /// a crash.
    pub fn open(settings: FileSettings) -> std::io::Result<Self> {
        let tmp = settings.dir.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        Ok(FileVault { settings })
    }

    /// The settings.
    pub fn settings(&self) -> &FileSettings {
        &self.settings
    }

    /// Where the content with this hash lives. The hash is checked to be
    /// 64 hex digits, so nothing else can form a path.
    pub fn blob_path(&self, sha256: &str) -> Option<PathBuf> {
        let ok = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
        ok.then(|| self.settings.dir.join(&sha256[..2]).join(sha256))
    }

    /// Starts an upload of `declared` bytes named `name`.
    pub async fn begin(&self, name: &str, declared: u64) -> Result<Upload, EngineError> {
        let name = sanitize_name(name);
        if declared > self.settings.max_file_bytes {
            return Err(file_error(
                ErrorCode::MessageTooLarge,
                format!("files are at most {} bytes", self.settings.max_file_bytes),
            ));
        }
        if declared == 0 {
            return Err(file_error(ErrorCode::Invalid, "empty file"));
        }
        let claimed = type_from_name(&name);
        if !claimed.is_some_and(|t| self.settings.allowed_types.iter().any(|a| a == t)) {
            return Err(file_error(
                ErrorCode::Invalid,
                "this type of file is not allowed",
            ));
        }
        let mut raw = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut raw);
        let tmp = crate::auth::hex(&raw);
        let path = self.settings.dir.join("tmp").join(tmp);
        let file = tokio::fs::File::create(&path).await.map_err(io_error)?;
        Ok(Upload {
            guard: TempFile(Some(path)),
            file,
            hasher: Sha256::new(),
            head: Vec::new(),
            size: 0,
            declared,
            name,
            dir: self.settings.dir.clone(),
            allowed: self.settings.allowed_types.clone(),
        })
    }

    /// Reads up to `len` bytes of the content `sha256` from `offset`.
    pub async fn read(
        &self,
        sha256: &str,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, EngineError> {
        let path = self
            .blob_path(sha256)
            .ok_or_else(|| EngineError::not_found("file"))?;
        let mut f = tokio::fs::File::open(&path).await.map_err(io_error)?;
        f.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(io_error)?;
        let mut buf = Vec::with_capacity(len);
        (&mut f)
            .take(len as u64)
            .read_to_end(&mut buf)
            .await
            .map_err(io_error)?;
        Ok(buf)
    }
}

/// Removes its file when dropped, unless disarmed.
#[derive(Debug)]
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            // One unlink; not worth a blocking-pool round trip.
            let _ = std::fs::remove_file(p);
        }
    }
}

/// An upload in progress. Dropping it without [`finish`](Upload::finish)
/// deletes what was written.
#[derive(Debug)]
pub struct Upload {
    guard: TempFile,
    file: tokio::fs::File,
    hasher: Sha256,
    head: Vec<u8>,
    size: u64,
    declared: u64,
    name: String,
    dir: PathBuf,
    allowed: Vec<String>,
}

impl Upload {
    /// The sanitised name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The declared size.
    pub fn declared(&self) -> u64 {
        self.declared
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.size
    }

    /// Appends bytes. More than the declared size is refused, and the upload
    /// should then be dropped.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), EngineError> {
        let new_size = self.size + data.len() as u64;
        if new_size > self.declared {
            return Err(file_error(
                ErrorCode::MessageTooLarge,
                "more bytes than the declared size",
            ));
        }
        if self.head.len() < SNIFF_BYTES {
            let take = (SNIFF_BYTES - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..take]);
            // Refuse a disguised file as soon as its first bytes show it.
            if self.head.len() >= SNIFF_BYTES.min(self.declared as usize) {
                self.check_type()?;
            }
        }
        self.hasher.update(data);
        self.file.write_all(data).await.map_err(io_error)?;
        self.size = new_size;
        Ok(())
    }

    fn check_type(&self) -> Result<&'static str, EngineError> {
        let sniffed = sniff(&self.head);
        let claimed = type_from_name(&self.name);
        if claimed != Some(sniffed) || !self.allowed.iter().any(|a| a == sniffed) {
            return Err(file_error(
                ErrorCode::Invalid,
                format!("the content ({sniffed}) does not match an allowed type for this name"),
            ));
        }
        Ok(sniffed)
    }

    /// Completes the upload: checks size and type, makes the content durable
    /// and moves it to its content-hash path.
    pub async fn finish(mut self) -> Result<Stored, EngineError> {
        if self.size != self.declared {
            return Err(file_error(
                ErrorCode::Invalid,
                format!("received {} of {} bytes", self.size, self.declared),
            ));
        }
        let mime = self.check_type()?;
        self.file.flush().await.map_err(io_error)?;
        self.file.sync_all().await.map_err(io_error)?;
        let sha256 = crate::auth::hex(&self.hasher.finalize_reset());
        let dir = self.dir.join(&sha256[..2]);
        tokio::fs::create_dir_all(&dir).await.map_err(io_error)?;
        let dest = dir.join(&sha256);
        let tmp = self
            .guard
            .0
            .clone()
            .ok_or_else(|| io_error(std::io::Error::other("upload finished twice")))?;
        // Same content, same path: renaming over an existing copy is fine.
        tokio::fs::rename(&tmp, &dest).await.map_err(io_error)?;
        self.guard.0 = None;
        Ok(Stored {
            sha256,
            size: self.size,
            mime: mime.to_owned(),
            name: std::mem::take(&mut self.name),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing_knows_the_usual_types() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), "image/png");
        assert_eq!(sniff(b"\xff\xd8\xff\xe0"), "image/jpeg");
        assert_eq!(sniff(b"%PDF-1.7"), "application/pdf");
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), "image/webp");
        assert_eq!(sniff("héllo wörld".as_bytes()), "text/plain");
        assert_eq!(sniff(b"\x7fELF\x02\x01"), "application/x-executable");
        assert_eq!(sniff(b"MZ\x90\0"), "application/x-msdownload");
        assert_eq!(sniff(b"\0\x01\x02"), "application/octet-stream");
        // A multi-byte character cut by the sniff window is still text.
        assert_eq!(sniff(&"é".as_bytes()[..1]), "text/plain");
    }

    #[test]
    fn names_lose_their_paths() {
        assert_eq!(sanitize_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_name("..\\..\\boot.ini"), "boot.ini");
        assert_eq!(sanitize_name("/abs/path/x.png"), "x.png");
        assert_eq!(sanitize_name("...hidden.txt"), "hidden.txt");
        assert_eq!(sanitize_name("a\u{0}b\nc.txt"), "a_b_c.txt");
        assert_eq!(sanitize_name(".."), "file");
        assert_eq!(sanitize_name(""), "file");
        assert!(sanitize_name(&"é".repeat(200)).len() <= 128);
    }

    #[test]
    fn blob_paths_need_a_real_hash() {
        let v = FileVault {
            settings: FileSettings::new("/vault"),
        };
        assert!(v.blob_path("../../etc/passwd").is_none());
        assert!(v.blob_path(&"g".repeat(64)).is_none());
        let p = v.blob_path(&"ab".repeat(32)).unwrap();
        assert!(p.starts_with("/vault/ab"));
    }
}
