//! A real model behind an OpenAI-compatible endpoint streams a reply
//! through the bot and the engine.
//!
//! The endpoint comes from `CHAT_LLM_TEST_BASE_URL` (model name from
//! `CHAT_LLM_TEST_MODEL`, default `smollm2`; `scripts/llm-server-setup.sh`
//! starts one and prints both), or from `OPENAI_BASE_URL` with
//! `OPENAI_API_KEY` (model from `OPENAI_MODEL`). Without either the test
//! fails when `CI` is set, and is skipped with a message otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use chat_core::BotTask;
use chat_llm_openai::{OpenAiBot, OpenAiSettings};

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn endpoint() -> Option<OpenAiSettings> {
    let base = OpenAiSettings::default()
        .name("gpt")
        .first_token_timeout(Duration::from_secs(120))
        .reply_timeout(Duration::from_secs(240))
        .max_tokens(Some(48))
        .temperature(Some(0.0));
    if let Some(url) = var("CHAT_LLM_TEST_BASE_URL") {
        let model = var("CHAT_LLM_TEST_MODEL").unwrap_or_else(|| "smollm2".to_owned());
        let s = base.base_url(url).model(model);
        return Some(match var("OPENAI_API_KEY") {
            Some(key) => s.api_key(key),
            None => s,
        });
    }
    match (var("OPENAI_BASE_URL"), var("OPENAI_API_KEY")) {
        (Some(_), Some(_)) => {
            let env = OpenAiSettings::from_env();
            Some(
                base.base_url(env.base_url)
                    .model(env.model)
                    .api_key(env.api_key.unwrap().expose()),
            )
        }
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_model_streams_a_reply() {
    let Some(settings) = endpoint() else {
        assert!(
            var("CI").is_none(),
            "CI is set but no model endpoint is: run `eval \"$(bash scripts/llm-server-setup.sh)\"` \
             first (sets CHAT_LLM_TEST_BASE_URL), or set OPENAI_BASE_URL and OPENAI_API_KEY"
        );
        eprintln!(
            "skipping the real-model test: set CHAT_LLM_TEST_BASE_URL (see scripts/llm-server-setup.sh) \
             or OPENAI_BASE_URL + OPENAI_API_KEY"
        );
        return;
    };
    let url = settings.base_url.clone();
    let engine = support::chat::engine(OpenAiBot::new(settings).unwrap());
    let started = Instant::now();
    let task = BotTask::Answer {
        prompt: "What is the capital of France? Answer in one sentence.".into(),
    };
    let asked = support::chat::ask(&engine, "gpt", task, Duration::from_secs(300)).await;
    eprintln!(
        "real model at {url}: {} deltas in {:?}: {:?}",
        asked.deltas.len(),
        started.elapsed(),
        asked.stored
    );
    assert!(!asked.fallback, "the bot failed: {}", asked.stored);
    assert!(!asked.stored.trim().is_empty());
    assert!(
        asked.deltas.len() > 1,
        "the reply was streamed: {:?}",
        asked.deltas
    );
    assert_eq!(asked.deltas.concat(), asked.stored);
}
