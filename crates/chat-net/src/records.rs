//! TLS records after the handshake: framed here, protected by rustls.
//!
//! Once a handshake is over, rustls hands over the traffic secrets and a
//! small [`KernelConnection`] that derives the next ones (its API for
//! kernel TLS). Protecting records stays rustls' work: the cipher suite's
//! own `MessageEncrypter` and `MessageDecrypter` (nonces, additional data,
//! TLS 1.3's inner content type and padding). What [`Records`] does is
//! the framing around them: record headers and lengths, sequence numbers,
//! the suite's confidentiality limit (a TLS 1.3 key update before it is
//! reached; a TLS 1.2 connection is closed), the client's key updates,
//! alerts and close_notify.
//!
//! Why: rustls' connection object stays 1,088 bytes inline for a
//! connection's life, plus a 640-byte vector its handshake deframer never
//! gives back, its protocol state and two queues: with the keys, over
//! 3 KiB of every idle TLS connection. After the hand-over an idle
//! connection keeps the two keys and rustls' key schedule.

use std::io;

use rustls::crypto::cipher::{
    AeadKey, InboundOpaqueMessage, Iv, MessageDecrypter, MessageEncrypter, OutboundChunks,
    OutboundPlainMessage,
};
use rustls::kernel::KernelConnection;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::{CipherSuite, ConnectionTrafficSecrets, ContentType, ProtocolVersion};
use rustls::{HandshakeType, SupportedCipherSuite};

use crate::tls::tls_error;

/// A record header: type, legacy version, length.
const HEADER: usize = 5;

/// Most plaintext in one record (RFC 8446 5.1, RFC 5246 6.2.1).
const MAX_FRAGMENT: usize = 16_384;

/// Most ciphertext one record may carry: TLS 1.2 allows 2,048 bytes of
/// expansion (TLS 1.3, 256).
const MAX_CIPHERTEXT: usize = MAX_FRAGMENT + 2_048;

/// A TLS 1.3 `key_update` handshake message with `update_not_requested`.
const KEY_UPDATE: [u8; 5] = [24, 0, 0, 1, 0];

/// What [`Records::open`] found.
#[derive(Debug)]
pub(crate) struct Opened {
    /// Bytes of whole records taken from the front of the input.
    pub(crate) used: usize,
    /// The client sent close_notify: nothing after it is read.
    pub(crate) closed: bool,
}

/// A connection's records after the handshake.
pub(crate) struct Records {
    kernel: KernelConnection<ServerConnectionData>,
    enc: Box<dyn MessageEncrypter>,
    dec: Box<dyn MessageDecrypter>,
    tx_seq: u64,
    rx_seq: u64,
    /// Records one key may protect: the suite's confidentiality limit.
    tx_limit: u64,
}

/// Whether rustls can hand `conn`'s records over: its handshake is over
/// (a TLS 1.3 server writes before the client's Finished has come) and its
/// suite's secrets are of a kind this module takes.
pub(crate) fn ready(conn: &UnbufferedServerConnection) -> bool {
    use CipherSuite as C;
    !conn.is_handshaking()
        && conn.negotiated_cipher_suite().is_some_and(|suite| {
            matches!(
                suite.suite(),
                C::TLS13_AES_128_GCM_SHA256
                    | C::TLS13_AES_256_GCM_SHA384
                    | C::TLS13_CHACHA20_POLY1305_SHA256
                    | C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                    | C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                    | C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                    | C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
                    | C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
                    | C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
            )
        })
}

fn key_and_iv(secrets: ConnectionTrafficSecrets) -> io::Result<(AeadKey, Iv)> {
    match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv }
        | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
        | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => Ok((key, iv)),
        _ => Err(tls_error("traffic secrets of an unknown kind")),
    }
}

/// The suite's encrypter for `secrets` (for TLS 1.2 the IV is the fixed
/// part and the explicit nonce's start, as rustls extracted them).
fn encrypter(
    suite: SupportedCipherSuite,
    secrets: ConnectionTrafficSecrets,
) -> io::Result<Box<dyn MessageEncrypter>> {
    let (key, iv) = key_and_iv(secrets)?;
    match suite {
        SupportedCipherSuite::Tls13(s) => Ok(s.aead_alg.encrypter(key, iv)),
        SupportedCipherSuite::Tls12(s) => {
            let shape = s.aead_alg.key_block_shape();
            let iv = iv.as_ref();
            let fixed = iv.get(..shape.fixed_iv_len);
            let explicit =
                iv.get(shape.fixed_iv_len..shape.fixed_iv_len + shape.explicit_nonce_len);
            match (fixed, explicit) {
                (Some(fixed), Some(explicit)) => Ok(s.aead_alg.encrypter(key, fixed, explicit)),
                _ => Err(tls_error("traffic IV of an unexpected length")),
            }
        }
    }
}

/// The suite's decrypter for `secrets`.
fn decrypter(
    suite: SupportedCipherSuite,
    secrets: ConnectionTrafficSecrets,
) -> io::Result<Box<dyn MessageDecrypter>> {
    let (key, iv) = key_and_iv(secrets)?;
    match suite {
        SupportedCipherSuite::Tls13(s) => Ok(s.aead_alg.decrypter(key, iv)),
        SupportedCipherSuite::Tls12(s) => {
            let fixed = s.aead_alg.key_block_shape().fixed_iv_len;
            match iv.as_ref().get(..fixed) {
                Some(fixed) => Ok(s.aead_alg.decrypter(key, fixed)),
                None => Err(tls_error("traffic IV of an unexpected length")),
            }
        }
    }
}

fn next(seq: u64) -> io::Result<u64> {
    seq.checked_add(1)
        .ok_or_else(|| tls_error("TLS sequence number exhausted"))
}

impl Records {
    /// Takes `conn`'s records over. Check [`ready`] first: `conn` is
    /// consumed, and lost if rustls refuses.
    pub(crate) fn take_over(conn: UnbufferedServerConnection) -> io::Result<Records> {
        let (secrets, kernel) = conn.dangerous_into_kernel_connection().map_err(tls_error)?;
        let suite = kernel.negotiated_cipher_suite();
        let (tx_seq, tx) = secrets.tx;
        let (rx_seq, rx) = secrets.rx;
        let tx_limit = match suite {
            SupportedCipherSuite::Tls13(s) => s.common.confidentiality_limit,
            SupportedCipherSuite::Tls12(s) => s.common.confidentiality_limit,
        };
        Ok(Records {
            enc: encrypter(suite, tx)?,
            dec: decrypter(suite, rx)?,
            kernel,
            tx_seq,
            rx_seq,
            tx_limit,
        })
    }

    fn tls13(&self) -> bool {
        self.kernel.protocol_version() == ProtocolVersion::TLSv1_3
    }

    /// Decrypts the whole records at the front of `incoming` (in place):
    /// application data goes to `deliver`, a key update is acted on (its
    /// answer, if the client asked for one, encrypted into `out`), alerts
    /// end the connection. Stops after close_notify.
    pub(crate) fn open(
        &mut self,
        incoming: &mut [u8],
        out: &mut Vec<u8>,
        mut deliver: impl FnMut(&[u8]),
    ) -> io::Result<Opened> {
        let mut at = 0;
        while let Some(&[typ, v0, v1, l0, l1]) = incoming.get(at..at + HEADER) {
            let len = usize::from(u16::from_be_bytes([l0, l1]));
            if len > MAX_CIPHERTEXT {
                return Err(tls_error("TLS record over the size limit"));
            }
            let end = at + HEADER + len;
            let Some(payload) = incoming.get_mut(at + HEADER..end) else {
                break;
            };
            let msg = InboundOpaqueMessage::new(
                ContentType::from(typ),
                ProtocolVersion::from(u16::from_be_bytes([v0, v1])),
                payload,
            );
            let plain = self.dec.decrypt(msg, self.rx_seq).map_err(tls_error)?;
            self.rx_seq = next(self.rx_seq)?;
            at = end;
            match plain.typ {
                ContentType::ApplicationData => deliver(plain.payload),
                ContentType::Alert => match *plain.payload {
                    // close_notify: the client will send nothing more.
                    [_, 0] => {
                        return Ok(Opened {
                            used: at,
                            closed: true,
                        })
                    }
                    // user_canceled, and TLS 1.2's other warnings.
                    [_, 90] => {}
                    [1, _] if !self.tls13() => {}
                    _ => return Err(tls_error("the client sent a TLS alert")),
                },
                // A key update ends its record: the next one is under the
                // new key (RFC 8446, 5.1), so nothing may follow it.
                ContentType::Handshake if self.tls13() => match *plain.payload {
                    [typ, 0, 0, 1, request]
                        if HandshakeType::from(typ) == HandshakeType::KeyUpdate =>
                    {
                        self.client_key_update(request, out)?;
                    }
                    _ => return Err(tls_error("a TLS handshake message after the handshake")),
                },
                // TLS 1.2 renegotiation (rustls refuses it too), change
                // cipher spec, anything else.
                _ => return Err(tls_error("an unexpected TLS record after the handshake")),
            }
        }
        Ok(Opened {
            used: at,
            closed: false,
        })
    }

    /// The client changed its keys; it may ask for ours to change too.
    fn client_key_update(&mut self, request: u8, out: &mut Vec<u8>) -> io::Result<()> {
        let suite = self.kernel.negotiated_cipher_suite();
        let (seq, secrets) = self.kernel.update_rx_secret().map_err(tls_error)?;
        self.dec = decrypter(suite, secrets)?;
        self.rx_seq = seq;
        match request {
            0 => Ok(()),
            1 => self.update_tx(out),
            _ => Err(tls_error("a key update with an invalid request")),
        }
    }

    /// Tells the client our keys change (under the old key), then changes
    /// them.
    fn update_tx(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        self.seal_one(ContentType::Handshake, &KEY_UPDATE, out)?;
        let suite = self.kernel.negotiated_cipher_suite();
        let (seq, secrets) = self.kernel.update_tx_secret().map_err(tls_error)?;
        self.enc = encrypter(suite, secrets)?;
        self.tx_seq = seq;
        Ok(())
    }

    /// Encrypts `data` as records of type `typ` onto `out`.
    pub(crate) fn seal(
        &mut self,
        typ: ContentType,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        for fragment in data.chunks(MAX_FRAGMENT) {
            if self.tx_seq >= self.tx_limit {
                if !self.tls13() {
                    return Err(tls_error("the cipher suite's limit of records was reached"));
                }
                self.update_tx(out)?;
            }
            self.seal_one(typ, fragment, out)?;
        }
        Ok(())
    }

    fn seal_one(&mut self, typ: ContentType, fragment: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let msg = OutboundPlainMessage {
            typ,
            version: ProtocolVersion::TLSv1_2,
            payload: OutboundChunks::Single(fragment),
        };
        let record = self.enc.encrypt(msg, self.tx_seq).map_err(tls_error)?;
        self.tx_seq = next(self.tx_seq)?;
        out.extend_from_slice(&record.encode());
        Ok(())
    }

    /// Lowers the confidentiality limit, so tests reach it.
    #[cfg(test)]
    pub(crate) fn set_tx_limit(&mut self, limit: u64) {
        self.tx_limit = limit;
    }
}
