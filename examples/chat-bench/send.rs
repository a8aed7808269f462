//! `send`: C clients each keep W sends in flight and wait for the acks
//! (an ack means the message is durable); acks per second and ack latency.

use std::sync::Arc;
use std::time::Instant;

use crate::args::Opts;
use crate::conn::Conn;
use crate::hist::Histogram;
use crate::sender::{self, SendPlan, SendStats};
use crate::setup::World;

/// Runs the scenario (see the module docs).
pub async fn run(o: &Opts, world: &World) -> Result<String, String> {
    let mut conns = Vec::with_capacity(o.clients);
    for i in 0..o.clients {
        let mut c = Conn::connect(&world.target).await?;
        c.auth(&world.tokens[i % world.tokens.len()]).await?;
        conns.push(c);
    }
    let acks = Arc::new(Histogram::default());
    let start = Instant::now();
    let deadline = start + o.duration;
    let mut handles = Vec::with_capacity(o.clients);
    for (i, conn) in conns.into_iter().enumerate() {
        let plan = SendPlan {
            room: world.rooms[i % world.rooms.len()].clone(),
            window: o.window,
            rate: o.rate / o.clients as f64,
            count: o.count,
            deadline,
            body_bytes: o.body_bytes,
            tag: format!("c{i}"),
            phase: SendPlan::phase_of(i, o.clients, o.rate / o.clients as f64),
            wall_clock: false,
        };
        let (acks, failures) = (acks.clone(), world.failures.clone());
        handles.push(tokio::spawn(sender::run(conn, plan, acks, failures)));
    }
    let mut total = SendStats::default();
    for h in handles {
        let st = h.await.map_err(|e| e.to_string())?;
        total.sent += st.sent;
        total.acked += st.acked;
        total.errors += st.errors;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(format!(
        "{} sent={} acked={} errors={} acks/s={:.0} ack_latency[{}] lost_acks={} verdict={} failures=[{}]",
        o.params(),
        total.sent,
        total.acked,
        total.errors,
        total.acked as f64 / secs,
        acks.summary(),
        total.sent - total.acked - total.errors,
        if total.sent == total.acked { "ok" } else { "FAIL" },
        world.failures.summary(),
    ))
}
