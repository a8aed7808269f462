//! Run with: `cargo run --release --example chat-server` (`-- --help` lists
//! the settings).
//!
//! A complete chat server on its embedded defaults: a SQLite file in
//! `./data`, the web client and WebSocket on http://127.0.0.1:8080, TLS TCP
//! for the terminal client on 127.0.0.1:7443 with a self-signed certificate,
//! and a `lobby` room with the built-in bot (plus an LLM bot when an OpenAI
//! key or base URL is set). Ctrl-C or SIGTERM stops it gracefully.
//!
//! It allocates with jemalloc (the default feature `jemalloc`), which keeps
//! a third less memory per idle connection than the system's malloc
//! (BENCHMARKS.md); `--no-default-features` builds it on the system's
//! malloc.

use std::io::Write;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use chat_engine::config::{self, Command};

/// Prints a line to stdout; a closed stdout must not take the server down.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
use chat_engine::server;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cmd = match config::parse(std::env::args().skip(1), |k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chat-server: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let config = match cmd {
        Command::Help(text) => {
            say!("{}", text.trim_end());
            return std::process::ExitCode::SUCCESS;
        }
        Command::Run(c) => c,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&config.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let running = match server::start(&config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("chat-server: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let scheme = if config.https { "https" } else { "http" };
    say!("chat-server is up (data in {})", config.data.display());
    say!("  browser:  {scheme}://{}/", running.http);
    if let Some(tcp) = running.tcp {
        say!(
            "  terminal: cargo run --example chat-cli -- --addr {tcp} --fingerprint {}",
            running.fingerprint
        );
    }
    say!(
        "  bots:     {} (in #{})",
        running.engine.bots().join(", "),
        server::LOBBY
    );
    say!(
        "  health:   {scheme}://{}/health   metrics: {scheme}://{}/metrics",
        running.http,
        running.http
    );

    wait_for_signal().await;
    say!("chat-server: shutting down");
    match running.shutdown().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat-server: shutdown: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
