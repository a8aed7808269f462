//! Certificate fingerprints, and a self-signed certificate kept in a data
//! folder for servers that have no certificate of their own.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use sha2::{Digest, Sha256};

use crate::{tls, Error};

/// File name of the generated certificate inside the data folder.
pub const CERT_FILE: &str = "tls-cert.pem";
/// File name of the generated private key inside the data folder.
pub const KEY_FILE: &str = "tls-key.pem";

/// The SHA-256 fingerprint of a DER certificate. Displays as upper-case hex
/// pairs separated by colons (as `openssl x509 -fingerprint -sha256`
/// prints it); parses from that form or from 64 bare hex digits.
///
/// ```
/// use chat_transport_tcp::Fingerprint;
///
/// let fp: Fingerprint = "ab".repeat(32).parse()?;
/// assert!(fp.to_string().starts_with("AB:AB:"));
/// assert_eq!(fp.to_string().parse::<Fingerprint>()?, fp);
/// # Ok::<(), chat_transport_tcp::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of(cert: &CertificateDer<'_>) -> Self {
        Fingerprint(Sha256::digest(cert.as_ref()).into())
    }

    /// The 32 digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::InvalidFingerprint(s.to_owned());
        let digits: Vec<u8> = s
            .bytes()
            .filter(|b| !matches!(b, b':' | b' ' | b'-'))
            .collect();
        if digits.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
            let hex = std::str::from_utf8(pair).map_err(|_| bad())?;
            *o = u8::from_str_radix(hex, 16).map_err(|_| bad())?;
        }
        Ok(Fingerprint(out))
    }
}

/// A self-signed certificate and its key, as stored in a data folder by
/// [`self_signed`].
#[derive(Debug)]
pub struct SelfSigned {
    /// The certificate PEM file.
    pub cert_path: PathBuf,
    /// The private key PEM file.
    pub key_path: PathBuf,
    /// The certificate's SHA-256 fingerprint, for clients to pin.
    pub fingerprint: Fingerprint,
    /// Whether this call generated the files (`false`: reused).
    pub created: bool,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl SelfSigned {
    /// A server config for this certificate (see [`tls::server_config`]).
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, Error> {
        tls::server_config(self.chain.clone(), self.key.clone_key())
    }

    /// The certificate in DER form.
    pub fn cert_der(&self) -> Option<&CertificateDer<'static>> {
        self.chain.first()
    }
}

/// Loads the self-signed certificate kept in `data_dir`
/// ([`CERT_FILE`], [`KEY_FILE`]), or on first use generates one (ECDSA
/// P-256) valid for `names` (DNS names or IP addresses; `localhost`,
/// `127.0.0.1` and `::1` when empty) and stores it there, the key readable
/// by the owner only. Returns it with its fingerprint, which a server
/// prints so clients can pin it.
pub fn self_signed(data_dir: impl AsRef<Path>, names: &[&str]) -> Result<SelfSigned, Error> {
    let dir = data_dir.as_ref();
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    let created = if cert_path.exists() && key_path.exists() {
        false
    } else {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let names: Vec<String> = if names.is_empty() {
            vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
        } else {
            names.iter().map(|n| (*n).to_owned()).collect()
        };
        let generated = rcgen::generate_simple_self_signed(names).map_err(Error::CertGen)?;
        write_private(&key_path, generated.signing_key.serialize_pem().as_bytes())?;
        std::fs::write(&cert_path, generated.cert.pem())
            .map_err(|e| Error::io(format!("writing {}", cert_path.display()), e))?;
        tracing::info!(cert = %cert_path.display(), "generated a self-signed TLS certificate");
        true
    };
    let chain = tls::load_certs(&cert_path)?;
    let key = tls::load_private_key(&key_path)?;
    let fingerprint = Fingerprint::of(&chain[0]);
    Ok(SelfSigned {
        cert_path,
        key_path,
        fingerprint,
        created,
        chain,
        key,
    })
}

/// Writes a file that only its owner may read (on Unix).
fn write_private(path: &Path, contents: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let ctx = || format!("writing {}", path.display());
    let mut file = options.open(path).map_err(|e| Error::io(ctx(), e))?;
    file.write_all(contents).map_err(|e| Error::io(ctx(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = self_signed(dir.path(), &[]).unwrap();
        assert!(first.created);
        let again = self_signed(dir.path(), &[]).unwrap();
        assert!(!again.created);
        assert_eq!(first.fingerprint, again.fingerprint);
        assert_eq!(
            Fingerprint::of(again.cert_der().unwrap()),
            again.fingerprint
        );
        again.server_config().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&first.key_path)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "key must not be readable by others");
        }
    }

    #[test]
    fn fingerprint_parsing() {
        let fp = Fingerprint([0xab; 32]);
        assert_eq!(fp.to_string().len(), 32 * 3 - 1);
        assert_eq!(fp.to_string().parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(
            "AB".repeat(32)
                .to_lowercase()
                .parse::<Fingerprint>()
                .unwrap(),
            fp
        );
        for bad in [
            "",
            "ab",
            &"zz".repeat(32),
            &"ab".repeat(33),
            "é".repeat(32).as_str(),
        ] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn missing_or_empty_pem_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        assert!(matches!(tls::load_certs(&empty), Err(Error::Pem { .. })));
        assert!(matches!(
            tls::load_private_key(&empty),
            Err(Error::Pem { .. })
        ));
        let missing = dir.path().join("missing.pem");
        assert!(matches!(tls::load_certs(&missing), Err(Error::Io { .. })));
    }
}
