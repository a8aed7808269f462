use futures_util::StreamExt;

use super::*;
use crate::protocol::{Message, MessageKind};

fn msg(seq: u64, sender: &str, body: &str) -> Message {
    Message {
        room: "lobby".into(),
        seq,
        sender: sender.into(),
        body: body.into(),
        ts: 0,
        kind: if sender == "helper" {
            MessageKind::Bot
        } else {
            MessageKind::User
        },
        client_id: None,
        file: None,
    }
}

fn ask(prompt: &str) -> String {
    let req = BotRequest::new(
        "lobby",
        "alice",
        BotTask::Answer {
            prompt: prompt.into(),
        },
        Vec::new(),
    );
    OfflineBot::default().respond(&req)
}

/// The question of the best entry for `query`, and its score.
fn best(query: &str) -> (String, f64) {
    let kb = KnowledgeBase::bundled();
    let hit = kb
        .search(query, 1)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no hit for {query:?}"));
    (hit.entry.question.clone(), hit.relevance)
}

#[test]
fn paraphrased_questions_find_the_right_entry() {
    let cases = [
        (
            "how can I make a channel nobody else can see",
            "How do I make a private room?",
        ),
        (
            "what's the way to start a new chatroom",
            "How do I create a room?",
        ),
        (
            "I want to send a private message to one person",
            "How do I send a direct message?",
        ),
        (
            "where can I see older messages in the channel",
            "How do I read older messages?",
        ),
        (
            "my token expired, how long are tokens valid?",
            "How long does a token last?",
        ),
        (
            "am I sending messages too quickly? rate limits",
            "Is there a rate limit?",
        ),
        (
            "kick a user out of my room",
            "How do I remove someone from a room?",
        ),
        ("can I attach a picture", "Can I send files or images?"),
        (
            "promote bob to moderator",
            "How do I make someone an admin?",
        ),
        (
            "I got disconnected, did I miss messages?",
            "What happens if I lose my connection?",
        ),
        ("register an account", "How do I create an account?"),
        (
            "give me a recap of the conversation",
            "How do I get a summary of a room?",
        ),
        (
            "hey, could you please tell me how I can leave this room? thanks a lot",
            "How do I leave a room?",
        ),
        (
            "is my password stored safely",
            "What are the rules for passwords?",
        ),
        ("how do I log out", "How do I log out?"),
        ("what does lagged mean", "Why was I disconnected?"),
        (
            "can I undo a message I sent",
            "Can I edit or delete a message?",
        ),
        (
            "what does the error forbidden mean",
            "What do error codes mean?",
        ),
        ("what are smart replies", "What are smart replies?"),
    ];
    for (query, expected) in cases {
        let (question, score) = best(query);
        assert_eq!(question, expected, "query {query:?} (score {score:.2})");
        assert!(
            score >= DEFAULT_MIN_RELEVANCE,
            "query {query:?} scored only {score:.2}"
        );
    }
}

#[test]
fn below_the_threshold_the_bot_says_it_does_not_know() {
    let unrelated = [
        "what's the weather in Paris tomorrow?",
        "recommend a good pizza place",
        "who won the football match",
        "what is the meaning of life",
        "tell me a joke",
        "how do I cook pasta",
        "can you review my change?",
        "what time is it",
        "what's new in the room today",
        "how much does a server cost",
        "can you write me a poem about rooms",
        "open the pod bay doors",
        "how fast is the server",
    ];
    for q in unrelated {
        let reply = ask(q);
        assert!(reply.starts_with("I don't know"), "{q}: {reply}");
        assert!(reply.contains("`topics`"), "{reply}");
    }
    // Everything is below an impossible threshold.
    let bot = OfflineBot::new(OfflineSettings::default().min_relevance(1e9)).unwrap();
    let req = BotRequest::new(
        "lobby",
        "alice",
        BotTask::Answer {
            prompt: "how do I create a room?".into(),
        },
        Vec::new(),
    );
    let reply = bot.respond(&req);
    assert!(reply.starts_with("I don't know"), "{reply}");
    assert!(
        reply.contains("Did you mean \"How do I create a room?\""),
        "{reply}"
    );
}

#[test]
fn a_good_question_gets_its_answer() {
    let reply = ask("@helper how do I make a private room?");
    assert!(
        reply.starts_with("Create the room with kind `private`"),
        "{reply}"
    );
}

#[test]
fn help_and_commands_work() {
    for prompt in ["help", "@helper help", "/help", "helper: help", "!commands"] {
        let reply = ask(prompt);
        assert!(reply.starts_with("I'm helper"), "{prompt}: {reply}");
        assert!(
            reply.contains("`topics`") && reply.contains("`summary`"),
            "{reply}"
        );
    }
    let about = ask("about");
    assert!(
        about.contains(&format!("{} questions", KnowledgeBase::bundled().len())),
        "{about}"
    );
    assert_eq!(ask("/ping"), "pong");
    let topics = ask("topics");
    assert_eq!(topics.lines().count(), KnowledgeBase::bundled().len() + 1);
    assert!(ask("hello").starts_with("Hello alice!"));
    assert_eq!(ask("thanks!"), "You're welcome, alice!");
    // A sentence starting with a command word is a question, not a command.
    assert!(!ask("help me create a room").starts_with("I'm helper"));
}

#[test]
fn summary_mentions_the_participants_and_is_shorter() {
    let conv: Vec<Message> = [
        (
            "alice",
            "We need to pick a date for the team offsite. I suggest the second week of June.",
        ),
        (
            "bob",
            "June works for me, but the second week clashes with the product launch.",
        ),
        (
            "carol",
            "What about the first week of June? The launch is done by then.",
        ),
        (
            "alice",
            "First week of June is fine with me. Let's book the venue for the offsite.",
        ),
        (
            "bob",
            "Agreed, first week of June. I'll ask finance about the offsite budget.",
        ),
        (
            "carol",
            "Great, I'll send the calendar invite for the offsite.",
        ),
    ]
    .iter()
    .enumerate()
    .map(|(i, (s, b))| msg(i as u64 + 1, s, b))
    .collect();
    let bot = OfflineBot::default();
    let req = BotRequest::new(
        "lobby",
        "dave",
        BotTask::Summarize { count: 6 },
        conv.clone(),
    );
    let summary = bot.respond(&req);
    let input: usize = conv.iter().map(|m| m.sender.len() + 2 + m.body.len()).sum();
    assert!(
        summary.len() < input,
        "{} >= {input}\n{summary}",
        summary.len()
    );
    for who in ["alice (2)", "bob (2)", "carol (2)"] {
        assert!(summary.contains(who), "{summary}");
    }
    assert!(
        summary.contains("offsite") && summary.contains("june"),
        "{summary}"
    );

    // `summary` as a command summarises the context before the request.
    let mut ctx = conv;
    ctx.push(msg(7, "dave", "@helper summary"));
    let req = BotRequest::new(
        "lobby",
        "dave",
        BotTask::Answer {
            prompt: "@helper summary".into(),
        },
        ctx,
    );
    let s2 = bot.respond(&req);
    assert!(s2.starts_with("Summary of 6 messages"), "{s2}");
}

#[test]
fn smart_replies_are_three_lines() {
    let bot = OfflineBot::default();
    for last in [
        "Can you review my change?",
        "thanks for the review!",
        "hello",
        "The server is down",
        "ok",
    ] {
        let ctx = vec![msg(1, "bob", "earlier"), msg(2, "alice", last)];
        let req = BotRequest::new("lobby", "bob", BotTask::SmartReplies, ctx);
        let text = bot.respond(&req);
        assert_eq!(text.lines().count(), 3, "{last}: {text}");
        assert!(
            text.lines().all(|l| !l.trim().is_empty() && l.len() <= 130),
            "{text}"
        );
    }
}

#[tokio::test]
async fn replies_stream_in_word_deltas() {
    let bot = OfflineBot::default();
    let req = BotRequest::new(
        "lobby",
        "alice",
        BotTask::Answer {
            prompt: "help".into(),
        },
        Vec::new(),
    );
    let whole = bot.respond(&req);
    let deltas: Vec<String> = bot.reply(req).map(Result::unwrap).collect().await;
    assert!(deltas.len() > 10);
    assert_eq!(deltas.concat(), whole);
}

/// Writes `contents` to `name` in `dir` (a temporary folder the test
/// holds, removed with it).
fn temp_file(dir: &tempfile::TempDir, name: &str, contents: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn a_custom_knowledge_file_loads_and_a_broken_one_errors() {
    let dir = tempfile::tempdir().unwrap();
    let md = temp_file(
        &dir,
        "kb.md",
        "# Pizza bot\n\n## When is the pizzeria open?\nAlso: opening hours\nEvery day from noon to 11pm.\n\n\
         ## Do you deliver?\nYes, within 5 km.\n\n## Do you have vegan pizza?\nYes: the Verde, with cashew cheese.\n",
    );
    let bot =
        OfflineBot::new(OfflineSettings::default().name("pizza").knowledge_path(&md)).unwrap();
    assert_eq!(bot.name(), "pizza");
    assert_eq!(bot.knowledge().len(), 3);
    let req = BotRequest::new(
        "r",
        "alice",
        BotTask::Answer {
            prompt: "what are your opening hours?".into(),
        },
        Vec::new(),
    );
    assert_eq!(bot.respond(&req), "Every day from noon to 11pm.");

    let req = BotRequest::new(
        "r",
        "alice",
        BotTask::Answer {
            prompt: "how do I renew my passport?".into(),
        },
        Vec::new(),
    );
    assert!(bot.respond(&req).starts_with("I don't know"));

    let json = temp_file(
        &dir,
        "kb.json",
        r#"[{"question": "Do you deliver?", "answer": "Yes, within 5 km.", "also": ["home delivery"]},
            {"question": "When is the pizzeria open?", "answer": "Every day from noon to 11pm."}]"#,
    );
    let bot = OfflineBot::new(OfflineSettings::default().knowledge_path(&json)).unwrap();
    let req = BotRequest::new(
        "r",
        "alice",
        BotTask::Answer {
            prompt: "is there home delivery to my street?".into(),
        },
        Vec::new(),
    );
    assert_eq!(bot.respond(&req), "Yes, within 5 km.");

    let broken = temp_file(
        &dir,
        "broken.md",
        "## A question without an answer?\n\n## Another?\n",
    );
    let err = OfflineBot::new(OfflineSettings::default().knowledge_path(&broken)).unwrap_err();
    assert!(
        matches!(
            err,
            OfflineError::Knowledge(KnowledgeError::Markdown { line: 1, .. })
        ),
        "{err}"
    );
    let broken = temp_file(&dir, "broken.json", r#"{"question": "not an array"}"#);
    let err = OfflineBot::new(OfflineSettings::default().knowledge_path(&broken)).unwrap_err();
    assert!(
        matches!(err, OfflineError::Knowledge(KnowledgeError::Json { .. })),
        "{err}"
    );
    let missing = md.with_file_name("missing.md");
    let err = OfflineBot::new(OfflineSettings::default().knowledge_path(&missing)).unwrap_err();
    assert!(
        matches!(err, OfflineError::Knowledge(KnowledgeError::Io { .. })),
        "{err}"
    );
    assert!(OfflineBot::new(OfflineSettings::default().name("Bad Name")).is_err());
}

#[test]
fn errors_are_send_sync_static() {
    fn assert_error<E: std::error::Error + Send + Sync + 'static>() {}
    assert_error::<OfflineError>();
    assert_error::<KnowledgeError>();
}

#[tokio::test]
async fn the_engine_streams_and_stores_the_offline_reply() {
    use crate::protocol::{ClientFrame, Cursor, Request, ServerFrame};
    use crate::{Codec, Engine, Limits, Recv};

    let engine = Engine::builder()
        .limits(Limits::default().fast_hashing_for_tests())
        .bot(OfflineBot::default())
        .build()
        .unwrap();
    let (mut conn, mut rx) = engine.open(engine.admit().await.unwrap());
    let req = |frame| Request { id: None, frame };
    conn.handle(req(ClientFrame::Signup {
        username: "alice".into(),
        password: "correct horse".into(),
    }))
    .await;
    conn.handle(req(ClientFrame::CreateRoom {
        room: "lobby".into(),
        kind: "public".into(),
        topic: String::new(),
    }))
    .await;
    conn.handle(req(ClientFrame::Subscribe {
        rooms: vec![Cursor {
            room: "lobby".into(),
            last_seq: Some(0),
        }],
    }))
    .await;
    let task = BotTask::Answer {
        prompt: "how do I leave a room?".into(),
    };
    conn.handle(req(ClientFrame::Ask {
        room: "lobby".into(),
        bot: None,
        task,
    }))
    .await;

    let (mut deltas, mut stored, mut done) = (String::new(), None, false);
    let mut buf = Vec::new();
    while !(done && stored.is_some()) {
        buf.clear();
        let got = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            rx.recv_many(&mut buf, 64),
        )
        .await;
        assert_eq!(got.expect("the reply arrives"), Recv::Frames);
        for bytes in &buf {
            match Codec::decode_server(bytes).unwrap() {
                ServerFrame::BotDelta { delta, .. } => deltas.push_str(&delta),
                ServerFrame::BotDone { fallback, .. } => {
                    assert!(!fallback);
                    done = true;
                }
                ServerFrame::Message { message } if message.sender == "helper" => {
                    stored = Some(message.body)
                }
                _ => {}
            }
        }
    }
    let stored = stored.unwrap();
    assert!(stored.starts_with("Send `leave`"), "{stored}");
    assert_eq!(deltas, stored);
}
