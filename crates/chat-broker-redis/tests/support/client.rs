//! A test client: one connection to an engine, read through its outbox, no
//! sockets (after chat-core's tests/support).

use std::collections::VecDeque;
use std::time::Duration;

use chat_core::{
    ClientFrame, Codec, Connection, Cursor, Engine, Limits, Message, OutboxReceiver, Recv, Request,
    ServerFrame,
};

/// Limits for tests: fast hashing, no practical rate limit.
pub fn limits() -> Limits {
    Limits::default()
        .fast_hashing_for_tests()
        .rate_burst(1_000_000)
        .rate_messages(1_000_000)
}

pub struct Client {
    pub conn: Connection,
    pub rx: OutboxReceiver,
    next_id: u64,
    /// Frames received but not yet consumed by an expectation.
    pub backlog: VecDeque<ServerFrame>,
}

impl Client {
    pub async fn connect(engine: &Engine) -> Client {
        let (conn, rx) = engine.open(engine.admit().await.unwrap());
        let mut c = Client {
            conn,
            rx,
            next_id: 1,
            backlog: VecDeque::new(),
        };
        assert!(matches!(c.next().await, ServerFrame::Hello { .. }));
        c
    }

    pub async fn signup(engine: &Engine, name: &str) -> Client {
        let mut c = Client::connect(engine).await;
        let r = c
            .call(ClientFrame::Signup {
                username: name.into(),
                password: "password123".into(),
            })
            .await;
        assert!(matches!(r, ServerFrame::Authed { .. }), "{r:?}");
        c
    }

    /// Sends a request and returns its reply, keeping other frames.
    pub async fn call(&mut self, frame: ClientFrame) -> ServerFrame {
        let id = self.next_id;
        self.next_id += 1;
        self.conn
            .handle(Request {
                id: Some(id),
                frame,
            })
            .await;
        let mut skipped = Vec::new();
        let found = loop {
            let f = self.recv().await;
            if frame_id(&f) == Some(id) {
                break f;
            }
            skipped.push(f);
        };
        for f in skipped.into_iter().rev() {
            self.backlog.push_front(f);
        }
        found
    }

    async fn recv(&mut self) -> ServerFrame {
        let mut buf = Vec::new();
        match tokio::time::timeout(Duration::from_secs(10), self.rx.recv_many(&mut buf, 1)).await {
            Ok(Recv::Frames) => Codec::decode_server(&buf[0]).unwrap(),
            Ok(Recv::Closed(reason)) => ServerFrame::Closing {
                reason,
                message: "closed".into(),
            },
            Err(_) => panic!("no frame within 10 s"),
        }
    }

    /// The next frame, from the backlog first.
    pub async fn next(&mut self) -> ServerFrame {
        match self.backlog.pop_front() {
            Some(f) => f,
            None => self.recv().await,
        }
    }

    /// The next `message` frame, skipping other events (10 s at most).
    pub async fn next_message(&mut self) -> Message {
        loop {
            match self.next().await {
                ServerFrame::Message { message } => return message,
                ServerFrame::Closing { reason, .. } => panic!("closed: {reason}"),
                _ => {}
            }
        }
    }

    /// The next `n` messages.
    pub async fn messages(&mut self, n: usize) -> Vec<Message> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.next_message().await);
        }
        out
    }

    pub async fn create(&mut self, room: &str) {
        let r = self
            .call(ClientFrame::CreateRoom {
                room: room.into(),
                kind: "public".into(),
                topic: String::new(),
            })
            .await;
        assert!(matches!(r, ServerFrame::Room { .. }), "{r:?}");
    }

    pub async fn join(&mut self, room: &str) {
        let r = self.call(ClientFrame::Join { room: room.into() }).await;
        assert!(matches!(r, ServerFrame::Room { .. }), "{r:?}");
    }

    pub async fn subscribe(&mut self, room: &str) {
        let r = self
            .call(ClientFrame::Subscribe {
                rooms: vec![Cursor {
                    room: room.into(),
                    last_seq: None,
                }],
            })
            .await;
        assert!(matches!(r, ServerFrame::Subscribed { .. }), "{r:?}");
    }

    /// Sends a message and returns its `seq` from the ack.
    pub async fn send(&mut self, room: &str, body: &str) -> u64 {
        let r = self
            .call(ClientFrame::Send {
                room: room.into(),
                body: body.into(),
                client_id: None,
            })
            .await;
        match r {
            ServerFrame::Ack { seq, .. } => seq,
            other => panic!("no ack: {other:?}"),
        }
    }
}

pub fn frame_id(f: &ServerFrame) -> Option<u64> {
    f.reply_id()
}
