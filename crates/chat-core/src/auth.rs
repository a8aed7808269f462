//! Accounts and tokens: argon2id password hashes computed off the async
//! workers (invariant 7), and random, expiring, revocable session tokens of
//! which the store only ever sees a SHA-256.

use std::sync::Arc;

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::{EngineError, ErrorCode};
use crate::limits::Limits;

/// Shortest accepted password, in bytes.
pub const MIN_PASSWORD_BYTES: usize = 8;
/// Longest accepted password, in bytes (hashing cost is per byte too).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Normalises and checks a user name: 1 to 32 of `a-z 0-9 _ . -` after
/// lower-casing.
pub fn normalize_username(name: &str) -> Result<String, EngineError> {
    let lower = name.trim().to_ascii_lowercase();
    let ok = (1..=32).contains(&lower.len())
        && lower
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if ok {
        Ok(lower)
    } else {
        Err(EngineError::invalid(
            "user names are 1-32 characters of a-z, 0-9, _ . -",
        ))
    }
}

/// Hex SHA-256 of a token: what the store keeps.
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    hex(&digest)
}

/// `bytes` as lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A new random token (256 bits, base64url) and its hash.
pub fn new_token() -> (String, String) {
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let hash = hash_token(&token);
    (token, hash)
}

type Job = Box<dyn FnOnce() + Send>;

/// A few threads of its own for password hashing, fed by a bounded queue.
///
/// Why not tokio's blocking pool? Each argon2id hash allocates
/// `argon2_memory_kib` (19 MiB by default), and the C allocator keeps freed
/// blocks of that size in the arena of the thread that used them. Spread
/// over a blocking pool of hundreds of threads, a burst of sign-ups left
/// hundreds of megabytes resident; on `hash_concurrency` threads it stays
/// bounded at about that many hashes' worth.
#[derive(Debug)]
struct HashPool {
    jobs: std::sync::mpsc::SyncSender<Job>,
}

impl HashPool {
    fn new(threads: usize, queue: usize) -> std::io::Result<Self> {
        let (jobs, rx) = std::sync::mpsc::sync_channel::<Job>(queue);
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("chat-hash-{i}"))
                .spawn(move || loop {
                    // The lock is held only while waiting for one job.
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        // The engine is gone.
                        Err(_) => return,
                    }
                })?;
        }
        Ok(HashPool { jobs })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, EngineError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(_)) => {
                return Err(EngineError::new(
                    ErrorCode::ServerBusy,
                    "too many logins at once; try again shortly",
                ))
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                return Err(EngineError::new(ErrorCode::ShuttingDown, "shutting down"))
            }
        }
        rx.await
            .map_err(|_| EngineError::new(ErrorCode::Internal, "password hashing failed"))
    }
}

/// Password hashing off the async workers, on a bounded pool of its own.
#[derive(Debug)]
pub(crate) struct Hasher {
    params: Params,
    pool: HashPool,
    /// A hash to verify against when the user does not exist, so a login
    /// for an unknown name costs the same time as a wrong password.
    dummy: std::sync::OnceLock<String>,
}

impl Hasher {
    pub(crate) fn new(limits: &Limits) -> Result<Self, crate::error::BuildError> {
        let params = Params::new(limits.argon2_memory_kib, limits.argon2_iterations, 1, None)
            .map_err(|_| crate::error::BuildError::InvalidSetting {
                name: "argon2_memory_kib",
                reason: "argon2 refuses these parameters",
            })?;
        let pool = HashPool::new(limits.hash_concurrency, limits.hash_queue)
            .map_err(crate::error::BuildError::Thread)?;
        Ok(Hasher {
            params,
            pool,
            dummy: std::sync::OnceLock::new(),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, EngineError> {
        self.pool.run(f).await
    }

    /// Hashes a password into a PHC string.
    pub(crate) async fn hash(&self, password: String) -> Result<String, EngineError> {
        check_password(&password)?;
        let params = self.params.clone();
        self.blocking(move || hash_phc(&params, password.as_bytes()))
            .await?
            .ok_or_else(|| EngineError::new(ErrorCode::Internal, "password hashing failed"))
    }

    /// Checks a password against a stored hash (or, with `None`, burns the
    /// same time and answers false).
    pub(crate) async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, EngineError> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Ok(false);
        }
        let known = stored.is_some();
        let stored = match stored {
            Some(s) => s,
            None => match self.dummy.get() {
                Some(d) => d.clone(),
                None => {
                    let d = self.hash("not-a-real-password".to_owned()).await?;
                    self.dummy.get_or_init(|| d).clone()
                }
            },
        };
        let params = self.params.clone();
        let ok = self
            .blocking(move || verify_phc(&params, &stored, password.as_bytes()))
            .await?;
        Ok(ok && known)
    }
}

thread_local! {
    /// argon2's working memory, kept by each hashing thread and reused:
    /// allocating and freeing 19 MiB per hash made the C allocator keep
    /// every freed buffer resident (one more per login, never returned).
    static BLOCKS: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Largest stored-hash memory cost this code will verify with its reusable
/// buffer, as a multiple of the configured one; a hash asking for more (it
/// came from elsewhere) is refused rather than honoured.
const MAX_VERIFY_COST_FACTOR: usize = 4;

/// Runs argon2 into `out` with the thread's reusable memory.
fn argon2_into(
    argon: &Argon2<'_>,
    blocks: usize,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> bool {
    BLOCKS.with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < blocks {
            b.resize(blocks, Block::default());
        }
        argon
            .hash_password_into_with_memory(password, salt, out, &mut b[..blocks])
            .is_ok()
    })
}

/// An argon2id PHC string for `password` with a fresh salt.
fn hash_phc(params: &Params, password: &[u8]) -> Option<String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let mut raw_salt = [0u8; 64];
    let salt_bytes = salt.as_salt().decode_b64(&mut raw_salt).ok()?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    if !argon2_into(&argon, params.block_count(), password, salt_bytes, &mut out) {
        return None;
    }
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).ok()?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).ok()?),
    };
    Some(phc.to_string())
}

/// Whether `password` matches the PHC string `stored` (argon2id only).
fn verify_phc(configured: &Params, stored: &str, password: &[u8]) -> bool {
    let Ok(phc) = PasswordHash::new(stored) else {
        return false;
    };
    if phc.algorithm != Algorithm::Argon2id.ident() {
        return false;
    }
    let (Ok(params), Some(salt), Some(expected)) = (Params::try_from(&phc), phc.salt, phc.hash)
    else {
        return false;
    };
    if params.block_count() > configured.block_count() * MAX_VERIFY_COST_FACTOR {
        return false;
    }
    let version = phc
        .version
        .and_then(|v| Version::try_from(v).ok())
        .unwrap_or(Version::V0x13);
    let mut raw_salt = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut raw_salt) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    let argon = Argon2::new(Algorithm::Argon2id, version, params.clone());
    if !argon2_into(&argon, params.block_count(), password, salt_bytes, &mut out) {
        return false;
    }
    // Output's equality is constant-time.
    Output::new(&out).is_ok_and(|o| o == expected)
}

fn check_password(password: &str) -> Result<(), EngineError> {
    if (MIN_PASSWORD_BYTES..=MAX_PASSWORD_BYTES).contains(&password.len()) {
        Ok(())
    } else {
        Err(EngineError::invalid(format!(
            "passwords are {MIN_PASSWORD_BYTES} to {MAX_PASSWORD_BYTES} bytes"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0xab, 0x7f, 0x10]), "00ab7f10");
        assert_eq!(hex(&[]), "");
        assert_eq!(hash_token("t").len(), 64);
    }

    #[test]
    fn usernames_are_normalised_and_checked() {
        assert_eq!(normalize_username(" Alice ").unwrap(), "alice");
        assert!(normalize_username("").is_err());
        assert!(normalize_username("a b").is_err());
        assert!(normalize_username("dm:x").is_err());
        assert!(normalize_username(&"a".repeat(33)).is_err());
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (t1, h1) = new_token();
        let (t2, _) = new_token();
        assert_ne!(t1, t2);
        assert_eq!(hash_token(&t1), h1);
        assert_eq!(h1.len(), 64);
        assert!(!h1.contains(&t1));
    }

    #[tokio::test]
    async fn hashes_verify_and_refuse() {
        let h = Hasher::new(&Limits::default().fast_hashing_for_tests()).unwrap();
        let stored = h.hash("correct horse".into()).await.unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(h
            .verify("correct horse".into(), Some(stored.clone()))
            .await
            .unwrap());
        assert!(!h.verify("wrong horse!".into(), Some(stored)).await.unwrap());
        assert!(!h.verify("correct horse".into(), None).await.unwrap());
        // Hashes made by the argon2 crate's own API verify too, and ours
        // verify with it: the PHC strings are standard.
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let params = Params::new(256, 1, 1, None).unwrap();
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let theirs = argon
            .hash_password(b"interop pass", &salt)
            .unwrap()
            .to_string();
        assert!(h.verify("interop pass".into(), Some(theirs)).await.unwrap());
        let ours = h.hash("interop pass".into()).await.unwrap();
        assert!(argon
            .verify_password(b"interop pass", &PasswordHash::new(&ours).unwrap())
            .is_ok());
        // Garbage and other algorithms are refused, never a panic.
        assert!(!h
            .verify(
                "x".repeat(10),
                Some("$argon2i$v=19$m=256,t=1,p=1$c2FsdHNhbHQ$AAAA".into())
            )
            .await
            .unwrap());
        assert!(!h
            .verify("x".repeat(10), Some("not a hash".into()))
            .await
            .unwrap());
        assert_eq!(
            h.hash("short".into()).await.unwrap_err().code(),
            ErrorCode::Invalid
        );
    }
}
