//! A sending connection: keeps up to `window` sends in flight, optionally
//! paced to a rate, and times every ack. Shared by `fanout` (publishers),
//! `send` (clients) and `churn` (background publishers).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_core::{ClientFrame, Request, ServerFrame};

use crate::conn::{make_body_at, now_us, wall_us, Conn, Incoming};
use crate::hist::Histogram;
use crate::setup::Failures;

/// What one sender does.
#[derive(Clone)]
pub struct SendPlan {
    pub room: String,
    pub window: usize,
    /// Messages per second for this connection; 0 = as fast as acks allow.
    pub rate: f64,
    pub count: Option<u64>,
    pub deadline: Instant,
    pub body_bytes: usize,
    /// Distinguishes this sender in bodies and client ids.
    pub tag: String,
    /// Paced senders start this much later, so that P senders at one rate
    /// spread their sends over the interval instead of sending in step.
    pub phase: Duration,
    /// Stamp bodies with the wall clock ([`wall_us`]) instead of this
    /// process' clock: for subscribers in other processes (`cluster`).
    pub wall_clock: bool,
}

impl SendPlan {
    /// The phase of sender `i` of `n` at `rate` messages/s each.
    pub fn phase_of(i: usize, n: usize, rate: f64) -> Duration {
        if rate > 0.0 && n > 0 {
            Duration::from_secs_f64(i as f64 / n as f64 / rate)
        } else {
            Duration::ZERO
        }
    }
}

/// What one sender did.
#[derive(Debug, Default, Clone, Copy)]
pub struct SendStats {
    pub sent: u64,
    pub acked: u64,
    pub errors: u64,
    /// Highest `seq` acknowledged.
    pub last_seq: u64,
}

/// Longest wait for outstanding acks once sending stops.
const ACK_DRAIN: Duration = Duration::from_secs(30);

/// Runs the plan on a logged-in connection, then closes it.
pub async fn run(
    mut conn: Conn,
    plan: SendPlan,
    acks: Arc<Histogram>,
    failures: Failures,
) -> SendStats {
    let mut st = SendStats::default();
    let mut inflight: VecDeque<(u64, u64)> = VecDeque::with_capacity(plan.window);
    let mut next_id = 100u64;
    if !plan.phase.is_zero() {
        tokio::time::sleep(plan.phase).await;
    }
    let start = Instant::now();
    let step = (plan.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / plan.rate));
    let limit = plan.count.unwrap_or(u64::MAX);
    let mut batch = Vec::with_capacity(plan.window);
    loop {
        let now = Instant::now();
        let sending = now < plan.deadline && st.sent < limit;
        if sending {
            let mut allowed = (plan.window - inflight.len()) as u64;
            if let Some(step) = step {
                let due = (now - start).as_secs_f64() / step.as_secs_f64();
                allowed = allowed.min((due as u64 + 1).saturating_sub(st.sent));
            }
            allowed = allowed.min(limit - st.sent);
            batch.clear();
            for _ in 0..allowed {
                let n = st.sent;
                let stamp = if plan.wall_clock { wall_us() } else { now_us() };
                batch.push(Request {
                    id: Some(next_id),
                    frame: ClientFrame::Send {
                        room: plan.room.clone(),
                        body: make_body_at(plan.body_bytes, &format!("{}n{n}", plan.tag), stamp),
                        client_id: Some(format!("{}-{n}", plan.tag)),
                    },
                });
                inflight.push_back((next_id, now_us()));
                next_id += 1;
                st.sent += 1;
            }
            if !batch.is_empty() {
                if let Err(e) = conn.send_many(&batch).await {
                    failures.add(e);
                    return st;
                }
            }
        } else if inflight.is_empty() {
            break;
        }
        let sending = Instant::now() < plan.deadline && st.sent < limit;
        let room_in_window = inflight.len() < plan.window;
        let wake = match step {
            _ if !sending => plan.deadline.max(Instant::now()) + ACK_DRAIN,
            Some(step) => (start + step.mul_f64(st.sent as f64)).min(plan.deadline),
            None => plan.deadline,
        };
        let wake = tokio::time::Instant::from_std(wake);
        tokio::select! {
            inc = conn.recv() => match inc {
                Incoming::Ack { id, seq } => {
                    if let Some(pos) = inflight.iter().position(|(i, _)| *i == id) {
                        let (_, t) = inflight.remove(pos).unwrap_or((id, now_us()));
                        acks.record(now_us().saturating_sub(t));
                        st.acked += 1;
                        st.last_seq = st.last_seq.max(seq);
                    }
                }
                Incoming::Other { id: Some(id), frame: ServerFrame::Error { code, .. } } => {
                    if let Some(pos) = inflight.iter().position(|(i, _)| *i == id) {
                        inflight.remove(pos);
                        st.errors += 1;
                        let code = serde_json::to_string(&code).unwrap_or_default();
                        failures.add(format!("send error:{}", code.trim_matches('"')));
                    }
                }
                Incoming::Closed(why) => {
                    failures.add(format!("sender {why}"));
                    return st;
                }
                _ => {}
            },
            _ = tokio::time::sleep_until(wake), if room_in_window || !sending => {
                if !sending && !inflight.is_empty() {
                    failures.add("sender: acks missing after drain");
                    break;
                }
            }
        }
    }
    conn.close().await;
    st
}
