//! A client for the TLS TCP transport: connect trusting a CA file, a pinned
//! certificate fingerprint or (explicitly) anything, then send [`Request`]s
//! and read [`ServerFrame`]s one line at a time.
//!
//! ```no_run
//! use chat_core::{ClientFrame, Request, ServerFrame};
//! use chat_transport_tcp::client::{Connector, Trust};
//!
//! # async fn run() -> Result<(), chat_transport_tcp::Error> {
//! let trust = Trust::Fingerprint("AB:CD:...".parse()?);
//! let mut client = Connector::new(&trust)?.connect("127.0.0.1:7443", None).await?;
//! client
//!     .send(&Request { id: Some(1), frame: ClientFrame::Ping })
//!     .await?;
//! while let Some(frame) = client.recv().await? {
//!     if let ServerFrame::Pong { id: Some(1) } = frame {
//!         break;
//!     }
//! }
//! # Ok(())
//! # }
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chat_core::{Codec, Request, ServerFrame};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::line::{Line, LineReader};
use crate::verify::PinnedVerifier;
use crate::{tls, Error, Fingerprint};

/// How the client decides to trust the server's certificate.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Trust {
    /// Certificates (roots) from a PEM file; the server's chain must lead
    /// to one of them and name the server.
    CaFile(PathBuf),
    /// These root certificates.
    Roots(Vec<CertificateDer<'static>>),
    /// Exactly the certificate with this SHA-256 fingerprint (names and
    /// dates are not checked: the pin says it all).
    Fingerprint(Fingerprint),
    /// Any certificate. Encrypts, but does not authenticate the server:
    /// for tests and first contact only.
    Insecure,
}

/// Bounds of the client side.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientSettings {
    /// Longest the TCP connect plus TLS handshake may take. Default 10 s.
    pub connect_timeout: Duration,
    /// Longest line accepted from the server. Default 16 MiB (history
    /// pages and room listings can be large).
    pub max_line_bytes: usize,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            connect_timeout: Duration::from_secs(10),
            max_line_bytes: 16 * 1024 * 1024,
        }
    }
}

impl ClientSettings {
    /// Sets [`ClientSettings::connect_timeout`].
    #[must_use]
    pub fn connect_timeout(mut self, v: Duration) -> Self {
        self.connect_timeout = v;
        self
    }

    /// Sets [`ClientSettings::max_line_bytes`].
    #[must_use]
    pub fn max_line_bytes(mut self, v: usize) -> Self {
        self.max_line_bytes = v;
        self
    }
}

/// A rustls client config for `trust`, with the same provider, cipher
/// suites and protocol versions as the server side.
pub fn client_config(trust: &Trust) -> Result<Arc<ClientConfig>, Error> {
    let builder = ClientConfig::builder_with_provider(tls::crypto_provider())
        .with_protocol_versions(tls::PROTOCOL_VERSIONS)?;
    let roots = |certs: Vec<CertificateDer<'static>>| -> Result<RootCertStore, Error> {
        let mut store = RootCertStore::empty();
        for cert in certs {
            store.add(cert)?;
        }
        Ok(store)
    };
    let config = match trust {
        Trust::CaFile(path) => builder
            .with_root_certificates(roots(tls::load_certs(path)?)?)
            .with_no_client_auth(),
        Trust::Roots(certs) => builder
            .with_root_certificates(roots(certs.clone())?)
            .with_no_client_auth(),
        Trust::Fingerprint(fp) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier::new(Some(*fp))))
            .with_no_client_auth(),
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier::new(None)))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Connects clients; build once, connect (and reconnect) many times.
#[derive(Clone)]
pub struct Connector {
    tls: TlsConnector,
    settings: ClientSettings,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// A connector trusting as `trust` says, with default settings.
    pub fn new(trust: &Trust) -> Result<Self, Error> {
        Ok(Self::from_config(client_config(trust)?))
    }

    /// A connector for a rustls client config of your own.
    pub fn from_config(config: Arc<ClientConfig>) -> Self {
        Connector {
            tls: TlsConnector::from(config),
            settings: ClientSettings::default(),
        }
    }

    /// Replaces the settings.
    #[must_use]
    pub fn with_settings(mut self, settings: ClientSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Connects to `addr` (`host:port`) and completes the TLS handshake.
    /// The certificate is checked against `server_name`, or the host part
    /// of `addr` when `None`.
    pub async fn connect(&self, addr: &str, server_name: Option<&str>) -> Result<Client, Error> {
        let name = server_name.unwrap_or_else(|| host_of(addr));
        let name = ServerName::try_from(name.to_owned())
            .map_err(|_| Error::InvalidServerName(name.to_owned()))?;
        let connect = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|e| Error::io(format!("connecting to {addr}"), e))?;
            let _ = tcp.set_nodelay(true);
            self.tls
                .connect(name, tcp)
                .await
                .map_err(|e| Error::io(format!("TLS handshake with {addr}"), e))
        };
        let stream = tokio::time::timeout(self.settings.connect_timeout, connect)
            .await
            .map_err(|_| Error::Timeout("connecting"))??;
        Ok(Client::new(stream, self.settings.max_line_bytes))
    }
}

/// Connects to `addr` trusting as `trust` says, with default settings.
pub async fn connect(addr: &str, trust: &Trust) -> Result<Client, Error> {
    Connector::new(trust)?.connect(addr, None).await
}

/// The host part of `host:port` or `[v6]:port`.
fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    addr.rsplit_once(':').map_or(addr, |(host, _)| host)
}

/// A connected client. [`split`](Client::split) it to read and write from
/// different tasks.
#[derive(Debug)]
pub struct Client {
    reader: FrameReader,
    writer: FrameWriter,
    peer: Option<Fingerprint>,
}

impl Client {
    fn new(stream: TlsStream<TcpStream>, max_line: usize) -> Self {
        let peer = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(Fingerprint::of);
        let (rd, wr) = tokio::io::split(stream);
        Client {
            reader: FrameReader {
                rd,
                lines: LineReader::new(max_line),
            },
            writer: FrameWriter { wr },
            peer,
        }
    }

    /// The fingerprint of the certificate the server presented.
    pub fn peer_fingerprint(&self) -> Option<Fingerprint> {
        self.peer
    }

    /// Sends one request (see [`FrameWriter::send`]).
    pub async fn send(&mut self, request: &Request) -> Result<(), Error> {
        self.writer.send(request).await
    }

    /// Reads the next frame (see [`FrameReader::recv`]).
    pub async fn recv(&mut self) -> Result<Option<ServerFrame>, Error> {
        self.reader.recv().await
    }

    /// The reading and writing halves.
    pub fn split(self) -> (FrameReader, FrameWriter) {
        (self.reader, self.writer)
    }
}

/// The reading half of a [`Client`].
#[derive(Debug)]
pub struct FrameReader {
    rd: ReadHalf<TlsStream<TcpStream>>,
    lines: LineReader,
}

impl FrameReader {
    /// The next frame from the server; `None` when the server closed the
    /// connection. Cancel-safe: usable as a `select!` branch.
    pub async fn recv(&mut self) -> Result<Option<ServerFrame>, Error> {
        match self.recv_line().await? {
            Some(line) => Ok(Some(Codec::decode_server(&line)?)),
            None => Ok(None),
        }
    }

    /// The next raw line (without the newline); `None` at the end.
    /// Cancel-safe.
    pub async fn recv_line(&mut self) -> Result<Option<Vec<u8>>, Error> {
        match self.lines.next_line(&mut self.rd).await {
            Ok(Line::Frame(line)) => Ok(Some(line)),
            Ok(Line::Eof) => Ok(None),
            Ok(Line::TooLong) => Err(Error::LineTooLong {
                limit: self.lines.max(),
            }),
            Err(e) if is_disconnect(&e) => Ok(None),
            Err(e) => Err(Error::io("reading from the server", e)),
        }
    }
}

/// Whether a read error just means the peer went away.
fn is_disconnect(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

/// The writing half of a [`Client`].
#[derive(Debug)]
pub struct FrameWriter {
    wr: WriteHalf<TlsStream<TcpStream>>,
}

impl FrameWriter {
    /// Sends one request as a line. Not cancel-safe: a cancelled send may
    /// leave half a line behind.
    pub async fn send(&mut self, request: &Request) -> Result<(), Error> {
        self.send_line(&Codec::encode_request(request)).await
    }

    /// Sends raw bytes followed by a newline (for tests and tools).
    pub async fn send_line(&mut self, line: &[u8]) -> Result<(), Error> {
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line);
        buf.push(b'\n');
        self.send_raw(&buf).await
    }

    /// Sends raw bytes as they are, without adding a newline.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let ctx = "writing to the server";
        self.wr
            .write_all(bytes)
            .await
            .map_err(|e| Error::io(ctx, e))?;
        self.wr.flush().await.map_err(|e| Error::io(ctx, e))
    }

    /// Closes the connection cleanly (TLS close_notify).
    pub async fn close(&mut self) -> Result<(), Error> {
        self.wr
            .shutdown()
            .await
            .map_err(|e| Error::io("closing the connection", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_addresses() {
        assert_eq!(host_of("127.0.0.1:7443"), "127.0.0.1");
        assert_eq!(host_of("chat.example:7443"), "chat.example");
        assert_eq!(host_of("[::1]:7443"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }
}
