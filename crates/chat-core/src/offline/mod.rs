//! The built-in offline bot, [`OfflineBot`]: useful with no API key and no
//! network. It answers questions about the chat server from a knowledge
//! file ([`KnowledgeBase`], ranked by BM25), knows a few commands (`help`,
//! `about`, `topics`, `summary`, `ping`), summarises a room extractively and
//! suggests short replies. Replies stream in word-sized deltas.
//!
//! ```
//! use chat_core::{Bot, BotRequest, BotTask};
//! use chat_core::offline::{OfflineBot, OfflineSettings};
//! use futures_util::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bot = OfflineBot::new(OfflineSettings::default())?;
//! assert_eq!(bot.name(), "helper");
//! let ask = BotRequest::new("lobby", "alice", BotTask::Answer { prompt: "how can I make a channel nobody else can see?".into() }, Vec::new());
//! let deltas: Vec<String> = bot.reply(ask).map(|d| d.unwrap()).collect().await;
//! assert!(deltas.len() > 1, "streamed word by word");
//! assert!(deltas.concat().contains("kind `private`"));
//! # Ok(())
//! # }
//! ```
//!
//! # Why rules and not a model?
//!
//! The engine must be useful out of the box, on any machine, with answers
//! that are right about this server. A small ranked knowledge base gives
//! exact answers, costs microseconds, and says "I don't know" instead of
//! inventing; hosts that want a language model add
//! `chat-llm-openai`'s bot beside this one.

mod knowledge;
mod suggest;
mod summary;
mod text;

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::stream::{self, StreamExt};

pub use knowledge::{
    Entry, Hit, KnowledgeBase, KnowledgeError, B, BUNDLED_KNOWLEDGE, K1, MAX_KNOWLEDGE_BYTES,
    QUESTION_WEIGHT, UNKNOWN_WEIGHT,
};
pub use suggest::{MAX_SUGGESTION_CHARS, SUGGESTIONS};
pub use summary::{MAX_QUOTE_CHARS, MAX_TOPICS};

use crate::bot::{Bot, BotRequest, BotStream};
use crate::protocol::BotTask;

/// Default [`OfflineSettings::min_relevance`]: below it the bot says it does
/// not know. Calibrated on the bundled file: paraphrases of its questions
/// reach 1.1-2.3 ([`Hit::relevance`]), unrelated questions that share a
/// word with some entry stay at 1.0 or below.
pub const DEFAULT_MIN_RELEVANCE: f64 = 1.05;
const THANKS: &[&str] = &["thanks", "thank", "thx", "cheers", "ty"];
const GREETINGS: &[&str] = &[
    "hi", "hello", "hey", "hiya", "morning", "evening", "howdy", "yo",
];
const SMALL_TALK: &[&str] = &[
    "lot", "much", "again", "good", "great", "there", "everyone", "all", "folks", "guys",
];

/// Longest question searched, in characters; the rest is ignored.
pub const MAX_QUERY_CHARS: usize = 1_000;

/// Settings of the [`OfflineBot`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OfflineSettings {
    /// The bot's user name. Default `helper`.
    pub name: String,
    /// A knowledge file to use instead of the bundled one (Markdown, or
    /// JSON when it ends in `.json`; see [`KnowledgeBase`]). Default none.
    pub knowledge_path: Option<PathBuf>,
    /// Lowest [`Hit::relevance`] (normalised BM25 score) of an answer;
    /// below it the bot says it does not know. Default
    /// [`DEFAULT_MIN_RELEVANCE`].
    pub min_relevance: f64,
    /// Most sentences quoted in a summary. Default 3.
    pub summary_points: usize,
}

impl Default for OfflineSettings {
    fn default() -> Self {
        OfflineSettings {
            name: "helper".to_owned(),
            knowledge_path: None,
            min_relevance: DEFAULT_MIN_RELEVANCE,
            summary_points: 3,
        }
    }
}

impl OfflineSettings {
    /// Sets [`OfflineSettings::name`].
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets [`OfflineSettings::knowledge_path`].
    #[must_use]
    pub fn knowledge_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.knowledge_path = Some(path.into());
        self
    }

    /// Sets [`OfflineSettings::min_relevance`].
    #[must_use]
    pub fn min_relevance(mut self, score: f64) -> Self {
        self.min_relevance = score;
        self
    }

    /// Sets [`OfflineSettings::summary_points`].
    #[must_use]
    pub fn summary_points(mut self, n: usize) -> Self {
        self.summary_points = n;
        self
    }
}

/// Why an [`OfflineBot`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OfflineError {
    /// The bot name is not a valid user name.
    #[error("invalid bot name {0:?}: 1-32 of a-z 0-9 _ . -")]
    InvalidName(String),
    /// A setting is out of range.
    #[error("invalid setting {name}: {reason}")]
    InvalidSetting {
        /// Setting name.
        name: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The knowledge file could not be loaded.
    #[error(transparent)]
    Knowledge(#[from] KnowledgeError),
}

/// The built-in offline bot. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct OfflineBot {
    name: String,
    kb: Arc<KnowledgeBase>,
    min_relevance: f64,
    summary_points: usize,
}

impl Default for OfflineBot {
    /// `helper`, with the bundled knowledge.
    fn default() -> Self {
        let s = OfflineSettings::default();
        OfflineBot {
            name: s.name,
            kb: Arc::new(KnowledgeBase::bundled()),
            min_relevance: s.min_relevance,
            summary_points: s.summary_points,
        }
    }
}

impl OfflineBot {
    /// A bot with these settings; loads `knowledge_path` if set (a blocking
    /// file read: build bots at startup).
    pub fn new(settings: OfflineSettings) -> Result<Self, OfflineError> {
        let kb = match &settings.knowledge_path {
            Some(path) => KnowledgeBase::load(path)?,
            None => KnowledgeBase::bundled(),
        };
        OfflineBot::with_knowledge(settings, kb)
    }

    /// A bot answering from `kb` (`knowledge_path` is ignored).
    pub fn with_knowledge(
        settings: OfflineSettings,
        kb: KnowledgeBase,
    ) -> Result<Self, OfflineError> {
        if crate::auth::normalize_username(&settings.name)
            .ok()
            .as_deref()
            != Some(settings.name.as_str())
        {
            return Err(OfflineError::InvalidName(settings.name));
        }
        if !settings.min_relevance.is_finite() || settings.min_relevance < 0.0 {
            return Err(OfflineError::InvalidSetting {
                name: "min_relevance",
                reason: "a finite number >= 0",
            });
        }
        if settings.summary_points == 0 {
            return Err(OfflineError::InvalidSetting {
                name: "summary_points",
                reason: "at least 1",
            });
        }
        Ok(OfflineBot {
            name: settings.name,
            kb: Arc::new(kb),
            min_relevance: settings.min_relevance,
            summary_points: settings.summary_points,
        })
    }

    /// The knowledge the bot answers from.
    pub fn knowledge(&self) -> &KnowledgeBase {
        &self.kb
    }

    /// The whole reply to `request` (what [`Bot::reply`] streams).
    pub fn respond(&self, request: &BotRequest) -> String {
        match &request.task {
            BotTask::Answer { prompt } => self.answer(prompt, request),
            BotTask::Summarize { .. } => summary::summarize(&request.context, self.summary_points),
            BotTask::SmartReplies => suggest::smart_replies(
                &request.context,
                &request.asker,
                &self.kb,
                self.min_relevance,
            )
            .join("\n"),
        }
    }

    /// The prompt without mentions of the bot, and without a leading
    /// `/`, `!` or `name:`.
    fn clean_prompt(&self, prompt: &str) -> (String, bool) {
        let mut p = prompt.trim();
        for prefix in [format!("@{}", self.name), self.name.clone()] {
            if p.len() >= prefix.len()
                && p.is_char_boundary(prefix.len())
                && p[..prefix.len()].eq_ignore_ascii_case(&prefix)
            {
                let rest = &p[prefix.len()..];
                if rest.is_empty() || rest.starts_with([' ', ',', ':', '!', '?']) {
                    p = rest.trim_start_matches([',', ':']).trim();
                }
            }
        }
        let mention = format!("@{}", self.name);
        let p = p.replace(&mention, " ");
        let p = p.trim();
        let slash = p.starts_with(['/', '!']);
        (p.trim_start_matches(['/', '!']).trim().to_owned(), slash)
    }

    fn answer(&self, prompt: &str, request: &BotRequest) -> String {
        let (prompt, slash) = self.clean_prompt(prompt);
        let prompt: String = prompt.chars().take(MAX_QUERY_CHARS).collect();
        let w: Vec<String> = text::words(&prompt).collect();
        if let Some(first) = w.first() {
            if slash || w.len() <= 2 {
                if let Some(reply) = self.command(first, request) {
                    return reply;
                }
            }
        }
        let asker = &request.asker;
        // Small talk: only greetings, thanks and filler words.
        let small_talk = |set: &[&str]| {
            w.iter().any(|x| set.contains(&x.as_str()))
                && w.iter().all(|x| {
                    set.contains(&x.as_str())
                        || SMALL_TALK.contains(&x.as_str())
                        || text::is_stop_word(x)
                })
        };
        if small_talk(THANKS) {
            return format!("You're welcome, {asker}!");
        }
        if small_talk(GREETINGS) {
            return format!(
                "Hello {asker}! I'm {}. Ask me anything about using this chat, or type `help`.",
                self.name
            );
        }
        let hits = self.kb.search(&prompt, 2);
        match hits.first() {
            Some(top) if top.relevance >= self.min_relevance => {
                let mut reply = top.entry.answer.clone();
                if let Some(next) = hits
                    .get(1)
                    .filter(|h| h.relevance >= self.min_relevance.max(0.6 * top.relevance))
                {
                    reply.push_str(&format!("\n\nSee also: \"{}\"", next.entry.question));
                }
                reply
            }
            weak => {
                let mut reply = "I don't know the answer to that yet.".to_owned();
                if let Some(hit) = weak.filter(|h| h.score > 0.0) {
                    reply.push_str(&format!(" Did you mean \"{}\"?", hit.entry.question));
                }
                reply.push_str(
                    " Type `topics` to see what I can answer, or `help` for what I can do.",
                );
                reply
            }
        }
    }

    fn command(&self, word: &str, request: &BotRequest) -> Option<String> {
        let name = &self.name;
        Some(match word {
            "help" | "commands" => format!(
                "I'm {name}, the built-in assistant; I work offline, without any AI service. I can:\n\
                 - answer questions about using this chat, e.g. \"How do I create a private room?\"\n\
                 - `topics`: list the questions I know about\n\
                 - `summary`: summarise the recent messages of this room\n\
                 - `about`: tell you what I am\n\
                 - `ping`: check that I'm listening\n\
                 Mention me as @{name} in a room I'm a member of, or write to me directly. \
                 Clients can also ask me for a room summary or for suggested replies."
            ),
            "about" => format!(
                "I'm {name}, the chat server's built-in offline bot. I answer from a knowledge base of \
                 {} questions (ranked with BM25), summarise conversations and suggest replies, \
                 all without an internet connection or API key.",
                self.kb.len()
            ),
            "topics" | "faq" => {
                let mut out = "I can answer questions like these:".to_owned();
                for e in self.kb.entries() {
                    out.push_str("\n- ");
                    out.push_str(&e.question);
                }
                out
            }
            "summary" | "summarize" | "summarise" | "recap" | "tldr" => {
                // The newest message is the request itself.
                let ctx = match request.context.split_last() {
                    Some((last, rest)) if last.sender == request.asker => rest,
                    _ => &request.context[..],
                };
                summary::summarize(ctx, self.summary_points)
            }
            "ping" => "pong".to_owned(),
            _ => return None,
        })
    }
}

impl Bot for OfflineBot {
    fn name(&self) -> &str {
        &self.name
    }

    fn reply(&self, request: BotRequest) -> BotStream {
        let text = self.respond(&request);
        stream::iter(text::word_deltas(&text).into_iter().map(Ok)).boxed()
    }

    fn fallback(&self, _error: &crate::error::BotError) -> String {
        "Sorry, I couldn't answer that. Please try again.".to_owned()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
