//! Server-side TLS on rustls' unbuffered API: a connection that holds
//! no buffer while it is idle, and whose socket rests in the dorm like a
//! plain one.
//!
//! rustls' buffered `ServerConnection` keeps a 4 KiB receive buffer for a
//! connection's whole life, and tokio-rustls keeps the socket in tokio's
//! reactor: together more than the 4 KiB an idle TLS connection may cost.
//! [`Tls`] drives an `UnbufferedServerConnection` through the handshake
//! over a [`Plain`] socket, then hands its records to `Records` (rustls'
//! record protection without the rest of its connection object), with
//! three buffers of its own, each allocated only while it holds bytes:
//! ciphertext received that is not yet a whole record, plaintext decrypted
//! and not yet read, ciphertext encrypted and not yet sent. What an idle
//! connection keeps of TLS is its two keys and rustls' key schedule.
//!
//! Reads go through a buffer the worker thread shares; records are
//! decrypted as soon as they are whole. Writes are encrypted into the
//! outgoing buffer at once (at most 64 KiB, `MAX_PENDING_OUT`, wait there
//! before a write waits for the socket) and sent on flush.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::dorm::Dorm;
use crate::records::{self, Records};
use crate::stream::{Plain, Rest, Stream};

/// Ciphertext read from the socket per read, into the thread's shared
/// buffer: a whole TLS record and its header.
const READ_CHUNK: usize = 16 * 1024 + 325;

/// Most ciphertext held waiting for a record to complete: a handshake
/// message may span records (rustls accepts up to 64 KiB), and one record
/// with its header is at most 18,437 bytes.
const MAX_INCOMING: usize = 64 * 1024 + 18_437;

/// Most ciphertext waiting to be sent before a write waits for the socket
/// (also the most plaintext one write takes).
const MAX_PENDING_OUT: usize = 64 * 1024;

/// How long a failed handshake may spend sending its alert.
const ALERT_TIMEOUT: Duration = Duration::from_secs(1);

thread_local! {
    /// The ciphertext read buffer the worker thread's connections share.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What [`Tls::process`] is asked to do once the connection may write.
enum Want<'a> {
    Nothing,
    Encrypt(&'a [u8]),
    CloseNotify,
}

/// Where [`Tls::process`] left the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The handshake needs more from the client.
    Handshaking,
    /// Application data may be written.
    Open,
    /// Both sides sent close_notify.
    Closed,
}

/// Who runs a connection's TLS.
enum Session {
    /// rustls, through the handshake (and a TLS 1.3 server's first flight,
    /// until the client's Finished).
    Handshake(Box<UnbufferedServerConnection>),
    /// [`Records`], once the handshake is over.
    Records(Box<Records>),
    /// Neither: it failed moving from one to the other.
    Gone,
}

/// A server-side TLS connection over a [`Plain`] socket.
pub struct Tls {
    io: Plain,
    session: Session,
    /// Ciphertext received and not yet processed: part of a record.
    incoming: Vec<u8>,
    /// Plaintext decrypted and not yet read, from `plain_at` on.
    plain: Vec<u8>,
    plain_at: usize,
    /// Ciphertext not yet sent, from `sent` on.
    out: Vec<u8>,
    sent: usize,
    /// The client sent close_notify, or closed the socket.
    peer_closed: bool,
    /// Our close_notify is queued.
    closing: bool,
    /// rustls reported an error: it is never given input again (its
    /// alert, queued once, is all it still has to say).
    failed: bool,
    /// The config allows extracting secrets: [`Records`] take over after
    /// the handshake (rustls refuses otherwise).
    hand_over: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("io", &self.io)
            .field("incoming", &self.incoming.len())
            .field("plain", &(self.plain.len() - self.plain_at))
            .field("out", &(self.out.len() - self.sent))
            .field("peer_closed", &self.peer_closed)
            .finish_non_exhaustive()
    }
}

pub(crate) fn tls_error(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Runs the server's side of the TLS handshake on `tcp`. Bound it with a
/// timeout: a client that stops halfway is waited for. With
/// `enable_secret_extraction` set in `config`, `Records` take the
/// connection over once the handshake is over (the server sets it).
pub async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<Tls> {
    let hand_over = config.enable_secret_extraction;
    let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
    let mut tls = Tls {
        io: Plain::Up(tcp),
        session: Session::Handshake(Box::new(conn)),
        incoming: Vec::new(),
        plain: Vec::new(),
        plain_at: 0,
        out: Vec::new(),
        sent: 0,
        peer_closed: false,
        closing: false,
        failed: false,
        hand_over,
    };
    loop {
        let phase = match tls.process(Want::Nothing, None) {
            Ok(phase) => phase,
            Err(e) => {
                // The alert rustls queued (a TLS 1.0 client learns
                // `protocol_version`, and so on), sent if it can be.
                let _ = tokio::time::timeout(ALERT_TIMEOUT, poll_fn(|cx| tls.poll_send(cx))).await;
                return Err(e);
            }
        };
        poll_fn(|cx| tls.poll_send(cx)).await?;
        match phase {
            Phase::Open => return Ok(tls),
            Phase::Closed => return Err(io::ErrorKind::UnexpectedEof.into()),
            Phase::Handshaking if tls.peer_closed => {
                return Err(io::ErrorKind::UnexpectedEof.into())
            }
            Phase::Handshaking => {
                if poll_fn(|cx| tls.poll_fill(cx)).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
    }
}

impl Tls {
    /// Processes what was received (records decrypted into `dst`, then
    /// into `plain` when `dst` is full; handshake messages and alerts
    /// encoded into `out`) until rustls needs more from the client or may
    /// write, then does `want`.
    fn process(&mut self, want: Want<'_>, dst: Option<&mut ReadBuf<'_>>) -> io::Result<Phase> {
        if self.failed {
            return Err(tls_error("the TLS connection failed"));
        }
        let result = match std::mem::replace(&mut self.session, Session::Gone) {
            Session::Handshake(mut conn) => {
                let result = self.pump(&mut conn, want, dst);
                match result {
                    Err(_) => {
                        self.queue_alert(&mut conn);
                        self.session = Session::Handshake(conn);
                    }
                    Ok(Phase::Open) if self.hand_over && records::ready(&conn) => {
                        match Records::take_over(*conn) {
                            Ok(records) => self.session = Session::Records(Box::new(records)),
                            Err(e) => return self.fail(e),
                        }
                    }
                    Ok(_) => self.session = Session::Handshake(conn),
                }
                result
            }
            Session::Records(mut records) => {
                let result = self.run(&mut records, want, dst);
                self.session = Session::Records(records);
                result
            }
            Session::Gone => Err(tls_error("the TLS connection was lost")),
        };
        match result {
            Err(e) => self.fail(e),
            ok => ok,
        }
    }

    /// Marks the connection failed: rustls is never given input again.
    fn fail(&mut self, e: io::Error) -> io::Result<Phase> {
        self.failed = true;
        self.incoming = Vec::new();
        Err(e)
    }

    /// Reads and writes records once the handshake is over.
    fn run(
        &mut self,
        records: &mut Records,
        want: Want<'_>,
        mut dst: Option<&mut ReadBuf<'_>>,
    ) -> io::Result<Phase> {
        if !self.peer_closed && !self.incoming.is_empty() {
            let plain = &mut self.plain;
            let opened = records.open(&mut self.incoming, &mut self.out, |payload| {
                deliver(plain, &mut dst, payload);
            })?;
            self.peer_closed = opened.closed;
            if opened.used >= self.incoming.len() || opened.closed {
                self.incoming = Vec::new();
            } else if opened.used > 0 {
                self.incoming.drain(..opened.used);
            }
        }
        match want {
            Want::Nothing => {}
            Want::Encrypt(_) if self.closing => return Err(io::ErrorKind::BrokenPipe.into()),
            Want::Encrypt(data) => {
                records.seal(rustls::ContentType::ApplicationData, data, &mut self.out)?
            }
            // A warning-level close_notify alert.
            Want::CloseNotify => {
                records.seal(rustls::ContentType::Alert, &[1, 0], &mut self.out)?
            }
        }
        Ok(Phase::Open)
    }

    /// Encodes the alert rustls queued with its error into `out`. Asked
    /// with no input: given the bytes that failed again, rustls would
    /// fail (and alert) a second time.
    fn queue_alert(&mut self, conn: &mut UnbufferedServerConnection) {
        for _ in 0..4 {
            let status = conn.process_tls_records(&mut []);
            match status.state {
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    let wrote = grow_and_write(&mut self.out, 64, |buf| encoded(data.encode(buf)));
                    if wrote.is_err() {
                        return;
                    }
                }
                Ok(ConnectionState::TransmitTlsData(data)) => data.done(),
                _ => return,
            }
        }
    }

    /// [`Tls::process`] during the handshake.
    fn pump(
        &mut self,
        conn: &mut UnbufferedServerConnection,
        want: Want<'_>,
        mut dst: Option<&mut ReadBuf<'_>>,
    ) -> io::Result<Phase> {
        let mut want = Some(want);
        let mut at = 0;
        let result = 'pump: loop {
            let Some(input) = self.incoming.get_mut(at..) else {
                break Err(tls_error("rustls discarded more than it was given"));
            };
            let status = conn.process_tls_records(input);
            let mut discard = status.discard;
            let state = match status.state {
                Ok(state) => state,
                Err(e) => {
                    at += discard;
                    break Err(tls_error(e));
                }
            };
            let phase = match state {
                ConnectionState::ReadTraffic(mut records) => {
                    while let Some(record) = records.next_record() {
                        match record {
                            Ok(record) => {
                                discard += record.discard;
                                deliver(&mut self.plain, &mut dst, record.payload);
                            }
                            Err(e) => {
                                at += discard;
                                break 'pump Err(tls_error(e));
                            }
                        }
                    }
                    None
                }
                // Only with 0-RTT on in the config: refused, as a replay
                // could repeat what it carries.
                ConnectionState::ReadEarlyData(_) => {
                    at += discard;
                    break Err(tls_error("TLS early data is not accepted"));
                }
                ConnectionState::EncodeTlsData(mut data) => {
                    match grow_and_write(&mut self.out, 512, |buf| encoded(data.encode(buf))) {
                        Ok(()) => None,
                        Err(e) => {
                            at += discard;
                            break Err(e);
                        }
                    }
                }
                // What was encoded is in `out`, sent before anything later.
                ConnectionState::TransmitTlsData(data) => {
                    data.done();
                    None
                }
                ConnectionState::BlockedHandshake => Some(Phase::Handshaking),
                ConnectionState::PeerClosed => {
                    self.peer_closed = true;
                    None
                }
                ConnectionState::Closed => Some(Phase::Closed),
                ConnectionState::WriteTraffic(mut traffic) => {
                    let wrote = match want.take() {
                        Some(Want::Encrypt(data)) => {
                            // Records add at most 29 bytes each (TLS 1.2 GCM).
                            let guess = data.len() + (data.len() / 16_384 + 1) * 32;
                            grow_and_write(&mut self.out, guess, |buf| {
                                encrypted(traffic.encrypt(data, buf))
                            })
                        }
                        Some(Want::CloseNotify) => grow_and_write(&mut self.out, 64, |buf| {
                            encrypted(traffic.queue_close_notify(buf))
                        }),
                        Some(Want::Nothing) | None => Ok(()),
                    };
                    if let Err(e) = wrote {
                        at += discard;
                        break Err(e);
                    }
                    Some(Phase::Open)
                }
                _ => {
                    at += discard;
                    break Err(tls_error("unexpected TLS connection state"));
                }
            };
            at += discard;
            if let Some(phase) = phase {
                break Ok(phase);
            }
        };
        // What is left is part of a record; nothing at all, usually.
        if at >= self.incoming.len() {
            self.incoming = Vec::new();
        } else if at > 0 {
            self.incoming.drain(..at);
        }
        result
    }

    /// Copies decrypted bytes not yet read into `dst`; whether it copied
    /// any.
    fn take_plain(&mut self, dst: &mut ReadBuf<'_>) -> bool {
        let left = &self.plain[self.plain_at..];
        if left.is_empty() || dst.remaining() == 0 {
            return false;
        }
        let n = left.len().min(dst.remaining());
        dst.put_slice(&left[..n]);
        self.plain_at += n;
        if self.plain_at == self.plain.len() {
            self.plain = Vec::new();
            self.plain_at = 0;
        }
        true
    }

    /// Reads more ciphertext from the socket; 0 at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.incoming.len() >= MAX_INCOMING {
            return Poll::Ready(Err(tls_error("TLS record too large")));
        }
        let (io, incoming) = (&mut self.io, &mut self.incoming);
        SCRATCH.with_borrow_mut(|scratch| {
            if scratch.len() < READ_CHUNK {
                scratch.resize(READ_CHUNK, 0);
            }
            let mut rb = ReadBuf::new(&mut scratch[..READ_CHUNK]);
            ready!(Pin::new(io).poll_read(cx, &mut rb))?;
            incoming.extend_from_slice(rb.filled());
            Poll::Ready(Ok(rb.filled().len()))
        })
    }

    /// While resting: reads what ciphertext has arrived, without waiting.
    fn fill_resting(&mut self) -> io::Result<usize> {
        if self.incoming.len() >= MAX_INCOMING {
            return Err(tls_error("TLS record too large"));
        }
        let (io, incoming) = (&mut self.io, &mut self.incoming);
        SCRATCH.with_borrow_mut(|scratch| {
            if scratch.len() < READ_CHUNK {
                scratch.resize(READ_CHUNK, 0);
            }
            let n = io.read_resting(&mut scratch[..READ_CHUNK])?;
            incoming.extend_from_slice(&scratch[..n]);
            Ok(n)
        })
    }

    /// Whether ciphertext waits to be sent.
    fn has_out(&self) -> bool {
        self.sent < self.out.len()
    }

    /// Sends the ciphertext waiting, then releases its buffer.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// While resting: sends what the socket takes without waiting.
    fn send_resting(&mut self) -> io::Result<()> {
        while self.sent < self.out.len() {
            match self.io.write_resting(&self.out[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out = Vec::new();
        self.sent = 0;
        Ok(())
    }

    /// Bytes the connection holds in its own buffers (capacities).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.incoming.capacity() + self.plain.capacity() + self.out.capacity()
    }
}

/// Hands decrypted bytes to the reader's buffer, the rest (or all, when
/// earlier bytes already wait) to `plain`.
fn deliver(plain: &mut Vec<u8>, dst: &mut Option<&mut ReadBuf<'_>>, mut payload: &[u8]) {
    if let Some(dst) = dst.as_deref_mut().filter(|_| plain.is_empty()) {
        let n = payload.len().min(dst.remaining());
        dst.put_slice(&payload[..n]);
        payload = &payload[n..];
    }
    plain.extend_from_slice(payload);
}

/// What an encoding wrote, or the room it needs.
fn encoded(r: Result<usize, EncodeError>) -> io::Result<Result<usize, usize>> {
    match r {
        Ok(n) => Ok(Ok(n)),
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
            Ok(Err(required_size))
        }
        Err(e) => Err(tls_error(e)),
    }
}

/// What an encryption wrote, or the room it needs.
fn encrypted(r: Result<usize, EncryptError>) -> io::Result<Result<usize, usize>> {
    match r {
        Ok(n) => Ok(Ok(n)),
        Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
            Ok(Err(required_size))
        }
        Err(e) => Err(tls_error(e)),
    }
}

/// Appends to `out` what `write` puts in its spare room (`guess` bytes
/// first, then as many as it says it needs).
fn grow_and_write(
    out: &mut Vec<u8>,
    guess: usize,
    mut write: impl FnMut(&mut [u8]) -> io::Result<Result<usize, usize>>,
) -> io::Result<()> {
    let len = out.len();
    let mut room = guess;
    for _ in 0..2 {
        out.resize(len + room, 0);
        match write(&mut out[len..]) {
            Ok(Ok(n)) => {
                out.truncate(len + n);
                return Ok(());
            }
            Ok(Err(needed)) => room = needed,
            Err(e) => {
                out.truncate(len);
                return Err(e);
            }
        }
    }
    out.truncate(len);
    Err(tls_error("TLS output kept growing"))
}

impl AsyncRead for Tls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.take_plain(buf) {
                return Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            this.process(Want::Nothing, Some(buf))?;
            // What reading produced (an alert, an answer to a key update)
            // goes out as the socket takes it.
            if this.has_out() {
                if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                    return Poll::Ready(Err(e));
                }
            }
            if buf.filled().len() > before || this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            if ready!(this.poll_fill(cx))? == 0 {
                if !this.incoming.is_empty() {
                    return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                }
                this.peer_closed = true;
            }
        }
    }
}

impl AsyncWrite for Tls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() - this.sent >= MAX_PENDING_OUT {
            ready!(this.poll_send(cx))?;
        }
        let n = buf.len().min(MAX_PENDING_OUT);
        match this.process(Want::Encrypt(&buf[..n]), None)? {
            Phase::Open => Poll::Ready(Ok(n)),
            Phase::Handshaking => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
            Phase::Closed => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closing {
            this.closing = true;
            this.process(Want::CloseNotify, None)?;
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

impl Stream for Tls {
    /// A new TLS session keeps its socket in tokio's reactor until the
    /// ping clock's next epoch. Waking through the dorm is one more task
    /// for the runtime to schedule, and with TLS handshakes (a millisecond
    /// of CPU each) in its queues that hop costs milliseconds: resting
    /// from the first sleep made `chat-bench churn --transport wss` p50
    /// 14.5 ms against 9 ms. A connection that stays rests from then on.
    const REST_WHEN_NEW: bool = false;

    fn rest(&mut self, dorm: &Dorm, waker: &Waker) -> Rest {
        self.io.rest(dorm, waker)
    }

    fn resting(&self) -> bool {
        self.io.resting()
    }

    fn rise(&mut self, dorm: &Dorm) -> io::Result<()> {
        self.io.rise(dorm)
    }

    /// Decrypts what has arrived. `Interrupted` when reading produced TLS
    /// output the socket would not take at rest: the session rises, and
    /// its flush sends it.
    fn read_resting(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut dst = ReadBuf::new(&mut *buf);
            if self.take_plain(&mut dst) {
                return Ok(dst.filled().len());
            }
            self.process(Want::Nothing, Some(&mut dst))?;
            let n = dst.filled().len();
            self.send_resting()?;
            if n > 0 || self.peer_closed {
                return Ok(n);
            }
            if self.has_out() {
                return Err(io::ErrorKind::Interrupted.into());
            }
            if self.fill_resting()? == 0 {
                if !self.incoming.is_empty() {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                self.peer_closed = true;
            }
        }
    }

    /// Encrypts all of `buf` and sends what the socket takes; the rest
    /// waits for the session to rise and flush ([`Stream::buffered`]).
    fn write_resting(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send_resting()?;
        if self.has_out() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(MAX_PENDING_OUT);
        match self.process(Want::Encrypt(&buf[..n]), None)? {
            Phase::Open => {}
            Phase::Handshaking => return Err(io::ErrorKind::NotConnected.into()),
            Phase::Closed => return Err(io::ErrorKind::BrokenPipe.into()),
        }
        self.send_resting()?;
        Ok(n)
    }

    fn buffered(&self) -> bool {
        self.has_out()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use rustls::version::{TLS12, TLS13};
    use rustls::SupportedProtocolVersion;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    type Client = tokio_rustls::client::TlsStream<TcpStream>;

    /// How a test connection is made.
    #[derive(Clone, Copy)]
    struct Setup {
        version: &'static SupportedProtocolVersion,
        /// The client offers only ChaCha20-Poly1305 (else AES-GCM first).
        chacha: bool,
        /// [`Records`] take over after the handshake.
        hand_over: bool,
    }

    const fn setup(version: &'static SupportedProtocolVersion) -> Setup {
        Setup {
            version,
            chacha: false,
            hand_over: true,
        }
    }

    fn configs(setup: Setup) -> (Arc<ServerConfig>, Arc<rustls::ClientConfig>) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = ck.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        let provider = rustls::crypto::ring::default_provider();
        let mut client_provider = provider.clone();
        if setup.chacha {
            client_provider
                .cipher_suites
                .retain(|s| format!("{:?}", s.suite()).contains("CHACHA20"));
        }
        let mut server = ServerConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[setup.version])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        server.enable_secret_extraction = setup.hand_over;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(client_provider))
            .with_protocol_versions(&[setup.version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    /// A server connection and its client, handshake done.
    async fn pair(setup: Setup) -> (Tls, Client) {
        let (server_cfg, client_cfg) = configs(setup);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = async {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            tokio_rustls::TlsConnector::from(client_cfg)
                .connect(name, tcp)
                .await
                .unwrap()
        };
        let server = async {
            let (tcp, _) = listener.accept().await.unwrap();
            accept(tcp, server_cfg).await.unwrap()
        };
        tokio::join!(server, client)
    }

    fn data(len: usize, salt: usize) -> Vec<u8> {
        (0..len).map(|i| ((i + salt) % 251) as u8).collect()
    }

    async fn read_len(tls: &mut Tls, len: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut chunk = vec![0; 1000];
        while got.len() < len {
            let n = tls.read(&mut chunk).await.unwrap();
            assert!(n > 0, "end of stream after {} bytes", got.len());
            got.extend_from_slice(&chunk[..n]);
        }
        got
    }

    /// The client sends `len` bytes (many records when large), the server
    /// echoes them, then each side's close_notify ends the other's stream
    /// cleanly. The server's buffers are all released between, and after
    /// the handshake its records are its own when asked for.
    async fn exchange(setup: Setup, len: usize) {
        let (mut tls, mut client) = pair(setup).await;
        let sent = data(len, 0);
        let (got, ()) = tokio::join!(read_len(&mut tls, len), async {
            client.write_all(&sent).await.unwrap();
            client.flush().await.unwrap();
        });
        assert!(got == sent, "the server read other bytes");
        assert_eq!(
            matches!(tls.session, Session::Records(_)),
            setup.hand_over,
            "who runs the records"
        );
        assert_eq!(tls.held(), 0, "buffers kept after reading everything");
        let mut back = vec![0; len];
        let ((), ()) = tokio::join!(
            async {
                tls.write_all(&got).await.unwrap();
                tls.flush().await.unwrap();
            },
            async {
                client.read_exact(&mut back).await.unwrap();
            }
        );
        assert!(back == sent, "the echo differs");
        assert_eq!(tls.held(), 0, "buffers kept after a flush");
        client.shutdown().await.unwrap();
        let mut chunk = [0; 16];
        assert_eq!(tls.read(&mut chunk).await.unwrap(), 0);
        tls.shutdown().await.unwrap();
        drop(tls);
        // A clean end: rustls calls a close without close_notify an error.
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn tls13_exchanges_small_and_many_record_messages() {
        exchange(setup(&TLS13), 100).await;
        exchange(setup(&TLS13), 200_000).await;
        let chacha = Setup {
            chacha: true,
            ..setup(&TLS13)
        };
        exchange(chacha, 200_000).await;
    }

    #[tokio::test]
    async fn tls12_exchanges_small_and_many_record_messages() {
        exchange(setup(&TLS12), 100).await;
        exchange(setup(&TLS12), 200_000).await;
        let chacha = Setup {
            chacha: true,
            ..setup(&TLS12)
        };
        exchange(chacha, 200_000).await;
    }

    #[tokio::test]
    async fn without_secret_extraction_rustls_runs_the_records() {
        let rustls_only = Setup {
            hand_over: false,
            ..setup(&TLS13)
        };
        exchange(rustls_only, 200_000).await;
    }

    /// The client's key update (asking for ours) is followed on both
    /// sides; the confidentiality limit, lowered to two records, makes
    /// the server change its key every two records, and the client reads
    /// every byte all the same.
    #[tokio::test]
    async fn tls13_keys_change_at_the_clients_request_and_at_the_limit() {
        let (mut tls, mut client) = pair(setup(&TLS13)).await;
        let first = data(100, 1);
        let (got, ()) = tokio::join!(read_len(&mut tls, 100), async {
            client.write_all(&first).await.unwrap();
            client.flush().await.unwrap();
        });
        assert!(got == first);
        let Session::Records(records) = &mut tls.session else {
            panic!("rustls still runs the records");
        };
        records.set_tx_limit(2);

        client.get_mut().1.refresh_traffic_keys().unwrap();
        let second = data(50_000, 2);
        let (got, ()) = tokio::join!(read_len(&mut tls, second.len()), async {
            client.write_all(&second).await.unwrap();
            client.flush().await.unwrap();
        });
        assert!(got == second, "read after the client's key update");

        let third = data(200_000, 3);
        let mut back = vec![0; third.len()];
        let ((), ()) = tokio::join!(
            async {
                tls.write_all(&third).await.unwrap();
                tls.flush().await.unwrap();
            },
            async {
                client.read_exact(&mut back).await.unwrap();
            }
        );
        assert!(back == third, "the client read other bytes");
    }

    #[tokio::test]
    async fn tls12_closes_at_the_confidentiality_limit() {
        let (mut tls, mut client) = pair(setup(&TLS12)).await;
        let (got, ()) = tokio::join!(read_len(&mut tls, 10), async {
            client.write_all(b"0123456789").await.unwrap();
            client.flush().await.unwrap();
        });
        assert_eq!(got, b"0123456789");
        let Session::Records(records) = &mut tls.session else {
            panic!("rustls still runs the records");
        };
        records.set_tx_limit(1);
        // Two records' worth: TLS 1.2 cannot change keys.
        let err = tls.write_all(&data(20_000, 0)).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    /// Bytes that are not TLS records, after the handshake, end the
    /// connection with an error (and never reach rustls twice).
    #[tokio::test]
    async fn garbage_after_the_handshake_is_an_error() {
        let (mut tls, mut client) = pair(setup(&TLS13)).await;
        let (got, ()) = tokio::join!(read_len(&mut tls, 3), async {
            client.write_all(b"abc").await.unwrap();
            client.flush().await.unwrap();
        });
        assert_eq!(got, b"abc");
        // A record of the right type and length whose bytes are no
        // ciphertext, written past the client's TLS.
        let mut forged = vec![23, 3, 3, 0, 40];
        forged.extend(1..=40u8);
        client.get_mut().0.write_all(&forged).await.unwrap();
        let mut chunk = [0; 64];
        let err = tls.read(&mut chunk).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            tls.read(&mut chunk).await.is_err(),
            "read again after failing"
        );
        assert!(tls.write_all(b"x").await.is_err(), "wrote after failing");
    }

    /// Invariant 6: a record header announcing more than a record may
    /// carry is refused at once, before its bytes are waited for or held.
    #[tokio::test]
    async fn a_record_over_the_size_limit_is_refused_at_its_header() {
        for version in [&TLS13, &TLS12] {
            let (mut tls, mut client) = pair(setup(version)).await;
            let (got, ()) = tokio::join!(read_len(&mut tls, 2), async {
                client.write_all(b"hi").await.unwrap();
                client.flush().await.unwrap();
            });
            assert_eq!(got, b"hi");
            let over = u16::try_from(16_384 + 2_048 + 1).unwrap().to_be_bytes();
            let raw = client.get_mut().0;
            raw.write_all(&[23, 3, 3, over[0], over[1]]).await.unwrap();
            let mut chunk = [0; 64];
            let read =
                tokio::time::timeout(std::time::Duration::from_secs(5), tls.read(&mut chunk));
            let err = read.await.expect("waited for the record").unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            assert_eq!(tls.held(), 0);
        }
    }

    /// Arbitrary bytes after the handshake (some shaped like record
    /// headers, lengths up to over the limit, cut anywhere) end in an
    /// error or the end of the stream, in bounded time, never a panic.
    #[tokio::test]
    async fn arbitrary_bytes_after_the_handshake_end_cleanly() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for case in 0..40 {
            let (mut tls, mut client) =
                pair(setup(if case % 2 == 0 { &TLS13 } else { &TLS12 })).await;
            let mut junk = Vec::new();
            for _ in 0..next() % 6 {
                if next() % 2 == 0 {
                    let typ = [20, 21, 22, 23, 24][(next() % 5) as usize];
                    let len = (next() % 20_000) as u16;
                    junk.extend_from_slice(&[typ, 3, 3]);
                    junk.extend_from_slice(&len.to_be_bytes());
                }
                let n = next() % 600;
                junk.extend((0..n).map(|_| next() as u8));
            }
            let raw = client.get_mut().0;
            raw.write_all(&junk).await.unwrap();
            raw.shutdown().await.unwrap();
            let mut chunk = vec![0; 4096];
            let ended = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                loop {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            assert!(
                ended.is_ok(),
                "case {case}: no end after {} bytes",
                junk.len()
            );
        }
    }

    /// An idle WSS session keeps little besides its keys: this wrapper
    /// (socket, session pointer, three empty buffers, offsets, flags)
    /// stays small.
    #[test]
    fn the_tls_stream_is_small() {
        let size = std::mem::size_of::<Tls>();
        assert!(size <= 160, "{size} bytes");
    }

    #[tokio::test]
    async fn a_client_that_is_not_tls_fails_the_handshake_with_an_alert() {
        let (server_cfg, _) = configs(setup(&TLS13));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut answer = Vec::new();
            let _ = tcp.read_to_end(&mut answer).await;
            answer
        });
        let (tcp, _) = listener.accept().await.unwrap();
        assert!(accept(tcp, server_cfg).await.is_err());
        let answer = client.await.unwrap();
        // An alert record (content type 21), not a silent close.
        assert_eq!(answer.first(), Some(&21), "{answer:?}");
    }
}
