//! The bot against a scripted OpenAI-compatible server on 127.0.0.1:0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use chat_core::{Bot, BotError, BotRequest, BotTask, Message, MessageKind};
use chat_llm_openai::{OpenAiBot, OpenAiSettings};
use futures_util::StreamExt;
use support::{chunk, error_reply, pieces, sse_body, stream_reply, MockServer, Reply, Step};
use tokio::sync::Notify;
use tokio::time::Instant;

fn settings(server: &MockServer) -> OpenAiSettings {
    OpenAiSettings::default()
        .name("gpt")
        .base_url(server.base_url())
        .model("test-model")
        .api_key("sk-test-key")
        .backoff_base(Duration::from_millis(10))
        .backoff_max(Duration::from_millis(40))
        .first_token_timeout(Duration::from_secs(10))
        .reply_timeout(Duration::from_secs(20))
}

fn ask(asker: &str, prompt: &str) -> BotRequest {
    BotRequest::new(
        "lobby",
        asker,
        BotTask::Answer {
            prompt: prompt.into(),
        },
        Vec::new(),
    )
}

fn msg(seq: u64, sender: &str, body: &str) -> Message {
    Message {
        room: "lobby".into(),
        seq,
        sender: sender.into(),
        body: body.into(),
        ts: 0,
        kind: if sender == "gpt" {
            MessageKind::Bot
        } else {
            MessageKind::User
        },
        client_id: None,
        file: None,
    }
}

/// Every item of a reply: deltas, then at most one error.
async fn collect(bot: &OpenAiBot, req: BotRequest) -> (Vec<String>, Option<BotError>) {
    let mut deltas = Vec::new();
    let mut stream = bot.reply(req);
    while let Some(item) = stream.next().await {
        match item {
            Ok(d) => deltas.push(d),
            Err(e) => {
                assert!(stream.next().await.is_none(), "nothing after an error");
                return (deltas, Some(e));
            }
        }
    }
    (deltas, None)
}

#[tokio::test]
async fn sse_framing_split_across_reads_streams_the_deltas() {
    let body = sse_body(&["Hel", "lo, ", "wörld ✓"]);
    // 7-byte pieces split lines, `\n\n` pairs and UTF-8 characters.
    let reply = Reply::Stream {
        steps: pieces(&body, 7),
        complete: true,
        chunked: true,
    };
    let server = MockServer::start(vec![reply]).await;
    let bot = OpenAiBot::new(settings(&server)).unwrap();
    let context = vec![
        msg(1, "alice", "hi all"),
        msg(2, "gpt", "hello alice"),
        msg(3, "bob", "what is 2+2?"),
    ];
    let req = BotRequest::new(
        "lobby",
        "bob",
        BotTask::Answer {
            prompt: "what is 2+2?".into(),
        },
        context,
    );
    let (deltas, err) = collect(&bot, req).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(deltas, ["Hel", "lo, ", "wörld ✓"]);

    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/v1/chat/completions")
    );
    assert_eq!(r.header("authorization"), Some("Bearer sk-test-key"));
    assert_eq!(r.body["model"], "test-model");
    assert_eq!(r.body["stream"], true);
    let roles: Vec<_> = r.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(roles[0].0, "system");
    assert_eq!(
        roles[1..],
        [
            ("user", "alice: hi all"),
            ("assistant", "hello alice"),
            ("user", "bob: what is 2+2?")
        ]
    );
}

#[tokio::test]
async fn done_ends_the_reply_even_if_bytes_follow() {
    let mut body = sse_body(&["ok"]);
    body.extend_from_slice(b"data: {this is not json\n\n");
    let reply = Reply::Stream {
        steps: vec![Step::Send(body)],
        complete: true,
        chunked: true,
    };
    let server = MockServer::start(vec![reply]).await;
    let bot = OpenAiBot::new(settings(&server)).unwrap();
    let (deltas, err) = collect(&bot, ask("alice", "hi")).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(deltas.concat(), "ok");
}

#[tokio::test]
async fn error_bodies_are_backend_errors_and_not_retried() {
    let server = MockServer::start(vec![error_reply(
        404,
        "The model `test-model` does not exist",
    )])
    .await;
    let bot = OpenAiBot::new(settings(&server)).unwrap();
    let (deltas, err) = collect(&bot, ask("alice", "hi")).await;
    assert!(deltas.is_empty());
    let err = err.unwrap();
    assert!(matches!(err, BotError::Backend(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("404") && text.contains("does not exist"),
        "{text}"
    );
    assert_eq!(server.requests().len(), 1, "a 404 is not retried");
    assert!(!bot.fallback(&err).is_empty());
}

#[tokio::test]
async fn an_error_event_inside_the_stream_is_an_error() {
    let body = format!(
        "data: {}\n\ndata: {}\n\n",
        chunk("partial"),
        serde_json::json!({"error": {"message": "model overloaded", "type": "server_error"}})
    );
    let reply = Reply::Stream {
        steps: vec![Step::Send(body.into_bytes())],
        complete: true,
        chunked: true,
    };
    let server = MockServer::start(vec![reply]).await;
    let bot = OpenAiBot::new(settings(&server)).unwrap();
    let (deltas, err) = collect(&bot, ask("alice", "hi")).await;
    assert_eq!(deltas, ["partial"]);
    assert!(err.unwrap().to_string().contains("model overloaded"));
}

#[tokio::test]
async fn a_429_with_retry_after_is_retried_after_that_delay() {
    let busy = Reply::Status {
        status: 429,
        headers: vec![("Retry-After", "1".into())],
        body: r#"{"error":{"message":"rate limited"}}"#.into(),
    };
    let server = MockServer::start(vec![busy, stream_reply(&["after ", "waiting"])]).await;
    let bot = OpenAiBot::new(settings(&server)).unwrap();
    let started = Instant::now();
    let (deltas, err) = collect(&bot, ask("alice", "hi")).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(deltas.concat(), "after waiting");
    assert_eq!(server.requests().len(), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
}

#[tokio::test]
async fn a_retry_after_beyond_the_bound_is_not_waited_for() {
    let busy = Reply::Status {
        status: 429,
        headers: vec![("Retry-After", "3600".into())],
        body: String::new(),
    };
    let server = MockServer::start(vec![busy]).await;
    let bot = OpenAiBot::new(settings(&server)).unwrap();
    let (_, err) = collect(&bot, ask("alice", "hi")).await;
    assert!(err.unwrap().to_string().contains("429"));
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_up_to_the_limit() {
    let server = MockServer::start(vec![
        error_reply(503, "busy"),
        error_reply(502, "bad gateway"),
        stream_reply(&["third time"]),
    ])
    .await;
    let bot = OpenAiBot::new(settings(&server).max_retries(2)).unwrap();
    let (deltas, err) = collect(&bot, ask("alice", "hi")).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(deltas.concat(), "third time");
    assert_eq!(server.requests().len(), 3);

    let server = MockServer::start(vec![
        error_reply(500, "a"),
        error_reply(500, "b"),
        error_reply(500, "c"),
    ])
    .await;
    let bot = OpenAiBot::new(settings(&server).max_retries(2)).unwrap();
    let (_, err) = collect(&bot, ask("alice", "hi")).await;
    assert!(err.unwrap().to_string().contains("500"));
    assert_eq!(server.requests().len(), 3, "one try and two retries");
}

#[tokio::test]
async fn connection_failures_are_retried_with_backoff_then_fail() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let s = OpenAiSettings::default()
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .max_retries(2)
        .backoff_base(Duration::from_millis(200))
        .backoff_max(Duration::from_secs(1));
    let bot = OpenAiBot::new(s).unwrap();
    let started = Instant::now();
    let (_, err) = collect(&bot, ask("alice", "hi")).await;
    let err = err.unwrap();
    assert!(matches!(err, BotError::Backend(_)), "{err:?}");
    assert!(err.to_string().contains("cannot reach"), "{err}");
    // Two backoffs: at least 100 ms + 200 ms (half of each, with jitter).
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_stream_cut_off_midway_is_an_error_and_not_retried() {
    let cut = Reply::Stream {
        steps: vec![Step::Send(
            format!("data: {}\n\n", chunk("Hel")).into_bytes(),
        )],
        complete: false,
        chunked: true,
    };
    let server = MockServer::start(vec![cut]).await;
    let bot = OpenAiBot::new(settings(&server)).unwrap();
    let (deltas, err) = collect(&bot, ask("alice", "hi")).await;
    assert_eq!(deltas, ["Hel"]);
    assert!(err.is_some());
    assert_eq!(
        server.requests().len(),
        1,
        "no retry once text was streamed"
    );

    // A well-framed body that ends without `[DONE]` or a finish reason.
    let short = Reply::Stream {
        steps: vec![Step::Send(
            format!("data: {}\n\n", chunk("Hel")).into_bytes(),
        )],
        complete: true,
        chunked: false,
    };
    let server = MockServer::start(vec![short]).await;
    let bot = OpenAiBot::new(settings(&server)).unwrap();
    let (deltas, err) = collect(&bot, ask("alice", "hi")).await;
    assert_eq!(deltas, ["Hel"]);
    let err = err.unwrap();
    assert!(matches!(err, BotError::Protocol(_)), "{err:?}");
    assert!(err.to_string().contains("ended before"), "{err}");
}

#[tokio::test]
async fn a_slow_first_token_times_out() {
    let held_body = Reply::Stream {
        steps: vec![
            Step::Sleep(Duration::from_secs(30)),
            Step::Send(sse_body(&["late"])),
        ],
        complete: true,
        chunked: true,
    };
    let held_headers = Reply::Delayed(Duration::from_secs(30), Box::new(stream_reply(&["late"])));
    for reply in [held_body, held_headers] {
        let server = MockServer::start(vec![reply]).await;
        let s = settings(&server).first_token_timeout(Duration::from_millis(300));
        let bot = OpenAiBot::new(s).unwrap();
        let started = Instant::now();
        let (deltas, err) = collect(&bot, ask("alice", "hi")).await;
        assert!(deltas.is_empty());
        assert!(matches!(err, Some(BotError::Timeout)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(server.requests().len(), 1, "a timeout is not retried");
    }
}

#[tokio::test]
async fn the_whole_reply_is_bounded_in_time() {
    let mut steps = Vec::new();
    for _ in 0..200 {
        steps.push(Step::Send(
            format!("data: {}\n\n", chunk("tick ")).into_bytes(),
        ));
        steps.push(Step::Sleep(Duration::from_millis(20)));
    }
    let server = MockServer::start(vec![Reply::Stream {
        steps,
        complete: true,
        chunked: true,
    }])
    .await;
    let bot = OpenAiBot::new(settings(&server).reply_timeout(Duration::from_millis(500))).unwrap();
    let (deltas, err) = collect(&bot, ask("alice", "hi")).await;
    assert!(!deltas.is_empty());
    assert!(matches!(err, Some(BotError::Timeout)), "{err:?}");
}

#[tokio::test]
async fn identical_requests_are_answered_from_the_cache() {
    let server = MockServer::start(vec![
        stream_reply(&["The answer", " is 42."]),
        stream_reply(&["Other."]),
    ])
    .await;
    let bot = OpenAiBot::new(settings(&server)).unwrap();
    let (first, _) = collect(&bot, ask("alice", "meaning of life?")).await;
    let (second, err) = collect(&bot, ask("alice", "meaning of life?")).await;
    assert!(err.is_none());
    assert_eq!(first.concat(), "The answer is 42.");
    assert_eq!(second.concat(), first.concat());
    assert!(
        second.len() > 1,
        "a cached reply still streams as deltas: {second:?}"
    );
    assert_eq!(
        server.requests().len(),
        1,
        "the second reply came from the cache"
    );

    let (third, _) = collect(&bot, ask("alice", "something else?")).await;
    assert_eq!(third.concat(), "Other.");
    assert_eq!(server.requests().len(), 2);

    // A failed reply is not cached.
    let server = MockServer::start(vec![error_reply(400, "bad"), stream_reply(&["fine"])]).await;
    let bot = OpenAiBot::new(settings(&server)).unwrap();
    assert!(collect(&bot, ask("alice", "q")).await.1.is_some());
    assert_eq!(collect(&bot, ask("alice", "q")).await.0.concat(), "fine");
}

#[tokio::test]
async fn the_concurrency_limit_answers_busy() {
    let gate = Arc::new(Notify::new());
    let held = Reply::Stream {
        steps: vec![
            Step::Send(format!("data: {}\n\n", chunk("first ")).into_bytes()),
            Step::Wait(gate.clone()),
            Step::Send(sse_body(&["done"])),
        ],
        complete: true,
        chunked: true,
    };
    let server = MockServer::start(vec![held]).await;
    let s = settings(&server)
        .max_concurrency(1)
        .queue_timeout(Duration::from_millis(100));
    let bot = OpenAiBot::new(s).unwrap();

    let mut first = bot.reply(ask("alice", "one"));
    assert_eq!(first.next().await.unwrap().unwrap(), "first ");
    let (_, err) = collect(&bot, ask("bob", "two")).await;
    assert!(matches!(err, Some(BotError::Busy)), "{err:?}");
    assert!(bot.fallback(&err.unwrap()).contains("again"));

    gate.notify_one();
    let rest: Vec<String> = first.map(Result::unwrap).collect().await;
    assert_eq!(rest.concat(), "done");
    let (deltas, err) = collect(&bot, ask("bob", "three")).await;
    assert!(err.is_none(), "the slot is free again: {err:?}");
    assert_eq!(deltas.concat(), "default reply");
}

#[tokio::test]
async fn the_per_user_rate_limit_answers_busy() {
    let server = MockServer::start(Vec::new()).await;
    let s = settings(&server)
        .user_burst(2)
        .user_rate(1)
        .user_rate_interval(Duration::from_secs(3600))
        .cache_capacity(0);
    let bot = OpenAiBot::new(s).unwrap();
    for _ in 0..2 {
        assert!(collect(&bot, ask("alice", "q")).await.1.is_none());
    }
    let (_, err) = collect(&bot, ask("alice", "q")).await;
    assert!(matches!(err, Some(BotError::Busy)), "{err:?}");
    assert!(
        collect(&bot, ask("bob", "q")).await.1.is_none(),
        "bob has his own bucket"
    );
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn smart_replies_are_three_clean_lines() {
    let body = sse_body(&[
        "1. Sure",
        ", see you",
        " then!\n2) ",
        "No, sorry\n",
        "- Let me check\n4. extra",
    ]);
    let server = MockServer::start(vec![Reply::Stream {
        steps: pieces(&body, 5),
        complete: true,
        chunked: true,
    }])
    .await;
    let bot = OpenAiBot::new(settings(&server)).unwrap();
    let req = BotRequest::new(
        "lobby",
        "bob",
        BotTask::SmartReplies,
        vec![msg(1, "alice", "lunch at noon?")],
    );
    let (deltas, err) = collect(&bot, req).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(
        deltas.concat(),
        "Sure, see you then!\nNo, sorry\nLet me check"
    );
    let prompt = server.requests()[0].body["messages"][1]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        prompt.contains("alice: lunch at noon?") && prompt.contains("3 short replies"),
        "{prompt}"
    );
}

#[tokio::test]
async fn a_summary_sends_the_transcript() {
    let server = MockServer::start(vec![stream_reply(&["Alice asked about lunch."])]).await;
    let bot = OpenAiBot::new(settings(&server)).unwrap();
    let ctx = vec![msg(1, "alice", "lunch at noon?"), msg(2, "bob", "sure")];
    let req = BotRequest::new("lobby", "carol", BotTask::Summarize { count: 2 }, ctx);
    let (deltas, _) = collect(&bot, req).await;
    assert_eq!(deltas.concat(), "Alice asked about lunch.");
    let prompt = server.requests()[0].body["messages"][1]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(prompt.starts_with("Summarise") && prompt.contains("alice: lunch at noon?\nbob: sure"));
}

#[tokio::test]
async fn a_non_streamed_json_completion_is_accepted() {
    let body = serde_json::json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "Whole reply here."}, "finish_reason": "stop"}]});
    let server = MockServer::start(vec![Reply::Json(body.to_string())]).await;
    let bot = OpenAiBot::new(settings(&server)).unwrap();
    let (deltas, err) = collect(&bot, ask("alice", "hi")).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(deltas, ["Whole", " reply", " here."]);
}

#[tokio::test]
async fn a_reply_is_cut_at_max_reply_bytes_and_not_cached() {
    let deltas = ["0123456789"; 10];
    let server = MockServer::start(vec![stream_reply(&deltas), stream_reply(&deltas)]).await;
    let bot = OpenAiBot::new(settings(&server).max_reply_bytes(25)).unwrap();
    let (got, err) = collect(&bot, ask("alice", "count")).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got.len(), 3, "stops at the first delta past the bound");
    let (again, _) = collect(&bot, ask("alice", "count")).await;
    assert_eq!(again, got);
    assert_eq!(server.requests().len(), 2, "a cut reply is not cached");
}
