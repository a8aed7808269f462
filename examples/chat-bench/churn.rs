//! `churn`: C clients loop connect → auth by token → subscribe with resume
//! from the last `seq` they saw → read live for a moment → disconnect,
//! while publishers keep posting. Each resume must replay exactly the
//! missed messages (no gap, no duplicate), the live part must continue
//! without a gap, and a last resume after the publishers stop must reach
//! the room's final `seq`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::args::Opts;
use crate::conn::{Conn, Incoming, Target};
use crate::hist::Histogram;
use crate::sender::{self, SendPlan, SendStats};
use crate::setup::{self, Failures, World};

#[derive(Default, Debug, Clone, Copy)]
struct ChurnStats {
    cycles: u64,
    setup_failed: u64,
    resumes_exact: u64,
    resumes_wrong: u64,
    replayed: u64,
    live: u64,
    live_gaps: u64,
    live_dups: u64,
    final_ok: u64,
    final_wrong: u64,
}

/// Whether `replayed` is exactly `from+1 ..= to`.
fn exact(replayed: &[u64], from: u64, to: u64) -> bool {
    replayed.len() as u64 == to.saturating_sub(from)
        && replayed.iter().zip(from + 1..).all(|(a, b)| *a == b)
}

struct Churner {
    target: Target,
    token: String,
    room: String,
    hold: Duration,
    deadline: Instant,
    count: u64,
    latency: Arc<Histogram>,
    failures: Failures,
}

impl Churner {
    async fn run(self, mut finals: watch::Receiver<Option<u64>>) -> ChurnStats {
        let mut st = ChurnStats::default();
        let mut last = 0u64;
        while Instant::now() < self.deadline && st.cycles < self.count {
            let t0 = Instant::now();
            let res = setup::subscriber(
                &self.target,
                &self.token,
                &self.room,
                Some(last),
                Duration::from_secs(30),
            )
            .await;
            let (conn, replayed, sub_last) = match res {
                Ok(r) => r,
                Err(e) => {
                    st.setup_failed += 1;
                    self.failures.add(format!("churn setup: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            self.latency.record_duration(t0.elapsed());
            st.replayed += replayed.len() as u64;
            if exact(&replayed, last, sub_last) {
                st.resumes_exact += 1;
            } else {
                st.resumes_wrong += 1;
                self.failures.add(format!(
                    "resume from {last}: {} messages replayed ({:?}..{:?}), subscribed at {sub_last}",
                    replayed.len(),
                    replayed.first(),
                    replayed.last()
                ));
            }
            last = sub_last.max(replayed.iter().copied().max().unwrap_or(0));
            self.read_live(conn, &mut last, &mut st).await;
            st.cycles += 1;
        }
        // The final resume, once the publishers are done.
        let Ok(fin) = finals
            .wait_for(Option::is_some)
            .await
            .map(|v| v.unwrap_or(0))
        else {
            return st;
        };
        match setup::subscriber(
            &self.target,
            &self.token,
            &self.room,
            Some(last),
            Duration::from_secs(60),
        )
        .await
        {
            Ok((conn, replayed, sub_last)) if sub_last == fin && exact(&replayed, last, fin) => {
                st.final_ok += 1;
                conn.close().await;
            }
            Ok((conn, replayed, sub_last)) => {
                st.final_wrong += 1;
                self.failures.add(format!(
                    "final resume from {last}: got {} messages up to {sub_last}, room ends at {fin}",
                    replayed.len()
                ));
                conn.close().await;
            }
            Err(e) => {
                st.final_wrong += 1;
                self.failures.add(format!("final resume: {e}"));
            }
        }
        st
    }

    async fn read_live(&self, mut conn: Conn, last: &mut u64, st: &mut ChurnStats) {
        let until = tokio::time::Instant::now() + self.hold;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                inc = conn.recv() => match inc {
                    Incoming::Message { seq, .. } => {
                        if seq == *last + 1 {
                            st.live += 1;
                            *last = seq;
                        } else if seq <= *last {
                            st.live_dups += 1;
                        } else {
                            st.live_gaps += 1;
                            self.failures.add(format!(
                                "churn live gap: expected {} got {seq} ({} ms after subscribed)",
                                *last + 1,
                                (self.hold - until.saturating_duration_since(tokio::time::Instant::now())).as_millis()
                            ));
                            *last = seq;
                        }
                    }
                    Incoming::Closed(why) => {
                        self.failures.add(format!("churn {why}"));
                        return;
                    }
                    _ => {}
                }
            }
        }
        conn.close().await;
    }
}

/// Runs the scenario (see the module docs).
pub async fn run(o: &Opts, world: &World) -> Result<String, String> {
    let mut pubs = Vec::new();
    for p in 0..o.publishers {
        let mut c = Conn::connect(&world.target).await?;
        c.auth(&world.tokens[0]).await?;
        pubs.push((p % o.rooms, c));
    }
    let latency = Arc::new(Histogram::default());
    let acks = Arc::new(Histogram::default());
    let start = Instant::now();
    let deadline = start + o.duration;
    let mut pub_handles = Vec::new();
    for (p, (room, conn)) in pubs.into_iter().enumerate() {
        let plan = SendPlan {
            room: world.rooms[room].clone(),
            window: o.window,
            rate: o.rate / o.publishers as f64,
            count: None,
            deadline,
            body_bytes: o.body_bytes,
            tag: format!("p{p}"),
            phase: SendPlan::phase_of(p, o.publishers, o.rate / o.publishers as f64),
            wall_clock: false,
        };
        let (acks, failures) = (acks.clone(), world.failures.clone());
        pub_handles.push((room, tokio::spawn(sender::run(conn, plan, acks, failures))));
    }
    let mut finals = Vec::new();
    let mut churners = Vec::new();
    for i in 0..o.clients {
        let room = i % o.rooms;
        let (tx, rx) = watch::channel(None);
        finals.push((room, tx));
        let c = Churner {
            target: world.target.clone(),
            token: world.tokens[i % world.tokens.len()].clone(),
            room: world.rooms[room].clone(),
            hold: o.hold,
            deadline,
            count: o.count.unwrap_or(u64::MAX),
            latency: latency.clone(),
            failures: world.failures.clone(),
        };
        churners.push(tokio::spawn(c.run(rx)));
    }
    let mut sent = SendStats::default();
    let mut final_seq = vec![0u64; o.rooms];
    for (room, h) in pub_handles {
        let st = h.await.map_err(|e| e.to_string())?;
        sent.acked += st.acked;
        final_seq[room] = final_seq[room].max(st.last_seq);
    }
    for (room, tx) in finals {
        let _ = tx.send(Some(final_seq[room]));
    }
    let mut t = ChurnStats::default();
    for h in churners {
        let s = h.await.map_err(|e| e.to_string())?;
        t.cycles += s.cycles;
        t.setup_failed += s.setup_failed;
        t.resumes_exact += s.resumes_exact;
        t.resumes_wrong += s.resumes_wrong;
        t.replayed += s.replayed;
        t.live += s.live;
        t.live_gaps += s.live_gaps;
        t.live_dups += s.live_dups;
        t.final_ok += s.final_ok;
        t.final_wrong += s.final_wrong;
    }
    let secs = o.duration.as_secs_f64().min(start.elapsed().as_secs_f64());
    Ok(format!(
        "{} cycles={} connects/s={:.0} setup_failed={} resumes_exact={}/{} replayed_msgs={} \
         live_msgs={} live_gaps={} live_dups={} final_resume_ok={}/{} published={} \
         connect_auth_resume[{}] verdict={} failures=[{}]",
        o.params(),
        t.cycles,
        t.cycles as f64 / secs,
        t.setup_failed,
        t.resumes_exact,
        t.resumes_exact + t.resumes_wrong,
        t.replayed,
        t.live,
        t.live_gaps,
        t.live_dups,
        t.final_ok,
        t.final_ok + t.final_wrong,
        sent.acked,
        latency.summary(),
        if t.resumes_wrong + t.live_gaps + t.live_dups + t.final_wrong + t.setup_failed == 0 {
            "ok"
        } else {
            "FAIL"
        },
        world.failures.summary(),
    ))
}

#[cfg(test)]
mod tests {
    use super::exact;

    #[test]
    fn exact_replay_means_contiguous_from_the_cursor() {
        assert!(exact(&[4, 5, 6], 3, 6));
        assert!(exact(&[], 6, 6));
        assert!(!exact(&[4, 6], 3, 6));
        assert!(!exact(&[4, 5, 5, 6], 3, 6));
        assert!(!exact(&[5, 6], 3, 6));
    }
}
