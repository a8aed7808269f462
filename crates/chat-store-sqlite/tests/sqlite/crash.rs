//! Ack means durable: a child process appends from several tasks and prints
//! each ack; the test kills it with SIGKILL mid-stream, reopens the file and
//! finds every acknowledged message at its `seq`, with no gaps, and a retry
//! of each (same `client_id`) recognized as a duplicate.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use chat_core::{HistoryQuery, Store, StoreError};
use chat_store_sqlite::{SqliteSettings, SqliteStore};

use crate::support::{create_room, msg};

/// Set in the child's environment: the database it appends to.
const CHILD_DB: &str = "CHAT_STORE_SQLITE_CRASH_CHILD_DB";
const ROOMS: [&str; 2] = ["r0", "r1"];
const TASKS: usize = 8;
/// Bound on the child's work; it is killed long before.
const APPENDS_PER_TASK: usize = 20_000;
/// Acks to read before the kill.
const ACKS_BEFORE_KILL: usize = 500;

/// The child's side: does nothing unless started by
/// `acked_messages_survive_kill_9` with [`CHILD_DB`] set.
#[test]
fn crash_child_process() {
    let Ok(path) = std::env::var(CHILD_DB) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = SqliteStore::open_async(SqliteSettings::new(&path))
            .await
            .unwrap();
        for room in ROOMS {
            create_room(&store, room).await;
        }
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let room = ROOMS[t % ROOMS.len()];
                for i in 0..APPENDS_PER_TASK {
                    let body = format!("t{t}-{i}");
                    let mut m = msg(room, "child", &body);
                    m.client_id = Some(body.clone());
                    let acked = store.append(m).await.unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {room} {} {body}", acked.message.seq).unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn acked_messages_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash::crash_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("ACK ") && lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut acks = Vec::new();
    while acks.len() < ACKS_BEFORE_KILL {
        match lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => acks.push(line),
            Err(e) => {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "child stopped acking after {} acks ({e}): {}",
                    acks.len(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "the child ended by itself: {status:?}"
    );
    reader.join().unwrap();
    // Lines printed before the kill are acks too.
    acks.extend(lines.try_iter());

    let mut acked: HashMap<&str, HashMap<u64, &str>> = HashMap::new();
    for line in &acks {
        let mut parts = line.splitn(4, ' ').skip(1);
        let (room, seq, body) = (
            parts.next().unwrap(),
            parts.next().unwrap().parse::<u64>().unwrap(),
            parts.next().unwrap(),
        );
        let previous = acked.entry(room).or_default().insert(seq, body);
        assert_eq!(previous, None, "seq {seq} in {room} acked twice");
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = SqliteStore::open_async(SqliteSettings::new(&path))
            .await
            .unwrap();
        for room in ROOMS {
            let last = store.last_seq(room).await.unwrap();
            let stored = store
                .history(room, HistoryQuery::after(0, u32::try_from(last).unwrap()))
                .await
                .unwrap();
            let seqs: Vec<u64> = stored.iter().map(|m| m.seq).collect();
            assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "gaps in {room}");
            let by_seq: HashMap<u64, &str> =
                stored.iter().map(|m| (m.seq, m.body.as_str())).collect();
            let room_acks = acked.get(room).map(HashMap::len).unwrap_or(0);
            for (seq, body) in acked.get(room).into_iter().flatten() {
                assert_eq!(by_seq.get(seq), Some(body), "acked {room}/{seq} lost");
            }
            eprintln!("{room}: {room_acks} acked, {last} stored");
        }
        // The idempotency window was rebuilt from the file: every acked
        // message's retry is recognized.
        for (room, by_seq) in &acked {
            for (seq, body) in by_seq {
                let mut retry = msg(room, "child", body);
                retry.client_id = Some((*body).to_owned());
                let retry = store.append(retry).await.unwrap();
                assert!(retry.duplicate, "retry of {room}/{seq} stored again");
                assert_eq!(retry.message.seq, *seq);
            }
        }
        assert!(matches!(
            store.ping().await,
            Ok(()) | Err(StoreError::Closed)
        ));
    });
    assert!(acks.len() >= ACKS_BEFORE_KILL);
}
