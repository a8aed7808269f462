//! One admitted connection: a reader feeding lines to the engine and a
//! writer draining the session's outbox, run concurrently in one task.
//!
//! The reader ends on end of stream, a read error, the idle timeout or a
//! line over the limit, and hands the writer the reason; the writer then
//! sends the last frames (`error` for an oversized line, `closing` with the
//! reason) and closes TLS. The writer ends on its own when the engine
//! closes the session (`lagged`, `shutting_down`, ...), when `serve` stops,
//! or when a write fails or times out; the reader is then dropped.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use chat_core::{Codec, Connection, ErrorCode, OutboxReceiver, Recv, ServerFrame};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::sync::{oneshot, watch};

use crate::line::{Line, LineReader};
use crate::TcpSettings;

/// Frames taken from the outbox per socket write.
const BATCH: usize = 64;

/// Why the reader stopped.
#[derive(Debug, Clone, Copy)]
enum ReadEnd {
    /// The client closed its side, or the socket failed.
    Gone,
    /// No complete line within the idle timeout.
    Idle,
    /// A line over the limit.
    TooLong(usize),
}

/// Runs an admitted connection to its end. Takes the stream already split
/// (a TLS stream by value is over a KiB). A plain function returning an
/// `async move` block: an `async fn` keeps its arguments twice for its
/// whole life, in every connection's task.
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub(crate) fn run<'a, S>(
    halves: (ReadHalf<S>, WriteHalf<S>),
    mut conn: Connection,
    mut rx: OutboxReceiver,
    settings: &'a TcpSettings,
    max_line: usize,
    mut stop: watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send + 'a
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'a,
{
    async move {
        let (mut rd, mut wr) = halves;
        let (end_tx, end_rx) = oneshot::channel();
        let linger = {
            let reader = read_loop(&mut rd, &mut conn, settings.idle_timeout, max_line);
            let writer = write_loop(&mut wr, &mut rx, settings, end_rx, &mut stop);
            tokio::pin!(reader, writer);
            tokio::select! {
                () = &mut writer => true,
                end = &mut reader => {
                    let _ = end_tx.send(end);
                    writer.await;
                    !matches!(end, ReadEnd::Gone)
                }
            }
        };
        // The session ends before the socket: nothing is queued for nobody.
        // Linger only when the server closed first (the client may still be
        // sending); a client that closed its side has nothing left to send.
        drop(conn);
        drop(rx);
        if linger {
            drain(&mut rd, settings.close_linger, settings.close_linger_bytes).await;
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    rd: &mut R,
    conn: &mut Connection,
    idle: Duration,
    max_line: usize,
) -> ReadEnd {
    let mut lines = LineReader::new(max_line);
    loop {
        match tokio::time::timeout(idle, lines.next_line(rd)).await {
            Err(_) => return ReadEnd::Idle,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "read failed");
                return ReadEnd::Gone;
            }
            Ok(Ok(Line::Eof)) => return ReadEnd::Gone,
            Ok(Ok(Line::TooLong)) => return ReadEnd::TooLong(max_line),
            // Boxed: the engine's request future is several KiB, and inline
            // it would be part of every idle connection's task.
            Ok(Ok(Line::Frame(line))) => Box::pin(conn.handle_frame(&line)).await,
        }
    }
}

enum Event {
    Frames,
    Closed(ErrorCode),
    Reader(Option<ReadEnd>),
    Stop,
    Heartbeat,
}

async fn write_loop<W: AsyncWrite + Unpin>(
    wr: &mut W,
    rx: &mut OutboxReceiver,
    settings: &TcpSettings,
    mut end: oneshot::Receiver<ReadEnd>,
    stop: &mut watch::Receiver<bool>,
) {
    let timeout = settings.write_timeout;
    let heartbeat = settings.heartbeat();
    let mut frames: Vec<Bytes> = Vec::new();
    loop {
        let event = tokio::select! {
            biased;
            r = &mut end => Event::Reader(r.ok()),
            _ = stop.wait_for(|s| *s) => Event::Stop,
            r = rx.recv_many(&mut frames, BATCH) => match r {
                Recv::Frames => Event::Frames,
                Recv::Closed(code) => Event::Closed(code),
            },
            () = tokio::time::sleep(heartbeat.unwrap_or(Duration::MAX)), if heartbeat.is_some() => {
                Event::Heartbeat
            }
        };
        let last: Vec<ServerFrame> = match &event {
            Event::Frames => {
                let batch = join_lines(frames.iter().map(Bytes::as_ref));
                // Keep nothing allocated between batches.
                frames = Vec::new();
                if write_flush(wr, &batch, timeout).await.is_err() {
                    return;
                }
                continue;
            }
            Event::Heartbeat => {
                let ping = Codec::encode(&ServerFrame::Pong { id: None });
                if write_flush(wr, &join_lines([ping.as_ref()]), timeout)
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
            Event::Closed(code) => vec![closing(*code)],
            Event::Stop => vec![closing(ErrorCode::ShuttingDown)],
            Event::Reader(Some(ReadEnd::Idle)) => vec![closing(ErrorCode::Idle)],
            &Event::Reader(Some(ReadEnd::TooLong(limit))) => vec![
                ServerFrame::Error {
                    id: None,
                    code: ErrorCode::FrameTooLarge,
                    message: format!("line longer than {limit} bytes"),
                },
                closing(ErrorCode::FrameTooLarge),
            ],
            Event::Reader(_) => Vec::new(),
        };
        // When the reader ended it (idle, oversized line), what the engine
        // had already queued (replies to earlier requests, `hello`) goes out
        // before the last frames; a session the engine closed drops its
        // queue, as the outbox does, and the client resumes by `seq`.
        let mut tail = Vec::new();
        if matches!(
            event,
            Event::Reader(Some(ReadEnd::Idle | ReadEnd::TooLong(_)))
        ) {
            while let Some(frame) = rx.try_recv() {
                tail.push(frame);
            }
        }
        tail.extend(last.iter().map(Codec::encode));
        let bytes = join_lines(tail.iter().map(Bytes::as_ref));
        let _ = tokio::time::timeout(timeout, async {
            wr.write_all(&bytes).await?;
            wr.flush().await?;
            // TLS close_notify, then TCP FIN.
            wr.shutdown().await
        })
        .await;
        return;
    }
}

/// The `closing` frame for a reason.
fn closing(reason: ErrorCode) -> ServerFrame {
    let message = match reason {
        ErrorCode::ShuttingDown => "the server is shutting down; reconnect and resume",
        ErrorCode::Lagged => "you did not read fast enough; reconnect and resume by seq",
        ErrorCode::Idle => "no frame received for too long",
        ErrorCode::FrameTooLarge => "a line exceeded the frame size limit",
        _ => "the server closed the connection",
    };
    ServerFrame::Closing {
        reason,
        message: message.to_owned(),
    }
}

/// Frames joined into one buffer, each followed by `\n`, for one TLS write.
fn join_lines<'a>(frames: impl IntoIterator<Item = &'a [u8]> + Clone) -> Vec<u8> {
    let len: usize = frames.clone().into_iter().map(|f| f.len() + 1).sum();
    let mut out = Vec::with_capacity(len);
    for f in frames {
        out.extend_from_slice(f);
        out.push(b'\n');
    }
    out
}

async fn write_flush<W: AsyncWrite + Unpin>(
    wr: &mut W,
    bytes: &[u8],
    timeout: Duration,
) -> Result<(), ()> {
    match tokio::time::timeout(timeout, async {
        wr.write_all(bytes).await?;
        wr.flush().await
    })
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "write failed");
            Err(())
        }
        Err(_) => {
            tracing::debug!("write timed out; dropping the client");
            Err(())
        }
    }
}

/// Reads and discards what the client still sends, for a bounded time and
/// byte count, so that closing does not reset the connection before the
/// client has read the last frames.
async fn drain<S: AsyncRead>(rd: &mut ReadHalf<S>, linger: Duration, max_bytes: usize) {
    let mut left = max_bytes;
    let _ = tokio::time::timeout(linger, async {
        while left > 0 {
            let n = poll_fn(|cx| {
                let mut chunk = [0u8; 2048];
                let mut rb = ReadBuf::new(&mut chunk);
                match Pin::new(&mut *rd).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => Poll::Ready(rb.filled().len()),
                    Poll::Ready(Err(_)) => Poll::Ready(0),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
            if n == 0 {
                return;
            }
            left = left.saturating_sub(n);
        }
    })
    .await;
}
