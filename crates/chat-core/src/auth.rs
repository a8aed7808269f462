//! Accounts and tokens: argon2id password hashes computed off the async
//! workers (invariant 7), and random, expiring, revocable session tokens of
//! which the store only ever sees a SHA-256.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

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
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random token (256 bits, base64url) and its hash.
pub fn new_token() -> (String, String) {
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let hash = hash_token(&token);
    (token, hash)
}

/// Password hashing with a concurrency bound: each hash takes
/// `argon2_memory_kib` of memory and a blocking thread.
#[derive(Debug)]
pub(crate) struct Hasher {
    params: Params,
    slots: Arc<Semaphore>,
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
        Ok(Hasher {
            params,
            slots: Arc::new(Semaphore::new(limits.hash_concurrency)),
            dummy: std::sync::OnceLock::new(),
        })
    }

    fn argon2(params: Params) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, EngineError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| EngineError::new(ErrorCode::ShuttingDown, "shutting down"))?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|_| EngineError::new(ErrorCode::Internal, "password hashing failed"))
    }

    /// Hashes a password into a PHC string.
    pub(crate) async fn hash(&self, password: String) -> Result<String, EngineError> {
        check_password(&password)?;
        let params = self.params.clone();
        self.blocking(move || {
            let salt = SaltString::generate(&mut rand::rngs::OsRng);
            Self::argon2(params)
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
        })
        .await?
        .map_err(|_| EngineError::new(ErrorCode::Internal, "password hashing failed"))
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
            .blocking(move || {
                PasswordHash::new(&stored).is_ok_and(|h| {
                    Self::argon2(params)
                        .verify_password(password.as_bytes(), &h)
                        .is_ok()
                })
            })
            .await?;
        Ok(ok && known)
    }
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
        assert_eq!(
            h.hash("short".into()).await.unwrap_err().code(),
            ErrorCode::Invalid
        );
    }
}
