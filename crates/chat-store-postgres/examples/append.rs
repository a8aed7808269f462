//! Run with (a PostgreSQL server reachable at the URL; see
//! BENCHMARKS.md for a throw-away one):
//!   cargo run --release -p chat-store-postgres --example append -- postgres://postgres@127.0.0.1:54330/chat 20000 16 8
//!
//! Appends N messages with C concurrent writers spread over R rooms to a
//! fresh schema through one `PostgresStore`, every append committed with
//! `synchronous_commit` on, and prints appends per second and latency
//! percentiles. The schema is dropped afterwards.

use std::time::{Duration, Instant};

use chat_core::{MessageKind, NewMessage, RoomRecord, Store};
use chat_store_postgres::{PostgresSettings, PostgresStore};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/chat".into());
    let n: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20_000);
    let writers: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(16);
    let room_count: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(8);
    let schema = format!("bench_{}", std::process::id());
    let store = PostgresStore::open(
        PostgresSettings::new(&url)
            .schema(&schema)
            .pool_size(writers),
    )
    .await?;
    let rooms: Vec<String> = (0..room_count.max(1)).map(|i| format!("room{i}")).collect();
    for r in &rooms {
        let rec = RoomRecord {
            name: r.clone(),
            kind: "public".into(),
            topic: String::new(),
            created_by: "bench".into(),
            created_at: 0,
        };
        store.create_room(rec, &[]).await?;
    }
    let per = n / writers;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, rooms) = (store.clone(), rooms.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for i in 0..per {
                let m = NewMessage {
                    room: rooms[(w + i) % rooms.len()].clone(),
                    sender: format!("w{w}"),
                    body: "a chat message of a typical length, some forty to eighty bytes".into(),
                    kind: MessageKind::User,
                    // Every other append carries a client id (the transaction path).
                    client_id: (i % 2 == 0).then(|| format!("w{w}-{i}")),
                    ts: 1_700_000_000_000 + i as u64,
                    file: None,
                };
                let t = Instant::now();
                store.append(m).await?;
                lat.push(t.elapsed());
            }
            Ok::<_, chat_core::StoreError>(lat)
        }));
    }
    let mut lat: Vec<Duration> = Vec::with_capacity(n);
    for t in tasks {
        lat.extend(t.await??);
    }
    let elapsed = started.elapsed();
    lat.sort();
    let pct = |p: f64| {
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i].as_secs_f64() * 1e3
    };
    println!(
        "append {} messages, {writers} writers, {} rooms: {:.2} s, {:.0} appends/s; latency ms p50 {:.2}  p99 {:.2}  max {:.2}",
        lat.len(),
        rooms.len(),
        elapsed.as_secs_f64(),
        lat.len() as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    store.close();
    let (client, conn) = chat_store_postgres::tokio_postgres::connect(
        &url,
        chat_store_postgres::tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await?;
    Ok(())
}
