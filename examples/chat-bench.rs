//! Run with: `cargo run --release --example chat-bench -- fanout --spawn-server`
//! (`-- --help` lists the scenarios and options).
//!
//! The project's load tool. It speaks the real protocol over WebSocket
//! (default) or TLS TCP to a running chat server (`--http ADDR`,
//! `--tcp ADDR --fingerprint FP`), or starts the release `chat-server`
//! example itself (`--spawn-server`: free ports, a temporary data folder,
//! rate limits lifted). Scenarios:
//!
//! - `fanout`: rooms x subscribers and publishers; deliveries/s, delivery
//!   latency (send time is in the body), loss, duplicates, reorders.
//! - `idle`: N subscribed connections at once; server KiB per connection.
//! - `send`: durable sends with a window in flight; acks/s, ack latency.
//! - `churn`: connect, auth, resume by `seq`, read, disconnect; connects/s
//!   and whether every resume replayed exactly the missed messages.
//! - `cluster`: several nodes on this machine over Redis and PostgreSQL
//!   (`--spawn-services` starts throw-away ones), subscribers in shared
//!   rooms spread over every node and held by worker processes (each
//!   process stays under the 20,000 open files one may have here), so that
//!   together they hold far more connections than one process can; every
//!   message must reach every node's subscribers. `--nodes 1` (or
//!   `--embedded`, SQLite) is the single-node baseline. The workers are this
//!   binary in a hidden mode, `chat-bench cluster-worker`, driven over their
//!   stdin/stdout.
//!
//! Each prints context lines starting with `#` and one `RESULT` line
//! ending in `verdict=ok` or `verdict=FAIL` (loss, duplicates, reorders,
//! failed connections, wrong resumes); the exit status is 1 on `FAIL`.

use std::io::Write;

#[path = "chat-bench/args.rs"]
mod args;
#[path = "chat-bench/bots.rs"]
mod bots;
#[path = "chat-bench/churn.rs"]
mod churn;
#[path = "chat-bench/cluster.rs"]
mod cluster;
#[path = "chat-bench/conn.rs"]
mod conn;
#[path = "chat-bench/fake_llm.rs"]
mod fake_llm;
#[path = "chat-bench/fanout.rs"]
mod fanout;
#[path = "chat-bench/hist.rs"]
mod hist;
#[path = "chat-bench/idle.rs"]
mod idle;
#[path = "chat-bench/procinfo.rs"]
mod procinfo;
#[path = "chat-bench/send.rs"]
mod send;
#[path = "chat-bench/sender.rs"]
mod sender;
#[path = "chat-bench/services.rs"]
mod services;
#[path = "chat-bench/setup.rs"]
mod setup;
#[path = "chat-bench/spawn.rs"]
mod spawn;
#[path = "chat-bench/worker.rs"]
mod worker;
#[path = "chat-bench/workers.rs"]
mod workers;
#[path = "chat-bench/ws.rs"]
mod ws;

use args::{Opts, Scenario};

fn main() -> std::process::ExitCode {
    if std::env::args().nth(1).as_deref() == Some("cluster-worker") {
        return worker::main(std::env::args().skip(2).collect());
    }
    let opts = match Opts::parse(std::env::args().skip(1)) {
        Ok(Some(o)) => o,
        Ok(None) => {
            let _ = write!(std::io::stdout(), "{}", args::HELP);
            return std::process::ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("chat-bench: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chat-bench: runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        if opts.scenario == Scenario::Cluster {
            // Dropping the run on ctrl-c or SIGTERM kills every process it
            // started.
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .map_err(|e| format!("signal handler: {e}"))?;
            tokio::select! {
                r = cluster::run(&opts) => r.map(|line| format!("RESULT cluster transport=ws {line}")),
                _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
                _ = term.recv() => Err("terminated".to_owned()),
            }
        } else {
            run(opts).await
        }
    });
    match result {
        Ok(line) => {
            let _ = writeln!(std::io::stdout(), "{line}");
            if line.contains("verdict=FAIL") {
                std::process::ExitCode::FAILURE
            } else {
                std::process::ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("chat-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(o: Opts) -> Result<String, String> {
    let _ = conn::now_us();
    let mut server_args = o.server_args.clone();
    let llm = if o.scenario == Scenario::Bots {
        let llm = fake_llm::FakeLlm::start(o.bot_tokens, o.token_interval).await?;
        // Every reply at once: lift the bot limits above the replies asked.
        let room = (2 * o.bot_replies).max(64).to_string();
        for (flag, value) in [
            ("--openai-base-url", llm.base_url()),
            ("--bot-concurrency", room.clone()),
            ("--llm-concurrency", room),
            ("--llm-user-burst", "1000000".to_owned()),
            ("--llm-user-rate", "1000000".to_owned()),
        ] {
            server_args.push(flag.to_owned());
            server_args.push(value);
        }
        Some(llm)
    } else {
        None
    };
    if o.transport == args::TransportKind::Wss {
        server_args.extend(["--https".to_owned(), "true".to_owned()]);
    }
    let spawned = if o.spawn_server {
        Some(spawn::SpawnedServer::start(o.server_bin.as_deref(), &server_args).await?)
    } else {
        None
    };
    let pid = spawned
        .as_ref()
        .map(|s| s.pid)
        .or(o.server_pid)
        .map(|p| p.to_string());
    let (http, tcp, fp) = match &spawned {
        Some(s) => (
            Some(s.http.clone()),
            s.tcp.clone(),
            o.fingerprint.clone().or_else(|| s.fingerprint.clone()),
        ),
        None => (o.http.clone(), o.tcp.clone(), o.fingerprint.clone()),
    };
    let say = |s: String| {
        let _ = writeln!(std::io::stdout(), "# {s}");
    };
    say(format!(
        "chat-bench {} transport={} server http={} tcp={} pid={}",
        o.scenario.name(),
        o.transport.name(),
        http.as_deref().unwrap_or("-"),
        tcp.as_deref().unwrap_or("-"),
        pid.as_deref().unwrap_or("?"),
    ));
    say(format!(
        "open files (bench process): {}; load average before: {}",
        procinfo::open_files_limit(),
        procinfo::loadavg()
    ));
    let target = setup::target(&o, http.as_deref(), tcp.as_deref(), fp.as_deref())?;
    let world = setup::world(target, o.users, o.rooms).await?;
    let server_cpu = pid.as_deref().map(procinfo::CpuSnapshot::take);
    let client_cpu = procinfo::CpuSnapshot::take("self");
    let rss_before = pid.as_deref().and_then(procinfo::rss_kib);
    let result = match o.scenario {
        Scenario::Fanout => fanout::run(&o, &world).await,
        Scenario::Idle => idle::run(&o, &world, pid.as_deref(), http.as_deref()).await,
        Scenario::Send => send::run(&o, &world).await,
        Scenario::Churn => churn::run(&o, &world).await,
        Scenario::Cluster => Err("cluster runs on its own nodes".to_owned()),
        Scenario::Bots => match &llm {
            Some(llm) => bots::run(&o, &world, llm).await,
            None => Err("bots: no LLM endpoint".to_owned()),
        },
    };
    if let Some(cpu) = &server_cpu {
        say(format!("server {}", cpu.report()));
    }
    say(format!("bench  {}", client_cpu.report()));
    if let Some(pid) = pid.as_deref() {
        let kib = |v: Option<u64>| v.map_or("?".to_owned(), |v| v.to_string());
        say(format!(
            "server rss: {} KiB at start of the scenario, {} KiB now, peak {} KiB",
            kib(rss_before),
            kib(procinfo::rss_kib(pid)),
            kib(procinfo::status_kib(pid, "VmHWM")),
        ));
    }
    say(format!(
        "bench rss: {} KiB; load average after: {}",
        procinfo::rss_kib("self").unwrap_or(0),
        procinfo::loadavg()
    ));
    if let Some(s) = spawned {
        say(s.stop().await);
    }
    let line = result?;
    Ok(format!(
        "RESULT {} transport={} {line}",
        o.scenario.name(),
        o.transport.name()
    ))
}
