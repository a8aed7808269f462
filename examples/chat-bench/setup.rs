//! What every scenario needs first: the target, a few accounts (argon2 is
//! slow, so their tokens are reused by many connections), rooms, and a
//! tally of failures by reason.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_core::{ClientFrame, ServerFrame};
use chat_transport_tcp::client::{Connector, Trust};

use crate::args::{Opts, TransportKind};
use crate::conn::{Conn, Target};

/// Failures counted by reason (`closing:lagged`, `connect: io: ...`).
#[derive(Default, Clone)]
pub struct Failures(Arc<Mutex<BTreeMap<String, u64>>>);

impl Failures {
    /// Counts one failure.
    pub fn add(&self, reason: impl Into<String>) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(reason.into()).or_insert(0) += 1;
    }

    /// Counts `n` failures of one reason.
    pub fn add_n(&self, reason: impl Into<String>, n: u64) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(reason.into()).or_insert(0) += n;
    }

    /// Every reason with its count.
    pub fn entries(&self) -> Vec<(String, u64)> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Total failures.
    pub fn total(&self) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum()
    }

    /// `reason×count, ...` (or `none`).
    pub fn summary(&self) -> String {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if m.is_empty() {
            return "none".to_owned();
        }
        m.iter()
            .map(|(k, v)| format!("{k}×{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Accounts and rooms made for this run.
pub struct World {
    pub target: Target,
    /// Session tokens, one per account; account 0 created (and so may post
    /// to) every room, and every other account joined them all.
    pub tokens: Vec<String>,
    pub rooms: Vec<String>,
    pub failures: Failures,
}

/// A short id making this run's names unique on a long-lived server.
fn run_id() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
        % 36u128.pow(6);
    let mut n = n as u64;
    let mut s = String::new();
    for _ in 0..6 {
        let d = (n % 36) as u32;
        s.push(std::char::from_digit(d, 36).unwrap_or('x'));
        n /= 36;
    }
    s
}

/// Builds the target from the options and the (spawned) server's addresses.
pub fn target(
    o: &Opts,
    http: Option<&str>,
    tcp: Option<&str>,
    fp: Option<&str>,
) -> Result<Target, String> {
    let trust = || match (fp, o.insecure) {
        (Some(fp), _) => Ok(Trust::Fingerprint(
            fp.parse()
                .map_err(|e| format!("bad fingerprint {fp:?}: {e}"))?,
        )),
        (None, true) => Ok(Trust::Insecure),
        (None, false) => Err("TLS needs --fingerprint or --insecure".to_owned()),
    };
    match o.transport {
        TransportKind::Ws => Ok(Target::ws(http.ok_or("no HTTP address")?)),
        TransportKind::Wss => {
            let config = chat_transport_tcp::client::client_config(&trust()?)
                .map_err(|e| format!("TLS setup: {e}"))?;
            Ok(Target::wss(http.ok_or("no HTTP address")?, config))
        }
        TransportKind::Tcp => {
            let connector = Connector::new(&trust()?).map_err(|e| format!("TLS setup: {e}"))?;
            Ok(Target::Tcp {
                addr: tcp.ok_or("no TCP address")?.to_owned(),
                connector,
            })
        }
    }
}

async fn signup(target: &Target, name: &str) -> Result<(Conn, String), String> {
    let mut c = Conn::connect(target).await?;
    let reply = c
        .request(
            1,
            ClientFrame::Signup {
                username: name.to_owned(),
                password: "bench password".to_owned(),
            },
        )
        .await
        .map_err(|e| format!("signup {name}: {e}"))?;
    match reply {
        ServerFrame::Authed { token, .. } => Ok((c, token)),
        other => Err(format!("signup {name}: unexpected {other:?}")),
    }
}

/// Signs up `users` accounts and makes `rooms` public rooms.
pub async fn world(target: Target, users: usize, rooms: usize) -> Result<World, String> {
    let id = run_id();
    let room_names: Vec<String> = (0..rooms).map(|i| format!("b{id}r{i}")).collect();
    let (mut owner, owner_token) = signup(&target, &format!("b{id}u0")).await?;
    for (i, room) in room_names.iter().enumerate() {
        owner
            .request(
                10 + i as u64,
                ClientFrame::CreateRoom {
                    room: room.clone(),
                    kind: "public".to_owned(),
                    topic: "chat-bench".to_owned(),
                },
            )
            .await
            .map_err(|e| format!("create_room {room}: {e}"))?;
    }
    owner.close().await;
    let mut tasks = Vec::new();
    for u in 1..users {
        let target = target.clone();
        let name = format!("b{id}u{u}");
        let room_names = room_names.clone();
        tasks.push(tokio::spawn(async move {
            let (mut c, token) = signup(&target, &name).await?;
            for (i, room) in room_names.iter().enumerate() {
                c.request(10 + i as u64, ClientFrame::Join { room: room.clone() })
                    .await
                    .map_err(|e| format!("join {room}: {e}"))?;
            }
            c.close().await;
            Ok::<_, String>(token)
        }));
    }
    let mut tokens = vec![owner_token];
    for t in tasks {
        tokens.push(t.await.map_err(|e| e.to_string())??);
    }
    Ok(World {
        target,
        tokens,
        rooms: room_names,
        failures: Failures::default(),
    })
}

/// Connects, logs in with `token` and subscribes to `room` from
/// `last_seq`, within `timeout`.
pub async fn subscriber(
    target: &Target,
    token: &str,
    room: &str,
    last_seq: Option<u64>,
    timeout: Duration,
) -> Result<(Conn, Vec<u64>, u64), String> {
    let go = async {
        let mut c = Conn::connect(target).await?;
        c.auth(token).await?;
        let (replayed, last) = c.subscribe(room, last_seq).await?;
        Ok((c, replayed, last))
    };
    tokio::time::timeout(timeout, go)
        .await
        .map_err(|_| "setup timeout".to_owned())?
}
