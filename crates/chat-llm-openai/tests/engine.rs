//! The bot inside a chat-core engine: deltas reach the room and add up to
//! the stored reply; a failing endpoint gives the fallback (invariant 9).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use chat_core::BotTask;
use chat_llm_openai::{OpenAiBot, OpenAiSettings};
use support::{error_reply, pieces, sse_body, MockServer, Reply};

fn settings(server: &MockServer) -> OpenAiSettings {
    OpenAiSettings::default()
        .name("gpt")
        .base_url(server.base_url())
        .max_retries(1)
        .backoff_base(Duration::from_millis(10))
        .backoff_max(Duration::from_millis(20))
}

#[tokio::test]
async fn deltas_reach_the_room_and_add_up_to_the_stored_reply() {
    let body = sse_body(&["Rooms ", "are ", "created ", "with /create."]);
    let reply = Reply::Stream {
        steps: pieces(&body, 11),
        complete: true,
        chunked: true,
    };
    let server = MockServer::start(vec![reply]).await;
    let engine = support::chat::engine(OpenAiBot::new(settings(&server)).unwrap());
    let task = BotTask::Answer {
        prompt: "how do I make a room?".into(),
    };
    let asked = support::chat::ask(&engine, "gpt", task, Duration::from_secs(10)).await;
    assert!(!asked.fallback);
    assert_eq!(asked.deltas.len(), 4);
    assert_eq!(asked.deltas.concat(), asked.stored);
    assert_eq!(asked.stored, "Rooms are created with /create.");
}

#[tokio::test]
async fn a_failing_endpoint_gives_the_fallback() {
    let server = MockServer::start(vec![error_reply(500, "boom"), error_reply(500, "boom")]).await;
    let bot = OpenAiBot::new(settings(&server)).unwrap();
    let engine = support::chat::engine(bot);
    let task = BotTask::Answer {
        prompt: "hello?".into(),
    };
    let asked = support::chat::ask(&engine, "gpt", task, Duration::from_secs(10)).await;
    assert!(asked.fallback);
    assert!(asked.stored.starts_with("Sorry"), "{}", asked.stored);
    assert_eq!(server.requests().len(), 2, "one try and one retry");
}
