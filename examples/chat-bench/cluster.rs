//! `cluster`: fan-out across several `chat-server` nodes on this machine.
//!
//! One process may hold only about 20,000 sockets here (the open-file
//! limit), so the coordinator (this process) spreads the load: it starts
//! (with `--spawn-services`) a throw-away Redis and PostgreSQL, then N
//! nodes sharing them, signs up a few accounts and creates R public rooms
//! on node 0 (tokens and rooms live in PostgreSQL, so they work on every
//! node), and starts W worker processes (`chat-bench cluster-worker`, see
//! `worker.rs`) that hold the C subscribers, spread round-robin over every
//! node so that every room has subscribers on every node.
//!
//! Once every subscriber is up it samples each node (connections, RSS,
//! open files), then publishers on every node send at `--rate` for
//! `--duration` (or `--count` each), stamping bodies with the wall clock
//! (the subscribers are in other processes). The final `seq` of each room
//! goes to the workers, which wait until every subscriber saw `1..=final`
//! exactly once and in order, and report deliveries, loss, duplicates,
//! reorders and their latency histogram; the coordinator merges them into
//! true percentiles. Everything it started is stopped at the end, on error
//! paths too (and by the services' guard pipes if this process dies).

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::args::Opts;
use crate::conn::{wall_us, Conn, Target};
use crate::hist::Histogram;
use crate::procinfo::{self, CpuSnapshot, MachineCpu};
use crate::sender::{self, SendPlan, SendStats};
use crate::services::{self, Service};
use crate::setup::{self, Failures};
use crate::spawn::SpawnedServer;
use crate::worker::{placement, report_field, WorkerArgs};
use crate::workers::Workers;

fn say(s: impl AsRef<str>) {
    let _ = writeln!(std::io::stdout(), "# {}", s.as_ref());
}

/// Everything the run started, stopped in order by [`Parts::stop`] (and
/// killed on drop if the run is abandoned).
#[derive(Default)]
struct Parts {
    redis: Option<Service>,
    pg: Option<Service>,
    nodes: Vec<SpawnedServer>,
    workers: Option<Workers>,
}

impl Parts {
    async fn stop(&mut self) {
        if let Some(w) = self.workers.take() {
            w.stop().await;
        }
        let nodes = std::mem::take(&mut self.nodes);
        let logs = join_all(nodes.into_iter().map(SpawnedServer::stop)).await;
        for (i, log) in logs.iter().enumerate() {
            say(format!("node {i} {log}"));
        }
        if let Some(s) = self.redis.take() {
            s.stop().await;
        }
        if let Some(s) = self.pg.take() {
            s.stop().await;
        }
    }
}

/// Runs the scenario; returns the summary line's fields after the
/// scenario and transport names.
pub async fn run(o: &Opts) -> Result<String, String> {
    let mut parts = Parts::default();
    let res = go(o, &mut parts).await;
    parts.stop().await;
    res
}

/// `GET path` over plain HTTP/1.1; the whole response.
pub(crate) async fn http_get(addr: &str, path: &str) -> Result<String, String> {
    let go = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(5), go)
        .await
        .map_err(|_| format!("GET {path}: timeout"))?
        .map_err(|e| format!("GET {path}: {e}"))?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// The value of an unlabelled Prometheus sample `name`.
pub(crate) fn gauge(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some(name))
            .then(|| w.next()?.parse::<f64>().ok())
            .flatten()
            .map(|v| v as u64)
    })
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("?".to_owned(), |k| format!("{:.0}", k as f64 / 1024.0))
}

fn cores(v: Option<f64>) -> String {
    v.map_or("?".to_owned(), |c| format!("{c:.2}"))
}

/// What the workers said about their subscribers after `check`.
#[derive(Default)]
struct Totals {
    delivered: u64,
    lost: u64,
    dups: u64,
    reorders: u64,
    closed: u64,
    last_us: u64,
}

async fn go(o: &Opts, parts: &mut Parts) -> Result<String, String> {
    say(format!("chat-bench cluster {}", o.params()));
    say(format!(
        "open files (bench process): {}; load average before: {}",
        procinfo::open_files_limit(),
        procinfo::loadavg()
    ));

    // Services.
    let (mut redis_url, mut pg_url) = (o.redis.clone(), o.postgres.clone());
    if o.spawn_services {
        let t = Instant::now();
        let redis = services::redis().await?;
        redis_url = Some(redis.url.clone());
        say(format!(
            "redis-server pid {} on port {}",
            redis.pid, redis.port
        ));
        parts.redis = Some(redis);
        let pg = services::postgres().await?;
        pg_url = Some(pg.url.clone());
        say(format!(
            "postgres pid {} on port {} (services up in {:.1}s)",
            pg.pid,
            pg.port,
            t.elapsed().as_secs_f64()
        ));
        parts.pg = Some(pg);
    }

    // Nodes: node 0 first (it creates the schema), then the others.
    let mut extra: Vec<String> = vec!["--shutdown-grace".into(), "2".into()];
    if let (Some(r), Some(p)) = (&redis_url, &pg_url) {
        extra.extend(["--redis".into(), r.clone(), "--postgres".into(), p.clone()]);
    }
    extra.extend(o.server_args.iter().cloned());
    for i in 0..o.nodes {
        let n = SpawnedServer::start(o.server_bin.as_deref(), &extra)
            .await
            .map_err(|e| format!("node {i}: {e}"))?;
        say(format!("node {i} pid {} http {}", n.pid, n.http));
        parts.nodes.push(n);
    }
    let pids: Vec<String> = parts.nodes.iter().map(|n| n.pid.to_string()).collect();
    let https: Vec<String> = parts.nodes.iter().map(|n| n.http.clone()).collect();

    // Accounts and rooms, once, on node 0.
    let world = tokio::time::timeout(
        Duration::from_secs(120),
        setup::world(Target::ws(&https[0]), o.users, o.rooms),
    )
    .await
    .map_err(|_| "signing up and creating the rooms took over 120 s".to_owned())??;
    let failures = world.failures.clone();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_base: Vec<Option<u64>> = pids.iter().map(|p| procinfo::rss_kib(p)).collect();

    // Workers, each with its share of the subscribers.
    let (c, w) = (o.connections, o.workers);
    let plans: Vec<WorkerArgs> = (0..w)
        .map(|i| WorkerArgs {
            id: i,
            nodes: https.clone(),
            rooms: world.rooms.clone(),
            from: c * i / w,
            count: c * (i + 1) / w - c * i / w,
            concurrency: (o.connect_concurrency / w).max(1),
            threads: o.worker_threads,
            setup_timeout: o.setup_timeout,
        })
        .collect();
    let setup_start = Instant::now();
    let workers = parts
        .workers
        .insert(Workers::spawn(plans, &world.tokens).await?);
    say(format!("workers: pids {:?}", workers.pids()));
    let deadline = Instant::now() + o.setup_timeout + Duration::from_secs(30);
    let mut progress = vec![(0u64, 0u64); w];
    let mut done = vec![false; w];
    let mut per_node = vec![0u64; o.nodes];
    let mut last_print = Instant::now();
    while done.iter().any(|d| !d) {
        let (i, line) = workers.next(deadline).await?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |k: usize| {
            words
                .get(k)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        match words.first().copied() {
            Some("progress") => progress[i] = (num(1), num(2)),
            Some("ready") => {
                progress[i] = (num(1), num(2));
                done[i] = true;
                let counts = words.get(3).copied().unwrap_or("");
                for (n, v) in counts.split(',').enumerate() {
                    if let (Some(slot), Ok(v)) = (per_node.get_mut(n), v.parse::<u64>()) {
                        *slot += v;
                    }
                }
            }
            _ => return Err(format!("worker {i}: unexpected {line:?}")),
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            last_print = Instant::now();
            let (r, f) = progress.iter().fold((0, 0), |a, p| (a.0 + p.0, a.1 + p.1));
            say(format!(
                "setting up: {r}/{c} subscribers ready, {f} failed, {:.0}s",
                setup_start.elapsed().as_secs_f64()
            ));
        }
    }
    let setup_secs = setup_start.elapsed().as_secs_f64();
    let (ready, failed) = progress.iter().fold((0, 0), |a, p| (a.0 + p.0, a.1 + p.1));
    say(format!(
        "{ready}/{c} subscribers ready ({failed} failed) in {setup_secs:.1}s: {:.0} connections/s",
        ready as f64 / setup_secs.max(1e-9)
    ));

    // Every node with all connections up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut rss_up = Vec::new();
    let mut kib_per_conn = Vec::new();
    for (i, pid) in pids.iter().enumerate() {
        let rss = procinfo::rss_kib(pid);
        let sessions = match http_get(&https[i], "/metrics").await {
            Ok(text) => gauge(&text, "chat_sessions").map_or("?".into(), |v| v.to_string()),
            Err(e) => e,
        };
        let per = match (rss, rss_base[i]) {
            (Some(a), Some(b)) if per_node[i] > 0 => {
                Some((a as f64 - b as f64) / per_node[i] as f64)
            }
            _ => None,
        };
        say(format!(
            "node {i}: {} subscribers, server sessions {sessions}, open fds {}, rss {} MiB \
             (+{} KiB/connection)",
            per_node[i],
            procinfo::open_fds(pid).map_or("?".into(), |v| v.to_string()),
            mib(rss),
            per.map_or("?".into(), |v| format!("{v:.1}")),
        ));
        rss_up.push(rss);
        kib_per_conn.extend(per);
    }
    for (i, pid) in workers.pids().iter().enumerate() {
        let p = pid.to_string();
        say(format!(
            "worker {i}: open fds {}, rss {} MiB",
            procinfo::open_fds(&p).map_or("?".into(), |v| v.to_string()),
            mib(procinfo::rss_kib(&p)),
        ));
    }

    // Publishers, spread over the nodes and rooms.
    let mut pubs = Vec::with_capacity(o.publishers);
    for p in 0..o.publishers {
        let (room, node) = (p % o.rooms, p % o.nodes);
        let go = async {
            let mut c = Conn::connect(&Target::ws(&https[node])).await?;
            c.auth(&world.tokens[0]).await?;
            Ok::<_, String>(c)
        };
        let conn = tokio::time::timeout(Duration::from_secs(30), go)
            .await
            .map_err(|_| format!("publisher {p}: setup timeout"))?
            .map_err(|e| format!("publisher {p}: {e}"))?;
        pubs.push((room, conn));
    }
    let node_cpu: Vec<CpuSnapshot> = pids.iter().map(|p| CpuSnapshot::take(p)).collect();
    let worker_cpu: Vec<CpuSnapshot> = workers
        .pids()
        .iter()
        .map(|p| CpuSnapshot::take(&p.to_string()))
        .collect();
    let self_cpu = CpuSnapshot::take("self");
    let machine_cpu = MachineCpu::take();
    let redis_cpu = parts
        .redis
        .as_ref()
        .map(|r| CpuSnapshot::take(&r.pid.to_string()));
    let pg_pid = parts.pg.as_ref().map(|p| p.pid);
    let pg_cpu0 = pg_pid.map(procinfo::tree_cpu_secs);

    let acks = Arc::new(Histogram::default());
    let start = Instant::now();
    let start_wall = wall_us();
    let deadline = start + o.duration;
    let rate = o.rate / o.publishers as f64;
    let mut handles = Vec::new();
    for (p, (room, conn)) in pubs.into_iter().enumerate() {
        let plan = SendPlan {
            room: world.rooms[room].clone(),
            window: o.window,
            rate,
            count: o.count,
            deadline,
            body_bytes: o.body_bytes,
            tag: format!("p{p}"),
            phase: SendPlan::phase_of(p, o.publishers, rate),
            wall_clock: true,
        };
        let (acks, failures) = (acks.clone(), failures.clone());
        handles.push((
            room,
            tokio::spawn(async move { sender::run(conn, plan, acks, failures).await }),
        ));
    }
    let mut sent = SendStats::default();
    let mut finals = vec![0u64; o.rooms];
    let send_limit = o.duration + Duration::from_secs(60);
    for (room, h) in handles {
        let st = tokio::time::timeout(send_limit, h)
            .await
            .map_err(|_| "a publisher did not finish in time".to_owned())?
            .map_err(|e| e.to_string())?;
        sent.sent += st.sent;
        sent.acked += st.acked;
        sent.errors += st.errors;
        finals[room] = finals[room].max(st.last_seq);
    }
    let send_secs = start.elapsed().as_secs_f64();

    // The final seqs to the workers; their reports back.
    let list: Vec<String> = finals.iter().map(u64::to_string).collect();
    workers
        .send_all(&format!(
            "check {} {}",
            o.drain.as_secs_f64(),
            list.join(",")
        ))
        .await?;
    let latency = Histogram::default();
    let mut t = Totals::default();
    let mut reported = vec![false; w];
    let deadline = Instant::now() + o.drain + Duration::from_secs(60);
    while reported.iter().any(|r| !r) {
        let (i, line) = workers.next(deadline).await?;
        if let Some(rest) = line.strip_prefix("failure ") {
            let (n, reason) = rest.split_once(' ').unwrap_or((rest, "?"));
            failures.add_n(reason, n.parse().unwrap_or(1));
        } else if let Some(h) = line.strip_prefix("hist ") {
            latency.import(h)?;
        } else if line.starts_with("report ") {
            t.delivered += report_field(&line, "delivered");
            t.lost += report_field(&line, "lost");
            t.dups += report_field(&line, "dups");
            t.reorders += report_field(&line, "reorders");
            t.closed += report_field(&line, "closed");
            t.last_us = t.last_us.max(report_field(&line, "last_us"));
        } else if line == "done" {
            reported[i] = true;
        } else if !line.starts_with("progress ") {
            return Err(format!("worker {i}: unexpected {line:?}"));
        }
    }

    // Where the CPU went, from the first send to the last report.
    for (i, s) in node_cpu.iter().enumerate() {
        say(format!("node {i} {}", s.report()));
    }
    let workers_cores: f64 = worker_cpu.iter().filter_map(CpuSnapshot::cores).sum();
    say(format!("workers cpu={workers_cores:.2} cores in total"));
    say(format!("coordinator {}", self_cpu.report()));
    let redis_cores = redis_cpu.as_ref().and_then(CpuSnapshot::cores);
    let pg_cores = match (pg_pid, pg_cpu0) {
        (Some(pid), Some(before)) => {
            Some((procinfo::tree_cpu_secs(pid) - before) / start.elapsed().as_secs_f64())
        }
        _ => None,
    };
    say(format!(
        "redis cpu={} cores, postgres cpu={} cores (all its processes)",
        cores(redis_cores),
        cores(pg_cores)
    ));
    say(format!("machine cpu: {}", machine_cpu.report()));
    say(format!("load average after: {}", procinfo::loadavg()));

    let subs_per_room: Vec<u64> = (0..o.rooms)
        .map(|r| {
            (0..c)
                .filter(|i| placement(*i, o.rooms, o.nodes).0 == r)
                .count() as u64
        })
        .collect();
    let expected: u64 = finals.iter().zip(&subs_per_room).map(|(f, s)| f * s).sum();
    let deliver_secs = t.last_us.saturating_sub(start_wall) as f64 / 1e6;
    let bad = t.lost + t.dups + t.reorders + t.closed + failed + sent.errors;
    let verdict = if bad == 0 && expected > 0 && t.delivered == expected && failures.total() == 0 {
        "ok"
    } else {
        "FAIL"
    };
    let join = |v: Vec<String>| v.join("/");
    let mean_kib = if kib_per_conn.is_empty() {
        "?".to_owned()
    } else {
        format!(
            "{:.1}",
            kib_per_conn.iter().sum::<f64>() / kib_per_conn.len() as f64
        )
    };
    Ok(format!(
        "{} ready={ready} setup={setup_secs:.1}s conn/s={:.0} sent={} acked={} send_errors={} \
         msgs/s={:.0} expected={expected} delivered={} deliveries/s={:.0} latency[{}] ack[{}] \
         loss={} dups={} reorders={} subs_closed={} subs_failed={failed} node_conns={} \
         node_rss_mib={} kib/conn={mean_kib} node_cpu={} workers_cpu={workers_cores:.2} \
         redis_cpu={} pg_cpu={} verdict={verdict} failures=[{}]",
        o.params(),
        ready as f64 / setup_secs.max(1e-9),
        sent.sent,
        sent.acked,
        sent.errors,
        sent.acked as f64 / send_secs.max(1e-9),
        t.delivered,
        t.delivered as f64 / deliver_secs.max(1e-6),
        latency.summary(),
        acks.summary(),
        t.lost,
        t.dups,
        t.reorders,
        t.closed,
        join(per_node.iter().map(u64::to_string).collect()),
        join(rss_up.into_iter().map(mib).collect()),
        join(node_cpu.iter().map(|s| cores(s.cores())).collect()),
        cores(redis_cores),
        cores(pg_cores),
        Failures::summary(&failures),
    ))
}
