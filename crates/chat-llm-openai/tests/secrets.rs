//! The API key never shows in Debug output, errors, fallbacks or logs, even
//! when the server echoes it back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use chat_core::{Bot, BotRequest, BotTask};
use chat_llm_openai::{OpenAiBot, OpenAiSettings};
use futures_util::StreamExt;
use support::{chunk, error_reply, MockServer, Reply, Step};

const KEY: &str = "sk-live-SECRET-0123456789abcdef";

#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_key_never_leaks() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let echo_status = error_reply(401, &format!("Incorrect API key provided: {KEY}."));
    let echo_event = Reply::Stream {
        steps: vec![Step::Send(
            format!(
                "data: {}\n\ndata: {{\"error\":{{\"message\":\"quota of {KEY} exceeded\"}}}}\n\n",
                chunk("x")
            )
            .into_bytes(),
        )],
        complete: true,
        chunked: true,
    };
    let echo_garbage = Reply::Stream {
        steps: vec![Step::Send(format!("data: not json {KEY}\n\n").into_bytes())],
        complete: true,
        chunked: true,
    };
    let server = MockServer::start(vec![echo_status, echo_event, echo_garbage]).await;
    let settings = OpenAiSettings::default()
        .base_url(server.base_url())
        .api_key(KEY)
        .cache_capacity(0);
    assert!(!format!("{settings:?}{settings:#?}").contains(KEY));
    let bot = OpenAiBot::new(settings).unwrap();
    assert!(!format!("{bot:?}").contains(KEY));

    let mut shown = String::new();
    for prompt in ["a", "b", "c"] {
        let req = BotRequest::new(
            "lobby",
            "alice",
            BotTask::Answer {
                prompt: prompt.into(),
            },
            Vec::new(),
        );
        let items: Vec<_> = bot.reply(req).collect().await;
        let err = items
            .into_iter()
            .find_map(Result::err)
            .expect("each reply fails");
        shown.push_str(&format!("{err} {err:?} {}\n", bot.fallback(&err)));
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            shown.push_str(&format!("{s} {s:?}\n"));
            source = s.source();
        }
    }
    assert!(
        shown.contains("Incorrect API key provided: [redacted]"),
        "{shown}"
    );
    assert!(shown.contains("quota of [redacted] exceeded"), "{shown}");
    assert!(!shown.contains(KEY), "{shown}");

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(!logs.is_empty(), "logging was captured");
    assert!(!logs.contains(KEY), "{logs}");

    // The key did reach the server, in the header only.
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(
        reqs[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert!(!reqs[0].body.to_string().contains(KEY));
}
