//! The [`Bot`] extension point: a responder whose reply is a stream of text
//! deltas.
//!
//! The engine runs each reply as its own task under
//! [`Limits::bot_concurrency`](crate::Limits::bot_concurrency) and
//! [`Limits::bot_timeout`](crate::Limits::bot_timeout); deltas are broadcast
//! to the room as they arrive and the final text is stored as an ordinary
//! message. When the stream fails, the room gets [`Bot::fallback`] and the
//! failure is counted (invariant 9).

use futures_util::stream::BoxStream;

use crate::error::BotError;
use crate::protocol::{BotTask, Message};

/// A reply being streamed: text deltas, in order.
pub type BotStream = BoxStream<'static, Result<String, BotError>>;

/// What a bot is asked.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BotRequest {
    /// The room the request comes from.
    pub room: String,
    /// Who asked (or wrote the message being answered).
    pub asker: String,
    /// What to do.
    pub task: BotTask,
    /// The room's recent messages, oldest first (at most
    /// [`Limits::bot_context`](crate::Limits::bot_context), more for
    /// summaries).
    pub context: Vec<Message>,
}

impl BotRequest {
    /// A request (for bots' own tests and for hosts calling a bot directly).
    pub fn new(room: &str, asker: &str, task: BotTask, context: Vec<Message>) -> Self {
        BotRequest {
            room: room.to_owned(),
            asker: asker.to_owned(),
            task,
            context,
        }
    }
}

/// A responder that can be a member of rooms.
pub trait Bot: Send + Sync + 'static {
    /// The bot's user name (1-32 of `a-z 0-9 _ . -`), unique in the engine.
    fn name(&self) -> &str;

    /// Starts a reply. The stream yields text deltas; its end is the end of
    /// the reply. For [`BotTask::SmartReplies`], each line of the text is one
    /// suggestion.
    fn reply(&self, request: BotRequest) -> BotStream;

    /// What the room gets when the reply fails.
    fn fallback(&self, _error: &BotError) -> String {
        "Sorry, I can't answer right now. Please try again later.".to_owned()
    }
}
