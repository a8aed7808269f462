//! Test clients that drive the engine through its bounded queues, no sockets.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::time::Duration;

pub mod flaky;

use chat_core::{
    BotTask, ClientFrame, Codec, Connection, Cursor, Engine, ErrorCode, Limits, Message,
    OutboxReceiver, Recv, Request, ServerFrame,
};

pub fn limits() -> Limits {
    Limits::default()
        .fast_hashing_for_tests()
        .rate_burst(1_000_000)
        .rate_messages(1_000_000)
}

pub fn engine() -> Engine {
    Engine::builder().limits(limits()).build().unwrap()
}

pub struct Client {
    pub conn: Connection,
    pub rx: OutboxReceiver,
    next_id: u64,
    /// Frames received but not yet consumed by an expectation.
    pub backlog: std::collections::VecDeque<ServerFrame>,
}

impl Client {
    pub async fn connect(engine: &Engine) -> Client {
        let (conn, rx) = engine.open(engine.admit().await.unwrap());
        Client::hello(conn, rx).await
    }

    /// A client on `conn` and `rx`, once the server's `hello` is read.
    async fn hello(conn: Connection, rx: OutboxReceiver) -> Client {
        let mut c = Client {
            conn,
            rx,
            next_id: 1,
            backlog: Default::default(),
        };
        assert!(matches!(c.next().await, ServerFrame::Hello { .. }));
        c
    }

    /// A client whose outbound side is `session` (wrapping the queue `rx`
    /// reads), signed up as `name`.
    pub async fn signup_with(
        engine: &Engine,
        name: &str,
        session: std::sync::Arc<dyn chat_core::Session>,
        rx: OutboxReceiver,
    ) -> Client {
        let conn = engine.connect(session, engine.admit().await.unwrap());
        Client::hello(conn, rx).await.signed_up(name).await
    }

    pub async fn signup(engine: &Engine, name: &str) -> Client {
        Client::connect(engine).await.signed_up(name).await
    }

    /// This client, signed up as `name`.
    async fn signed_up(mut self, name: &str) -> Client {
        let r = self
            .call(ClientFrame::Signup {
                username: name.into(),
                password: "password123".into(),
            })
            .await;
        assert!(matches!(r, ServerFrame::Authed { .. }), "{r:?}");
        self
    }

    /// Sends a request and returns its reply (the frame echoing its id),
    /// keeping other frames in the backlog.
    pub async fn call(&mut self, frame: ClientFrame) -> ServerFrame {
        let id = self.next_id;
        self.next_id += 1;
        self.conn
            .handle(Request {
                id: Some(id),
                frame,
            })
            .await;
        self.reply_to(id).await
    }

    pub async fn reply_to(&mut self, id: u64) -> ServerFrame {
        let mut skipped = Vec::new();
        let found = loop {
            let f = self.recv().await;
            if frame_id(&f) == Some(id) {
                break f;
            }
            skipped.push(f);
        };
        // Put unrelated frames back in order.
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

    /// The next `message` frame, skipping other events.
    pub async fn next_message(&mut self) -> Message {
        loop {
            match self.next().await {
                ServerFrame::Message { message } => return message,
                ServerFrame::Closing { reason, .. } => panic!("closed: {reason}"),
                _ => {}
            }
        }
    }

    pub async fn create(&mut self, room: &str, kind: &str) {
        let r = self
            .call(ClientFrame::CreateRoom {
                room: room.into(),
                kind: kind.into(),
                topic: String::new(),
            })
            .await;
        assert!(matches!(r, ServerFrame::Room { .. }), "{r:?}");
    }

    pub async fn join(&mut self, room: &str) -> ServerFrame {
        self.call(ClientFrame::Join { room: room.into() }).await
    }

    pub async fn subscribe(&mut self, room: &str, last_seq: Option<u64>) -> ServerFrame {
        self.call(ClientFrame::Subscribe {
            rooms: vec![Cursor {
                room: room.into(),
                last_seq,
            }],
        })
        .await
    }

    pub async fn send(&mut self, room: &str, body: &str) -> ServerFrame {
        self.call(ClientFrame::Send {
            room: room.into(),
            body: body.into(),
            client_id: None,
        })
        .await
    }

    pub async fn ask(&mut self, room: &str, task: BotTask) -> ServerFrame {
        self.call(ClientFrame::Ask {
            room: room.into(),
            bot: None,
            task,
        })
        .await
    }
}

pub fn frame_id(f: &ServerFrame) -> Option<u64> {
    f.reply_id()
}

pub fn error_code(f: &ServerFrame) -> Option<ErrorCode> {
    match f {
        ServerFrame::Error { code, .. } => Some(*code),
        _ => None,
    }
}
