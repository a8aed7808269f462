//! `fanout`: R rooms x S subscribers, P publishers. Every subscriber checks
//! the room's order by `seq` (loss, duplicates, reorders) and times each
//! delivery against the send time carried in the body.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};

use crate::args::Opts;
use crate::conn::{now_us, Conn, Incoming};
use crate::hist::{Counter, Histogram};
use crate::sender::{self, SendPlan, SendStats};
use crate::setup::{self, Failures, World};

/// Which seqs one subscriber has seen.
#[derive(Default)]
pub struct SeqSet {
    bits: Vec<u64>,
    distinct: u64,
    pub dups: u64,
    pub reorders: u64,
    max: u64,
}

impl SeqSet {
    /// Records `seq`; false if it was a duplicate.
    pub fn insert(&mut self, seq: u64) -> bool {
        let i = seq.saturating_sub(1) as usize;
        if i / 64 >= self.bits.len() {
            self.bits.resize(i / 64 + 1 + self.bits.len() / 2, 0);
        }
        let (w, b) = (i / 64, 1u64 << (i % 64));
        if self.bits[w] & b != 0 {
            self.dups += 1;
            return false;
        }
        self.bits[w] |= b;
        self.distinct += 1;
        if seq < self.max {
            self.reorders += 1;
        }
        self.max = self.max.max(seq);
        true
    }

    /// Distinct seqs seen.
    pub fn distinct(&self) -> u64 {
        self.distinct
    }

    /// Distinct seqs seen in `1..=last`.
    pub fn count_upto(&self, last: u64) -> u64 {
        let full = (last / 64) as usize;
        let mut n: u64 = self
            .bits
            .iter()
            .take(full)
            .map(|w| u64::from(w.count_ones()))
            .sum();
        if let Some(w) = self.bits.get(full) {
            let rem = last % 64;
            let mask = if rem == 0 { 0 } else { (1u64 << rem) - 1 };
            n += u64::from((w & mask).count_ones());
        }
        n
    }
}

struct SubResult {
    room: usize,
    seen: SeqSet,
    closed: Option<String>,
}

/// Shared by the subscriber tasks.
struct Shared {
    latency: Histogram,
    delivered: Counter,
    ready: AtomicU64,
    failures: Failures,
}

async fn subscriber(
    mut conn: Conn,
    room: usize,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> SubResult {
    let mut seen = SeqSet::default();
    let mut closed = None;
    // One wait for the stop for the whole run (a new one per message was
    // a twentieth of the tool's CPU); looked at first, so a stop is never
    // starved by a busy socket.
    let stopped = stop.changed();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => break,
            inc = conn.recv() => match inc {
                Incoming::Message { seq, sent_us } => {
                    if seen.insert(seq) {
                        shared.delivered.add(1);
                    }
                    if let Some(t) = sent_us {
                        shared.latency.record(now_us().saturating_sub(t));
                    }
                }
                Incoming::Closed(why) => {
                    shared.failures.add(format!("subscriber {why}"));
                    closed = Some(why);
                    break;
                }
                _ => {}
            },
        }
    }
    drop(conn);
    SubResult { room, seen, closed }
}

/// Runs the scenario; returns the summary line's fields after the
/// scenario and transport names.
pub async fn run(o: &Opts, world: &World) -> Result<String, String> {
    let shared = Arc::new(Shared {
        latency: Histogram::default(),
        delivered: Counter::default(),
        ready: AtomicU64::new(0),
        failures: world.failures.clone(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(o.connect_concurrency));
    let total_subs = o.rooms * o.subscribers;
    let setup_start = Instant::now();
    let mut subs = Vec::with_capacity(total_subs);
    for i in 0..total_subs {
        let room = i % o.rooms;
        let (target, shared, gate, stop) = (
            world.target.clone(),
            shared.clone(),
            gate.clone(),
            stop_rx.clone(),
        );
        let token = world.tokens[i % world.tokens.len()].clone();
        let name = world.rooms[room].clone();
        subs.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.ok();
            let conn =
                setup::subscriber(&target, &token, &name, Some(0), Duration::from_secs(60)).await;
            drop(permit);
            match conn {
                Ok((conn, _, _)) => {
                    shared.ready.fetch_add(1, Ordering::Relaxed);
                    Some(subscriber(conn, room, shared, stop).await)
                }
                Err(e) => {
                    shared.failures.add(format!("subscriber setup: {e}"));
                    None
                }
            }
        }));
    }
    // Wait for every subscriber to be set up (or to have failed).
    loop {
        let done = shared.ready.load(Ordering::Relaxed) + shared.failures.total();
        if done >= total_subs as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready = shared.ready.load(Ordering::Relaxed);
    eprintln!(
        "# {ready}/{total_subs} subscribers ready in {:.1}s",
        setup_start.elapsed().as_secs_f64()
    );

    let mut pubs = Vec::new();
    for p in 0..o.publishers {
        let mut c = Conn::connect(&world.target).await?;
        c.auth(&world.tokens[0]).await?;
        pubs.push((p % o.rooms, c));
    }
    let acks = Arc::new(Histogram::default());
    let start = Instant::now();
    let start_us = now_us();
    let deadline = start + o.duration;
    let rate = o.rate / o.publishers as f64;
    let count = o.count;
    let mut handles = Vec::new();
    for (p, (room, conn)) in pubs.into_iter().enumerate() {
        let plan = SendPlan {
            room: world.rooms[room].clone(),
            window: o.window,
            rate,
            count,
            deadline,
            body_bytes: o.body_bytes,
            tag: format!("p{p}"),
            phase: SendPlan::phase_of(p, o.publishers, rate),
            wall_clock: false,
        };
        let (acks, failures) = (acks.clone(), world.failures.clone());
        handles.push((
            room,
            tokio::spawn(async move { sender::run(conn, plan, acks, failures).await }),
        ));
    }
    let mut total = SendStats::default();
    let mut final_seq = vec![0u64; o.rooms];
    for (room, h) in handles {
        let st = h.await.map_err(|e| e.to_string())?;
        total.sent += st.sent;
        total.acked += st.acked;
        total.errors += st.errors;
        final_seq[room] = final_seq[room].max(st.last_seq);
    }
    let send_secs = start.elapsed().as_secs_f64();
    let subs_per_room: Vec<u64> = (0..o.rooms)
        .map(|r| (0..total_subs).filter(|i| i % o.rooms == r).count() as u64)
        .collect();
    let expected: u64 = (0..o.rooms).map(|r| final_seq[r] * subs_per_room[r]).sum();

    // Drain: until everything arrived, nothing moved for 2 s, or --drain.
    let drain_start = Instant::now();
    let (mut last_n, mut last_move) = (shared.delivered.get(), Instant::now());
    let mut last_delivery_us = now_us();
    loop {
        let n = shared.delivered.get();
        if n != last_n {
            last_n = n;
            last_move = Instant::now();
            last_delivery_us = now_us();
        }
        if n >= expected
            || last_move.elapsed() > Duration::from_secs(2)
            || drain_start.elapsed() > o.drain
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = stop_tx.send(true);
    let (mut received, mut dups, mut reorders, mut lost, mut closed) = (0u64, 0, 0, 0u64, 0);
    for h in subs {
        if let Ok(Some(r)) = h.await {
            let got = r.seen.count_upto(final_seq[r.room]);
            received += got;
            lost += final_seq[r.room] - got;
            dups += r.seen.dups;
            reorders += r.seen.reorders;
            closed += u64::from(r.closed.is_some());
        }
    }
    // Subscribers that never got set up lose everything too.
    let missing_subs = total_subs as u64 - ready;
    let bad = lost + dups + reorders + closed + missing_subs + total.errors;
    let verdict = if bad == 0 { "ok" } else { "FAIL" };
    let deliver_secs = (last_delivery_us.saturating_sub(start_us)) as f64 / 1e6;
    Ok(format!(
        "{} sent={} acked={} send_errors={} msgs/s={:.0} expected={expected} delivered={received} \
         deliveries/s={:.0} latency[{}] ack[{}] loss={lost} dups={dups} reorders={reorders} \
         subs_closed={closed} subs_failed={missing_subs} verdict={verdict} failures=[{}]",
        o.params(),
        total.sent,
        total.acked,
        total.errors,
        total.acked as f64 / send_secs,
        received as f64 / deliver_secs.max(1e-6),
        shared.latency.summary(),
        acks.summary(),
        world.failures.summary(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqset_counts_dups_reorders_and_ranges() {
        let mut s = SeqSet::default();
        for q in [1, 2, 3, 5, 4, 4, 200] {
            s.insert(q);
        }
        assert_eq!((s.dups, s.reorders), (1, 1));
        assert_eq!(s.count_upto(5), 5);
        assert_eq!(s.count_upto(64), 5);
        assert_eq!(s.count_upto(199), 5);
        assert_eq!(s.count_upto(200), 6);
        assert_eq!(s.count_upto(0), 0);
    }
}
