//! TLS configuration: the `ring` crypto provider restricted to modern
//! cipher suites, TLS 1.2 and 1.3 only, and certificates and keys from PEM.
//!
//! # Why the `ring` provider?
//!
//! rustls' default provider, aws-lc-rs, needs cmake and a C toolchain
//! tuned for it at build time; `ring` builds with a plain C compiler. Every
//! config here is built with an explicit provider, so the crate also works
//! when another crate of the program enables aws-lc-rs as well (rustls then
//! has no single default to fall back on).

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::Error;

/// The protocol versions offered and accepted: TLS 1.3 and TLS 1.2.
/// (rustls implements nothing older; TLS 1.0 and 1.1 clients are refused
/// with a `protocol_version` alert.)
pub static PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The `ring` provider with only forward-secret AEAD suites: the three TLS
/// 1.3 suites, and for TLS 1.2 ECDHE with AES-GCM or ChaCha20-Poly1305.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    use ring::cipher_suite as cs;
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        ..ring::default_provider()
    })
}

/// A server config for a certificate chain and its private key, with
/// [`crypto_provider`] and [`PROTOCOL_VERSIONS`], no client authentication.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, Error> {
    let config = ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}

/// A server config from a PEM certificate chain file (leaf first) and a
/// PEM private key file (PKCS#8, PKCS#1 or SEC1).
pub fn server_config_from_pem_files(
    cert_path: impl AsRef<Path>,
    key_path: impl AsRef<Path>,
) -> Result<Arc<ServerConfig>, Error> {
    server_config(load_certs(cert_path)?, load_private_key(key_path)?)
}

/// Every certificate in a PEM file, in file order.
pub fn load_certs(path: impl AsRef<Path>) -> Result<Vec<CertificateDer<'static>>, Error> {
    let path = path.as_ref();
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(Error::Pem {
            path: path.to_owned(),
            message: "no CERTIFICATE block found".to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub fn load_private_key(path: impl AsRef<Path>) -> Result<PrivateKeyDer<'static>, Error> {
    let path = path.as_ref();
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| pem_error(path, e))
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))
}

fn pem_error(path: &Path, e: rustls::pki_types::pem::Error) -> Error {
    Error::Pem {
        path: path.to_owned(),
        message: e.to_string(),
    }
}
