//! Run with: `cargo run -p chat-transport-tcp --release --example idle_memory -- 1000`
//!
//! Measures the server's heap bytes per idle TLS connection. The server
//! runs in this process under a counting allocator; the clients run in two
//! child processes (this same binary with `--clients`), so their memory is
//! not counted. Each child opens N connections, reads `hello` on each and
//! stays idle; the figure is the growth of the server's heap between the
//! first N and the second N connections, divided by N, which leaves out
//! one-off costs (runtime, TLS session cache filling up).
//!
//! Counts heap only: kernel socket buffers are not in it.

use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cap::Cap;
use chat_core::{Engine, Limits, ServerFrame};
use chat_transport_tcp::client::{Connector, Trust};
use chat_transport_tcp::{serve, Fingerprint, TcpSettings};

#[global_allocator]
static ALLOC: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Runtime::new()?;
    match args.first().map(String::as_str) {
        Some("--clients") => {
            let [_, addr, fp, n] = args.as_slice() else {
                return Err("usage: --clients ADDR FINGERPRINT N".into());
            };
            rt.block_on(clients(addr, fp.parse()?, n.parse()?))
        }
        n => rt.block_on(server(n.map_or(Ok(1000), str::parse)?)),
    }
}

async fn server(n: usize) -> Res<()> {
    let dir = std::env::temp_dir().join(format!("chat-tcp-idle-{}", std::process::id()));
    let cert = chat_transport_tcp::self_signed(&dir, &[])?;
    let limits = Limits::default().max_sessions(4 * n + 16);
    let engine = Engine::builder().limits(limits).build()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let settings = TcpSettings::default().max_handshakes(n.max(1));
    let task = tokio::spawn(serve(
        listener,
        engine,
        cert.server_config()?,
        settings,
        stopped,
    ));

    let fp = cert.fingerprint.to_string();
    let mut first = spawn_clients(&addr, &fp, n)?;
    let m1 = settle().await;
    let mut second = spawn_clients(&addr, &fp, n)?;
    let m2 = settle().await;
    let per = (m2.saturating_sub(m1)) as f64 / n as f64;
    println!("idle TLS connections: {n} then {}", 2 * n);
    println!("server heap: {m1} B then {m2} B");
    println!("per idle connection: {per:.0} B ({:.2} KiB)", per / 1024.0);

    for child in [&mut first, &mut second] {
        drop(child.stdin.take());
        child.wait()?;
    }
    let _ = stop.send(());
    task.await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Lets the server finish writing and go idle, then reads the heap size.
async fn settle() -> usize {
    tokio::time::sleep(Duration::from_millis(500)).await;
    ALLOC.allocated()
}

/// Starts a child with `n` connections and waits until all are open.
fn spawn_clients(addr: &str, fp: &str, n: usize) -> Res<Child> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--clients", addr, fp, &n.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    if line.trim() != "ready" {
        return Err(format!("clients failed: {line:?}").into());
    }
    Ok(child)
}

async fn clients(addr: &str, fp: Fingerprint, n: usize) -> Res<()> {
    let connector = Connector::new(&Trust::Fingerprint(fp))?;
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = connector.connect(addr, None).await?;
        match c.recv().await? {
            Some(ServerFrame::Hello { .. }) => held.push(c),
            other => return Err(format!("expected hello, got {other:?}").into()),
        }
    }
    println!("ready");
    std::io::stdout().flush()?;
    // Stay idle until the parent closes our stdin.
    tokio::task::spawn_blocking(|| {
        let mut s = String::new();
        let _ = std::io::stdin().read_line(&mut s);
    })
    .await?;
    drop(held);
    Ok(())
}
