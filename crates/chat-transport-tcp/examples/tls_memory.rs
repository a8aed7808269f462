//! Run with: `cargo run -p chat-transport-tcp --release --example tls_memory`
//!
//! Where an idle connection's memory goes: the heap bytes of one server-side
//! rustls connection after a TLS 1.3 handshake and a little traffic, with
//! the buffered API (what tokio-rustls, hence this crate, uses) and with
//! rustls' unbuffered API (the caller owns the TLS buffers), plus the
//! engine's session. Everything runs in memory, without sockets, under a
//! counting allocator; each figure is the growth of the heap between N and
//! 2N live connections, divided by N. `idle_memory` measures the whole
//! connection over real sockets.

use std::io::{Read, Write};
use std::sync::Arc;

use cap::Cap;
use chat_transport_tcp::client::{client_config, Trust};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::ConnectionState;
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};

#[global_allocator]
static ALLOC: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const N: usize = 2000;

fn main() -> Res<()> {
    let dir = std::env::temp_dir().join(format!("chat-tls-memory-{}", std::process::id()));
    let cert = chat_transport_tcp::self_signed(&dir, &[])?;
    let server = cert.server_config()?;
    let client = client_config(&Trust::Fingerprint(cert.fingerprint))?;

    let per = |f: &mut dyn FnMut() -> Res<()>| -> Res<usize> {
        for _ in 0..N {
            f()?;
        }
        let before = ALLOC.allocated();
        for _ in 0..N {
            f()?;
        }
        Ok(ALLOC.allocated().saturating_sub(before) / N)
    };

    let mut buffered = Vec::with_capacity(2 * N);
    let b = per(&mut || {
        buffered.push(buffered_connection(&server, &client)?);
        Ok(())
    })?;
    drop(buffered);
    let mut unbuffered = Vec::with_capacity(2 * N);
    let u = per(&mut || {
        unbuffered.push(unbuffered_connection(&server, &client)?);
        Ok(())
    })?;
    drop(unbuffered);
    let engine = chat_core::Engine::builder()
        .limits(chat_core::Limits::default().max_sessions(4 * N))
        .build()?;
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let mut sessions = Vec::with_capacity(2 * N);
    let e = per(&mut || {
        let permit = rt.block_on(engine.admit())?;
        let (conn, mut rx) = engine.open(permit);
        while rx.try_recv().is_some() {} // `hello`, as a connection sends it
        sessions.push((conn, rx));
        Ok(())
    })?;

    let row = |what: &str, heap: usize, inline: usize| {
        println!(
            "{what:<44} {heap:>6} B heap + {inline:>5} B inline = {:>5.2} KiB",
            (heap + inline) as f64 / 1024.0
        );
    };
    row(
        "rustls ServerConnection (buffered)",
        b,
        size_of::<ServerConnection>(),
    );
    row(
        "rustls UnbufferedServerConnection",
        u,
        size_of::<UnbufferedServerConnection>(),
    );
    row(
        "engine session (Connection + outbox)",
        e,
        size_of::<(chat_core::Connection, chat_core::OutboxReceiver)>(),
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Moves everything one side has to send to the other.
fn flush(
    from: &mut dyn FnMut(&mut Vec<u8>) -> Res<bool>,
    to: &mut dyn FnMut(&[u8]) -> Res<()>,
) -> Res<()> {
    let mut buf = Vec::new();
    while from(&mut buf)? {}
    if !buf.is_empty() {
        to(&buf)?;
    }
    Ok(())
}

fn feed_client(c: &mut ClientConnection, mut bytes: &[u8]) -> Res<()> {
    while !bytes.is_empty() {
        c.read_tls(&mut bytes)?;
        c.process_new_packets()?;
    }
    Ok(())
}

/// Runs both sides until neither has anything to send.
fn exchange(s: &mut ServerConnection, c: &mut ClientConnection) -> Res<()> {
    for _ in 0..4 {
        flush(
            &mut |buf| Ok(c.wants_write() && c.write_tls(buf)? > 0),
            &mut |mut bytes| {
                while !bytes.is_empty() {
                    s.read_tls(&mut bytes)?;
                    s.process_new_packets()?;
                }
                Ok(())
            },
        )?;
        flush(
            &mut |buf| Ok(s.wants_write() && s.write_tls(buf)? > 0),
            &mut |bytes| feed_client(c, bytes),
        )?;
    }
    Ok(())
}

/// A buffered server connection after the handshake, 200 bytes sent and
/// 100 received: the state of an idle connection in this crate.
fn buffered_connection(
    server: &Arc<ServerConfig>,
    client: &Arc<ClientConfig>,
) -> Res<ServerConnection> {
    let mut s = ServerConnection::new(server.clone())?;
    let mut c = ClientConnection::new(client.clone(), "localhost".try_into()?)?;
    exchange(&mut s, &mut c)?;
    s.writer().write_all(&[b'x'; 200])?;
    c.writer().write_all(&[b'y'; 100])?;
    exchange(&mut s, &mut c)?;
    let mut got = [0u8; 100];
    s.reader().read_exact(&mut got)?;
    if s.is_handshaking() {
        return Err("handshake did not complete".into());
    }
    Ok(s)
}

/// An unbuffered server connection after the handshake, with its TLS
/// buffers (which the caller owns) released.
fn unbuffered_connection(
    server: &Arc<ServerConfig>,
    client: &Arc<ClientConfig>,
) -> Res<UnbufferedServerConnection> {
    let mut s = UnbufferedServerConnection::new(server.clone())?;
    let mut c = ClientConnection::new(client.clone(), "localhost".try_into()?)?;
    let mut incoming: Vec<u8> = Vec::new();
    let mut outgoing = vec![0u8; 32 * 1024];
    let mut used = 0;
    for _ in 0..8 {
        while c.wants_write() {
            c.write_tls(&mut incoming)?;
        }
        loop {
            let status = s.process_tls_records(&mut incoming);
            let discard = status.discard;
            let stop = match status.state? {
                ConnectionState::EncodeTlsData(mut e) => {
                    used += e.encode(&mut outgoing[used..])?;
                    false
                }
                ConnectionState::TransmitTlsData(t) => {
                    feed_client(&mut c, &outgoing[..used])?;
                    used = 0;
                    t.done();
                    false
                }
                ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_) => true,
                other => return Err(format!("unexpected state {other:?}").into()),
            };
            incoming.drain(..discard);
            if stop {
                break;
            }
        }
        if !c.is_handshaking() && !c.wants_write() && incoming.is_empty() {
            return Ok(s);
        }
    }
    Err("handshake did not complete".into())
}
