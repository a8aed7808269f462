//! A [`chat_core::Bot`] over any OpenAI-compatible Chat Completions
//! endpoint (OpenAI, llama.cpp's server, vLLM, Ollama, ...), streaming.
//!
//! The bot sends the room's recent messages as context (its own messages as
//! `assistant`, everybody else's as `user` with `name: text`), bounded by
//! characters with the newest kept, after a configurable system prompt. It
//! answers questions, summarises ([`BotTask::Summarize`]) and suggests three
//! short replies ([`BotTask::SmartReplies`], one per line). Replies stream
//! as server-sent events and reach the room as deltas.
//!
//! # Example
//!
//! ```
//! use chat_core::{Bot, BotRequest, BotTask, Engine};
//! use chat_llm_openai::{OpenAiBot, OpenAiSettings};
//! use futures_util::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The key and base URL usually come from OPENAI_API_KEY / OPENAI_BASE_URL.
//! let settings = OpenAiSettings::from_env()
//!     .name("gpt")
//!     .api_key("sk-example")
//!     .system_prompt("You are the friendly helper of the #rust room.");
//! assert!(!format!("{settings:?}").contains("sk-example"), "Debug redacts the key");
//! let bot = OpenAiBot::new(settings)?;
//!
//! // Hosts register it with the engine...
//! let _engine = Engine::builder().bot(bot.clone()).build()?;
//!
//! // ...or call it directly. (An empty room has nothing to summarise, so
//! // this one is answered without contacting the endpoint.)
//! let ask = BotRequest::new("rust", "alice", BotTask::Summarize { count: 20 }, Vec::new());
//! let deltas: Vec<String> = bot.reply(ask).map(|d| d.unwrap()).collect().await;
//! assert_eq!(deltas.concat(), "There are no messages to summarise yet.");
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - [`settings`]: [`OpenAiSettings`], every knob and bound, and [`ApiKey`].
//! - [`OpenAiBot`]: limits, cache, retries and the streamed request.
//! - [`sse`]: the incremental server-sent events parser.
//! - [`Error`]: what can go wrong, mapped to [`chat_core::BotError`].
//!
//! # Failure handling
//!
//! - 429, 5xx and connection failures are retried with exponential backoff
//!   and jitter (or after the server's `Retry-After`, in seconds), only
//!   before any text was streamed, and only while the reply timeout leaves
//!   time for it.
//! - A stream that ends without `[DONE]` (or a finish reason), an error
//!   event, or a slow first token are errors; the engine then posts
//!   [`Bot::fallback`](chat_core::Bot::fallback), a short polite text.
//! - A per-user token bucket and a concurrency limit answer
//!   [`BotError::Busy`](chat_core::BotError::Busy) when exceeded.
//!
//! # Why a cache?
//!
//! Rooms ask the same things ("summarise", the same question twice). A
//! finished reply is kept for [`OpenAiSettings::cache_ttl`], keyed by the
//! SHA-256 of the exact request (model, sampling settings, prompt, context
//! and task), and streams back as word-sized deltas, so a cache hit looks
//! like any reply.
//!
//! # Secrets
//!
//! The API key travels only in the `Authorization` header. [`ApiKey`] has a
//! redacted `Debug` and no `Display`; server messages that echo the key are
//! scrubbed before they become errors or log lines.
//!
//! [`BotTask::Summarize`]: chat_core::BotTask::Summarize
//! [`BotTask::SmartReplies`]: chat_core::BotTask::SmartReplies
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod bot;
mod cache;
mod error;
mod prompt;
mod ratelimit;
mod retry;
pub mod settings;
pub mod sse;
mod stream;

pub use bot::{OpenAiBot, ReplyStream};
pub use error::Error;
pub use settings::{ApiKey, OpenAiSettings};
