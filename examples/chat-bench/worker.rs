//! `chat-bench cluster-worker`: a hidden mode, started by the `cluster`
//! coordinator, that holds one share of the subscribers (one process may
//! hold only about 20,000 sockets here).
//!
//! The worker connects its subscribers round-robin across every node (see
//! [`placement`]), logs each in and subscribes it to its room from `seq` 0,
//! then checks every delivery: order by `seq` (loss, duplicates, reorders)
//! and latency against the wall-clock send time in the body.
//!
//! It talks to the coordinator with text lines. On its stdin:
//!
//! - `token <T>` (one per account), then `start`: set the subscribers up;
//! - `check <drain-secs> <final0,final1,...>`: the final `seq` of each room;
//!   wait (at most the drain time) until every subscriber saw `1..=final`;
//! - `stop` (or end of input): close everything and exit.
//!
//! On its stdout: `progress <ready> <failed>` each second while setting up,
//! then `ready <ready> <failed> <per-node counts>`; after `check`:
//! `failure <count> <reason>` lines, `hist <histogram>` (see
//! [`Histogram::export`]), `report delivered=… lost=… dups=… reorders=…
//! closed=… complete=… last_us=…` and `done`. Diagnostics go to stderr.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, Semaphore};

use crate::conn::{wall_us, Conn, Incoming, Target};
use crate::fanout::SeqSet;
use crate::hist::{Counter, Histogram};
use crate::setup::{self, Failures};

/// The room and the node of global subscriber `i`: every room gets
/// subscribers on every node as soon as there are `rooms x nodes` of them.
pub fn placement(i: usize, rooms: usize, nodes: usize) -> (usize, usize) {
    (i % rooms, (i / rooms) % nodes)
}

/// What one worker is given on its command line.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerArgs {
    pub id: usize,
    /// Every node's HTTP address.
    pub nodes: Vec<String>,
    pub rooms: Vec<String>,
    /// Its share: global subscribers `from..from + count`.
    pub from: usize,
    pub count: usize,
    /// Connections being set up at once.
    pub concurrency: usize,
    pub threads: usize,
    pub setup_timeout: Duration,
}

impl WorkerArgs {
    /// The arguments after `cluster-worker`.
    pub fn to_args(&self) -> Vec<String> {
        vec![
            "--worker".into(),
            self.id.to_string(),
            "--nodes".into(),
            self.nodes.join(","),
            "--rooms".into(),
            self.rooms.join(","),
            "--from".into(),
            self.from.to_string(),
            "--count".into(),
            self.count.to_string(),
            "--concurrency".into(),
            self.concurrency.to_string(),
            "--threads".into(),
            self.threads.to_string(),
            "--setup-timeout".into(),
            self.setup_timeout.as_secs_f64().to_string(),
        ]
    }

    /// Parses what [`to_args`](Self::to_args) wrote.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut a = WorkerArgs {
            id: 0,
            nodes: Vec::new(),
            rooms: Vec::new(),
            from: 0,
            count: 0,
            concurrency: 64,
            threads: 1,
            setup_timeout: Duration::from_secs(300),
        };
        let mut it = args.into_iter();
        while let Some(flag) = it.next() {
            let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let num = |v: &str| {
                v.parse::<usize>()
                    .map_err(|_| format!("bad value for {flag}: {v:?}"))
            };
            let list = |v: &str| v.split(',').map(str::to_owned).collect::<Vec<_>>();
            match flag.as_str() {
                "--worker" => a.id = num(&v)?,
                "--nodes" => a.nodes = list(&v),
                "--rooms" => a.rooms = list(&v),
                "--from" => a.from = num(&v)?,
                "--count" => a.count = num(&v)?,
                "--concurrency" => a.concurrency = num(&v)?.max(1),
                "--threads" => a.threads = num(&v)?.max(1),
                "--setup-timeout" => {
                    let s: f64 = v
                        .parse()
                        .map_err(|_| format!("bad --setup-timeout {v:?}"))?;
                    if !(s.is_finite() && s >= 0.0) {
                        return Err(format!("bad --setup-timeout {v:?}"));
                    }
                    a.setup_timeout = Duration::from_secs_f64(s);
                }
                other => return Err(format!("unknown worker option {other:?}")),
            }
        }
        if a.nodes.iter().any(String::is_empty) || a.rooms.iter().any(String::is_empty) {
            return Err("--nodes and --rooms must not be empty".into());
        }
        Ok(a)
    }
}

/// Writes one protocol line to the coordinator.
fn say(line: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|_| out.flush())
        .map_err(|e| format!("stdout: {e}"))
}

/// Lines from stdin, read by a plain thread (a blocked read never holds
/// the runtime up at exit); `None` at end of input.
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The worker process' entry point (`args` follow `cluster-worker`).
pub fn main(args: Vec<String>) -> std::process::ExitCode {
    let args = match WorkerArgs::parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("chat-bench cluster-worker: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chat-bench cluster-worker: runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let id = args.id;
    let res = rt.block_on(run(args));
    rt.shutdown_timeout(Duration::from_secs(2));
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat-bench cluster-worker {id}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Shared by the subscriber tasks of one worker.
struct Shared {
    latency: Histogram,
    delivered: Counter,
    ready: AtomicU64,
    failed: AtomicU64,
    closed: AtomicU64,
    complete: AtomicU64,
    /// Wall-clock µs of the latest new delivery.
    last_us: AtomicU64,
    per_node: Vec<AtomicU64>,
    failures: Failures,
}

struct SubResult {
    room: usize,
    seen: SeqSet,
    closed: bool,
}

type Finals = watch::Receiver<Option<Arc<Vec<u64>>>>;

async fn subscriber(
    mut conn: Conn,
    room: usize,
    replayed: Vec<u64>,
    shared: Arc<Shared>,
    mut finals: Finals,
    mut stop: watch::Receiver<bool>,
) -> SubResult {
    let mut seen = SeqSet::default();
    for seq in replayed {
        if seen.insert(seq) {
            shared.delivered.add(1);
        }
    }
    let mut target: Option<u64> = None;
    let mut complete = false;
    let mut closed = false;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            changed = finals.changed(), if target.is_none() => {
                if changed.is_err() {
                    break;
                }
                target = finals.borrow().as_ref().and_then(|f| f.get(room).copied());
            }
            inc = conn.recv() => match inc {
                Incoming::Message { seq, sent_us } => {
                    let now = wall_us();
                    if seen.insert(seq) {
                        shared.delivered.add(1);
                        shared.last_us.fetch_max(now, Ordering::Relaxed);
                    }
                    if let Some(t) = sent_us {
                        shared.latency.record(now.saturating_sub(t));
                    }
                }
                Incoming::Closed(why) => {
                    shared.failures.add(format!("subscriber {why}"));
                    shared.closed.fetch_add(1, Ordering::Relaxed);
                    closed = true;
                    break;
                }
                _ => {}
            }
        }
        if let (false, Some(t)) = (complete, target) {
            if seen.distinct() >= t && seen.count_upto(t) == t {
                complete = true;
                shared.complete.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    SubResult { room, seen, closed }
}

/// Runs the worker: see the module docs for the conversation.
async fn run(a: WorkerArgs) -> Result<(), String> {
    let mut input = stdin_lines();
    let mut tokens = Vec::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(60), input.recv())
            .await
            .map_err(|_| "no `start` from the coordinator within 60 s".to_owned())?
            .ok_or("the coordinator went away before `start`")?;
        if let Some(t) = line.strip_prefix("token ") {
            tokens.push(t.trim().to_owned());
        } else if line.trim() == "start" {
            break;
        } else {
            return Err(format!("unexpected line before start: {line:?}"));
        }
    }
    if tokens.is_empty() || a.rooms.is_empty() || a.nodes.is_empty() {
        return Err("needs tokens, rooms and nodes".into());
    }

    let shared = Arc::new(Shared {
        latency: Histogram::default(),
        delivered: Counter::default(),
        ready: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        closed: AtomicU64::new(0),
        complete: AtomicU64::new(0),
        last_us: AtomicU64::new(0),
        per_node: a.nodes.iter().map(|_| AtomicU64::new(0)).collect(),
        failures: Failures::default(),
    });
    let targets: Vec<Target> = a.nodes.iter().map(|n| Target::ws(n)).collect();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (finals_tx, finals_rx) = watch::channel(None::<Arc<Vec<u64>>>);
    let gate = Arc::new(Semaphore::new(a.concurrency));
    let deadline = Instant::now() + a.setup_timeout;
    let mut subs = Vec::with_capacity(a.count);
    for i in a.from..a.from + a.count {
        let (room, node) = placement(i, a.rooms.len(), a.nodes.len());
        let target = targets[node].clone();
        let token = tokens[i % tokens.len()].clone();
        let name = a.rooms[room].clone();
        let (shared, gate, finals, stop) = (
            shared.clone(),
            gate.clone(),
            finals_rx.clone(),
            stop_rx.clone(),
        );
        subs.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.ok();
            let left = deadline.saturating_duration_since(Instant::now());
            let res = setup::subscriber(&target, &token, &name, Some(0), left).await;
            drop(permit);
            match res {
                Ok((conn, replayed, _)) => {
                    shared.per_node[node].fetch_add(1, Ordering::Relaxed);
                    shared.ready.fetch_add(1, Ordering::Relaxed);
                    Some(subscriber(conn, room, replayed, shared, finals, stop).await)
                }
                Err(e) => {
                    shared.failures.add(format!("subscriber setup: {e}"));
                    shared.failed.fetch_add(1, Ordering::Relaxed);
                    None
                }
            }
        }));
    }
    // Every task ends its setup by the deadline (its timeout is what is
    // left of it); the margin covers the last ones reporting.
    let hard_stop = deadline + Duration::from_secs(10);
    let mut last_progress = Instant::now();
    loop {
        let (ready, failed) = (
            shared.ready.load(Ordering::Relaxed),
            shared.failed.load(Ordering::Relaxed),
        );
        if ready + failed >= a.count as u64 || Instant::now() > hard_stop {
            let per_node: Vec<String> = shared
                .per_node
                .iter()
                .map(|n| n.load(Ordering::Relaxed).to_string())
                .collect();
            let failed = a.count as u64 - ready;
            say(&format!("ready {ready} {failed} {}", per_node.join(",")))?;
            break;
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            say(&format!("progress {ready} {failed}"))?;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Wait for the final seqs (or the end).
    let (drain, finals) = match input.recv().await {
        Some(line) if line.starts_with("check ") => parse_check(&line)?,
        Some(line) if line.trim() == "stop" => return Ok(()),
        None => return Ok(()),
        Some(line) => return Err(format!("unexpected line {line:?}")),
    };
    let _ = finals_tx.send(Some(Arc::new(finals.clone())));
    let until = Instant::now() + drain;
    loop {
        let settled =
            shared.complete.load(Ordering::Relaxed) + shared.closed.load(Ordering::Relaxed);
        if settled >= shared.ready.load(Ordering::Relaxed) || Instant::now() > until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(true);
    let (mut lost, mut dups, mut reorders, mut closed, mut delivered) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let joined = tokio::time::Instant::now() + Duration::from_secs(30);
    for h in subs {
        let r = match tokio::time::timeout_at(joined, h).await {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) => continue,
            Ok(Err(e)) => return Err(format!("subscriber task: {e}")),
            Err(_) => return Err("a subscriber did not stop within 30 s".into()),
        };
        let fin = finals.get(r.room).copied().unwrap_or(0);
        let got = r.seen.count_upto(fin);
        delivered += got;
        lost += fin - got;
        dups += r.seen.dups;
        reorders += r.seen.reorders;
        closed += u64::from(r.closed);
    }
    for (reason, n) in shared.failures.entries() {
        let reason: String = reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        say(&format!("failure {n} {reason}"))?;
    }
    say(&format!("hist {}", shared.latency.export()))?;
    say(&format!(
        "report delivered={delivered} lost={lost} dups={dups} reorders={reorders} closed={closed} \
         complete={} last_us={}",
        shared.complete.load(Ordering::Relaxed),
        shared.last_us.load(Ordering::Relaxed),
    ))?;
    say("done")?;
    // Hold the connections until told to stop (or the coordinator is gone).
    while let Some(line) = input.recv().await {
        if line.trim() == "stop" {
            break;
        }
    }
    Ok(())
}

/// Parses `check <drain-secs> <final0,final1,...>`.
pub fn parse_check(line: &str) -> Result<(Duration, Vec<u64>), String> {
    let mut w = line.split_whitespace().skip(1);
    let bad = || format!("bad check line {line:?}");
    let drain: f64 = w.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    if !(drain.is_finite() && drain >= 0.0) {
        return Err(bad());
    }
    let finals = w
        .next()
        .ok_or_else(bad)?
        .split(',')
        .map(|s| s.parse().map_err(|_| bad()))
        .collect::<Result<Vec<u64>, String>>()?;
    Ok((Duration::from_secs_f64(drain), finals))
}

/// `key=value` words of a `report` line as numbers.
pub fn report_field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_covers_every_room_on_every_node() {
        let (rooms, nodes) = (10, 6);
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..rooms * nodes {
            seen.insert(placement(i, rooms, nodes));
        }
        assert_eq!(seen.len(), rooms * nodes);
    }

    #[test]
    fn args_and_lines_round_trip() {
        let a = WorkerArgs {
            id: 2,
            nodes: vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
            rooms: vec!["a".into(), "b".into()],
            from: 10,
            count: 20,
            concurrency: 8,
            threads: 1,
            setup_timeout: Duration::from_secs(5),
        };
        assert_eq!(WorkerArgs::parse(a.to_args()).unwrap(), a);
        let (d, f) = parse_check("check 2.5 3,0,7").unwrap();
        assert_eq!((d, f), (Duration::from_millis(2500), vec![3, 0, 7]));
        assert!(parse_check("check x 1").is_err());
        assert_eq!(report_field("report delivered=5 lost=0", "delivered"), 5);
        assert_eq!(report_field("report delivered=5 lost=0", "lost"), 0);
    }
}
