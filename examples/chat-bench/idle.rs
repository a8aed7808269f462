//! `idle`: N connections, all logged in and subscribed, held open at once
//! (every one must succeed); the server's RSS before and after gives its
//! memory per idle connection, measured after `--hold` (a WebSocket
//! session sleeps without a task once idle for half to one ping interval:
//! the result says how many were asleep, and how many of their sockets
//! rested outside tokio's reactor, from `/metrics`). Then one
//! message proves every connection is live, and closing them all shows
//! what the server gives back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_core::ClientFrame;
use tokio::sync::{watch, Semaphore};

use crate::args::{IdleStage, Opts};
use crate::conn::{Conn, Incoming, Target};
use crate::procinfo;
use crate::setup::{self, World};

/// A ping this often keeps TLS TCP connections clear of the server's idle
/// timeout (5 min by default); WebSocket pings are answered by the library.
const KEEPALIVE: Duration = Duration::from_secs(60);

async fn hold(
    mut conn: Conn,
    got_probe: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
    failures: setup::Failures,
) {
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.tick().await;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = keepalive.tick() => {
                let ping = chat_core::Request { id: None, frame: ClientFrame::Ping };
                if let Err(e) = conn.send(&ping).await {
                    failures.add(format!("idle {e}"));
                    return;
                }
            }
            inc = conn.recv() => match inc {
                Incoming::Message { .. } => { got_probe.fetch_add(1, Ordering::Relaxed); }
                Incoming::Closed(why) => { failures.add(format!("idle {why}")); return; }
                _ => {}
            }
        }
    }
    conn.close().await;
}

/// Sets one connection up as far as `stage` says.
async fn staged(
    target: &Target,
    token: &str,
    room: &str,
    stage: IdleStage,
) -> Result<Conn, String> {
    let go = async {
        let mut c = Conn::connect(target).await?;
        if stage != IdleStage::Connect {
            c.auth(token).await?;
        }
        if stage == IdleStage::Subscribe {
            c.subscribe(room, None).await?;
        }
        Ok(c)
    };
    tokio::time::timeout(Duration::from_secs(60), go)
        .await
        .map_err(|_| "setup timeout".to_owned())?
}

fn kib(v: Option<u64>) -> String {
    v.map_or("?".to_owned(), |v| v.to_string())
}

/// Runs the scenario (see the module docs).
pub async fn run(
    o: &Opts,
    world: &World,
    server_pid: Option<&str>,
    http: Option<&str>,
) -> Result<String, String> {
    let rss = |f: &str| server_pid.and_then(|p| procinfo::status_kib(p, f));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (before, anon_before) = (rss("VmRSS"), rss("RssAnon"));
    let client_before = procinfo::rss_kib("self");
    let n = o.connections;
    let (stop_tx, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(o.connect_concurrency));
    let ready = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let probe = Arc::new(AtomicU64::new(0));
    let setup_hist = Arc::new(crate::hist::Histogram::default());
    let stage = o.stage;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let target = world.target.clone();
        let token = world.tokens[i % world.tokens.len()].clone();
        let room = world.rooms[i % world.rooms.len()].clone();
        let (gate, ready, failed, probe, stop, failures, sh) = (
            gate.clone(),
            ready.clone(),
            failed.clone(),
            probe.clone(),
            stop_rx.clone(),
            world.failures.clone(),
            setup_hist.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.ok();
            let t = Instant::now();
            let res = staged(&target, &token, &room, stage).await;
            drop(permit);
            match res {
                Ok(conn) => {
                    sh.record_duration(t.elapsed());
                    ready.fetch_add(1, Ordering::Relaxed);
                    hold(conn, probe, stop, failures).await;
                }
                Err(e) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    failures.add(format!("setup: {e}"));
                }
            }
        }));
    }
    while ready.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < n as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let setup_secs = start.elapsed().as_secs_f64();
    let ok = ready.load(Ordering::Relaxed);
    eprintln!(
        "# {ok}/{n} connections up in {setup_secs:.1}s; holding {:.0}s",
        o.hold.as_secs_f64()
    );
    tokio::time::sleep(o.hold).await;
    let (after, anon_after) = (rss("VmRSS"), rss("RssAnon"));
    let client_after = procinfo::rss_kib("self");
    let metrics = match http {
        Some(_) => world.target.http_get("/metrics").await,
        None => None,
    };
    let gauge = |name: &str| {
        metrics
            .as_deref()
            .and_then(|m| crate::cluster::gauge(m, name))
            .map_or("-".to_owned(), |n| n.to_string())
    };
    let (asleep, resting) = (
        gauge("chat_ws_sessions_asleep"),
        gauge("chat_ws_sockets_resting"),
    );

    // Liveness: one message per room must reach every connection.
    let mut c = Conn::connect(&world.target).await?;
    c.auth(&world.tokens[0]).await?;
    for (i, room) in world.rooms.iter().enumerate() {
        c.request(
            100 + i as u64,
            ClientFrame::Send {
                room: room.clone(),
                body: "probe".to_owned(),
                client_id: None,
            },
        )
        .await?;
    }
    let t = Instant::now();
    let want = if stage == IdleStage::Subscribe { ok } else { 0 };
    while probe.load(Ordering::Relaxed) < want && t.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let probe_secs = t.elapsed().as_secs_f64();
    c.close().await;
    let live = probe.load(Ordering::Relaxed);

    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let closed_rss = rss("VmRSS");

    let per = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if ok > 0 => format!("{:.2}", (b as f64 - a as f64) / ok as f64),
        _ => "?".to_owned(),
    };
    let client_per = per(client_before, client_after);
    let verdict = if ok == n as u64 && live >= want && world.failures.total() == 0 {
        "ok"
    } else {
        "FAIL"
    };
    Ok(format!(
        "{} ok={ok} failed={} setup={setup_secs:.1}s conn/s={:.0} setup_latency[{}] \
         server_rss_kib before={} after={} closed={} kib/conn={} anon_kib/conn={} \
         client_kib/conn={client_per} asleep={asleep} resting={resting} live={live}/{ok} in {probe_secs:.2}s verdict={verdict} failures=[{}]",
        o.params(),
        n as u64 - ok,
        ok as f64 / setup_secs,
        setup_hist.summary(),
        kib(before),
        kib(after),
        kib(closed_rss),
        per(before, after),
        per(anon_before, anon_after),
        world.failures.summary(),
    ))
}
