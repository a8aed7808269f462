//! `bots`: people chat in R rooms x S subscribers at a steady rate, first
//! alone, then while N bot replies stream at once (the LLM bot, served by
//! [`FakeLlm`](crate::fake_llm::FakeLlm): every reply `tokens` pieces,
//! `token-ms` apart). People-to-people delivery latency of both phases is
//! compared: the bots must not hold people back (p99 within 2x).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_core::{ClientFrame, ServerFrame};
use tokio::sync::{watch, Semaphore};

use crate::args::Opts;
use crate::conn::{now_us, Conn, Incoming};
use crate::fake_llm::FakeLlm;
use crate::hist::{Counter, Histogram};
use crate::sender::{self, SendPlan, SendStats};
use crate::setup::{self, World};

/// The LLM bot's name on the spawned server (`--llm-name` default).
pub const BOT: &str = "assistant";

/// Longest wait for the last bot replies after the second phase.
const BOT_DRAIN: Duration = Duration::from_secs(60);

/// Shared by the subscriber tasks.
struct Shared {
    /// When the phase with bots began (µs on [`now_us`]); 0 before.
    bots_from_us: AtomicU64,
    alone: Histogram,
    with_bots: Histogram,
    people: Counter,
    /// Questions and stored replies seen, over all subscribers.
    bot_messages: Counter,
    ready: AtomicU64,
}

async fn subscriber(mut conn: Conn, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            inc = conn.recv() => match inc {
                Incoming::Message { sent_us: Some(t), .. } => {
                    shared.people.add(1);
                    let from = shared.bots_from_us.load(Ordering::Relaxed);
                    let lat = now_us().saturating_sub(t);
                    if from != 0 && t >= from {
                        shared.with_bots.record(lat);
                    } else {
                        shared.alone.record(lat);
                    }
                }
                // A question to the bot or its stored reply (their bodies
                // carry no send time).
                Incoming::Message { sent_us: None, .. } => shared.bot_messages.add(1),
                Incoming::Closed(_) => break,
                _ => {}
            }
        }
    }
}

/// People publishers for one phase: one per room, `rate` msgs/s in all.
async fn people(o: &Opts, world: &World, tag: &str) -> Result<SendStats, String> {
    let acks = Arc::new(Histogram::default());
    let deadline = Instant::now() + o.duration;
    let per = o.rate / o.rooms as f64;
    let mut handles = Vec::new();
    for (r, room) in world.rooms.iter().enumerate() {
        let mut c = Conn::connect(&world.target).await?;
        c.auth(&world.tokens[1 + r % (world.tokens.len() - 1)])
            .await?;
        let plan = SendPlan {
            room: room.clone(),
            window: o.window,
            rate: per,
            count: None,
            deadline,
            body_bytes: o.body_bytes,
            tag: format!("{tag}{r}"),
            phase: SendPlan::phase_of(r, o.rooms, per),
            wall_clock: false,
        };
        let (acks, failures) = (acks.clone(), world.failures.clone());
        handles.push(tokio::spawn(sender::run(c, plan, acks, failures)));
    }
    let mut total = SendStats::default();
    for h in handles {
        let st = h.await.map_err(|e| e.to_string())?;
        total.sent += st.sent;
        total.acked += st.acked;
        total.errors += st.errors;
    }
    Ok(total)
}

/// Sends `n` questions to the bot, spread over the rooms (one connection
/// per room) and evenly over `ramp` (so that they arrive like people asking,
/// not in one millisecond; with replies longer than `ramp` they all stream
/// at once); returns the acks.
async fn ask(world: &World, n: usize, ramp: Duration) -> Result<u64, String> {
    let rooms = world.rooms.len();
    let start = tokio::time::Instant::now();
    let mut handles = Vec::new();
    for (r, room) in world.rooms.iter().enumerate() {
        let mine: Vec<usize> = (r..n).step_by(rooms).collect();
        if mine.is_empty() {
            continue;
        }
        let mut c = Conn::connect(&world.target).await?;
        c.auth(&world.tokens[1 + r % (world.tokens.len() - 1)])
            .await?;
        let room = room.clone();
        let failures = world.failures.clone();
        handles.push(tokio::spawn(async move {
            let mut acked = 0u64;
            for i in mine {
                tokio::time::sleep_until(start + ramp.mul_f64(i as f64 / n as f64)).await;
                let ask = ClientFrame::Send {
                    room: room.clone(),
                    body: format!("@{BOT} question {i}: what is new?"),
                    client_id: Some(format!("ask{i}")),
                };
                let reply = tokio::time::timeout(
                    Duration::from_secs(30),
                    c.request(10_000 + i as u64, ask),
                )
                .await;
                match reply {
                    Ok(Ok(ServerFrame::Ack { .. })) => acked += 1,
                    Ok(Ok(other)) => failures.add(format!("ask: unexpected {other:?}")),
                    Ok(Err(e)) => {
                        failures.add(format!("ask: {e}"));
                        break;
                    }
                    Err(_) => {
                        failures.add("ask: no ack within 30 s");
                        break;
                    }
                }
            }
            c.close().await;
            acked
        }));
    }
    let mut acked = 0;
    for h in handles {
        acked += h.await.map_err(|e| e.to_string())?;
    }
    Ok(acked)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Runs the scenario; returns the summary line's fields.
pub async fn run(o: &Opts, world: &World, llm: &FakeLlm) -> Result<String, String> {
    if world.tokens.len() < 2 {
        return Err("bots needs --users 2 or more".into());
    }
    // The bot answers where it is a member: the owner invites it.
    let mut owner = Conn::connect(&world.target).await?;
    owner.auth(&world.tokens[0]).await?;
    for (i, room) in world.rooms.iter().enumerate() {
        let reply = owner
            .request(
                50 + i as u64,
                ClientFrame::Invite {
                    room: room.clone(),
                    user: BOT.to_owned(),
                },
            )
            .await?;
        if let ServerFrame::Error { message, .. } = reply {
            return Err(format!("invite {BOT} to {room}: {message}"));
        }
    }
    owner.close().await;

    let shared = Arc::new(Shared {
        bots_from_us: AtomicU64::new(0),
        alone: Histogram::default(),
        with_bots: Histogram::default(),
        people: Counter::default(),
        bot_messages: Counter::default(),
        ready: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(o.connect_concurrency));
    let total_subs = o.rooms * o.subscribers;
    let mut subs = Vec::with_capacity(total_subs);
    for i in 0..total_subs {
        let (target, shared, gate, stop) = (
            world.target.clone(),
            shared.clone(),
            gate.clone(),
            stop_rx.clone(),
        );
        let token = world.tokens[1 + i % (world.tokens.len() - 1)].clone();
        let room = world.rooms[i % o.rooms].clone();
        let failures = world.failures.clone();
        subs.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.ok();
            let conn =
                setup::subscriber(&target, &token, &room, None, Duration::from_secs(60)).await;
            drop(permit);
            match conn {
                Ok((conn, _, _)) => {
                    shared.ready.fetch_add(1, Ordering::Relaxed);
                    subscriber(conn, shared, stop).await;
                }
                Err(e) => failures.add(format!("subscriber setup: {e}")),
            }
        }));
    }
    while shared.ready.load(Ordering::Relaxed) + world.failures.total() < total_subs as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready = shared.ready.load(Ordering::Relaxed);
    eprintln!("# {ready}/{total_subs} subscribers ready");

    // Phase 1: people alone.
    let alone = people(o, world, "a").await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let people_alone = shared.people.get();

    // Phase 2: the same chat while every bot reply streams.
    shared.bots_from_us.store(now_us(), Ordering::Relaxed);
    let asking = ask(world, o.bot_replies, o.ask_ramp);
    let chatting = people(o, world, "b");
    let (asked, with_bots) = tokio::join!(asking, chatting);
    let (asked, with_bots) = (asked?, with_bots?);
    let open_at_end = llm.stats.open.load(Ordering::Relaxed);

    // The replies end on their own: wait for every question and its stored
    // reply to reach every subscriber of the room.
    let expected_bot = 2 * o.bot_replies as u64 * o.subscribers as u64;
    let drain = Instant::now();
    while shared.bot_messages.get() < expected_bot && drain.elapsed() < BOT_DRAIN {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop_tx.send(true);
    for h in subs {
        let _ = h.await;
    }

    let people_expected = (alone.acked + with_bots.acked) * o.subscribers as u64;
    let people_seen = shared.people.get();
    let people_loss = people_expected.saturating_sub(people_seen);
    let st = &llm.stats;
    let (started, finished, most_open) = (
        st.started.load(Ordering::Relaxed),
        st.finished.load(Ordering::Relaxed),
        st.most_open.load(Ordering::Relaxed),
    );
    let bot_seen = shared.bot_messages.get();
    let p99_alone = shared.alone.quantile(0.99);
    let p99_bots = shared.with_bots.quantile(0.99);
    let ratio = p99_bots as f64 / p99_alone.max(1) as f64;
    let ok = ratio <= 2.0
        && most_open >= o.bot_replies as u64
        && finished >= o.bot_replies as u64
        && bot_seen >= expected_bot
        && people_loss == 0
        && world.failures.total() == 0
        && ready == total_subs as u64;
    Ok(format!(
        "rooms={} subs/room={} people_rate={} bot_replies={} ask_ramp_ms={} tokens={} token_ms={} duration={}s \
         people_alone={} latency_alone[{}] people_with_bots={} latency_with_bots[{}] \
         p99_ratio={ratio:.2} p50_alone={:.2}ms p50_with_bots={:.2}ms asks_acked={asked} \
         llm_started={started} llm_finished={finished} llm_most_open={most_open} \
         llm_open_when_chat_ended={open_at_end} questions_and_replies_delivered={bot_seen}/{expected_bot} \
         people_delivered={people_seen}/{people_expected} (alone {people_alone}) \
         verdict={} failures=[{}]",
        o.rooms,
        o.subscribers,
        o.rate,
        o.bot_replies,
        o.ask_ramp.as_millis(),
        o.bot_tokens,
        o.token_interval.as_millis(),
        o.duration.as_secs_f64(),
        alone.acked,
        shared.alone.summary(),
        with_bots.acked,
        shared.with_bots.summary(),
        ms(shared.alone.quantile(0.5)),
        ms(shared.with_bots.quantile(0.5)),
        if ok { "ok" } else { "FAIL" },
        world.failures.summary(),
    ))
}
