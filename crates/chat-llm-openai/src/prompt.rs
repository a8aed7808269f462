//! From a [`BotRequest`] to the Chat Completions `messages`: the system
//! prompt, the room's recent messages (bounded by characters, newest kept)
//! and the task's instruction.

use chat_core::{BotRequest, BotTask, Message};
use serde::Serialize;

use crate::settings::OpenAiSettings;

/// One Chat Completions message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ChatMessage {
    pub(crate) role: &'static str,
    pub(crate) content: String,
}

impl ChatMessage {
    fn new(role: &'static str, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
        }
    }
}

/// Suggestions asked for by [`BotTask::SmartReplies`].
pub(crate) const SMART_REPLIES: usize = 3;

/// What the bot answers without asking the endpoint, when there is
/// nothing to send it.
pub(crate) fn local_answer(req: &BotRequest) -> Option<&'static str> {
    match req.task {
        BotTask::Summarize { .. } if req.context.is_empty() => {
            Some("There are no messages to summarise yet.")
        }
        BotTask::SmartReplies if req.context.is_empty() => {
            Some("Hi everyone!\nHow is everyone doing?\nWhat's new?")
        }
        _ => None,
    }
}

/// The messages for one request.
pub(crate) fn build_messages(settings: &OpenAiSettings, req: &BotRequest) -> Vec<ChatMessage> {
    let mut out = vec![ChatMessage::new("system", settings.system_prompt.clone())];
    match &req.task {
        BotTask::Answer { prompt } => {
            let mut context: &[Message] = &req.context;
            // The question is usually the newest stored message: send it once.
            if let Some((last, rest)) = context.split_last() {
                if last.sender == req.asker && last.body.trim() == prompt.trim() {
                    context = rest;
                }
            }
            let prompt = clip_chars(prompt, settings.context_chars);
            let budget = settings
                .context_chars
                .saturating_sub(prompt.chars().count());
            for m in bounded(context, budget, line_len) {
                out.push(if m.sender == settings.name {
                    ChatMessage::new("assistant", m.body.clone())
                } else {
                    ChatMessage::new("user", format!("{}: {}", m.sender, m.body))
                });
            }
            out.push(ChatMessage::new("user", format!("{}: {prompt}", req.asker)));
        }
        BotTask::Summarize { .. } => {
            let transcript = transcript(&req.context, settings.context_chars);
            out.push(ChatMessage::new(
                "user",
                format!(
                    "Summarise the following chat conversation in a few sentences: \
                     who took part, the main topics, and any decisions or open \
                     questions. Do not invent anything.\n\n{transcript}"
                ),
            ));
        }
        BotTask::SmartReplies => {
            let transcript = transcript(&req.context, settings.context_chars);
            out.push(ChatMessage::new(
                "user",
                format!(
                    "Here is a chat conversation:\n\n{transcript}\n\nWrite exactly \
                     {SMART_REPLIES} short replies (at most eight words each) that {} \
                     could send next. Output only the replies, one per line, without \
                     numbering or quotes.",
                    req.asker
                ),
            ));
        }
    }
    out
}

fn line_len(m: &Message) -> usize {
    m.sender.chars().count() + 2 + m.body.chars().count()
}

/// The newest messages whose lengths add up to at most `budget`, oldest
/// first.
fn bounded(msgs: &[Message], budget: usize, len: impl Fn(&Message) -> usize) -> &[Message] {
    let mut used = 0;
    let mut start = msgs.len();
    for (i, m) in msgs.iter().enumerate().rev() {
        used += len(m);
        if used > budget {
            break;
        }
        start = i;
    }
    &msgs[start..]
}

/// `name: text` lines of the newest messages, at most `budget` characters
/// (the newest message alone is cut to fit when it is longer).
fn transcript(msgs: &[Message], budget: usize) -> String {
    let kept = bounded(msgs, budget, |m| line_len(m) + 1);
    if kept.is_empty() {
        if let Some(last) = msgs.last() {
            return clip_chars(&format!("{}: {}", last.sender, last.body), budget).to_owned();
        }
    }
    kept.iter()
        .map(|m| format!("{}: {}", m.sender, m.body))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first `max` characters of `s`.
fn clip_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Cleans a model's smart-reply text: one reply per line, numbering,
/// bullets and quotes removed, duplicates dropped, at most
/// [`SMART_REPLIES`].
pub(crate) fn clean_suggestions(text: &str) -> String {
    let mut seen: Vec<String> = Vec::new();
    for line in text.lines() {
        let mut l = line.trim();
        let digits = l.len() - l.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 && l[digits..].starts_with(['.', ')', ':']) {
            l = &l[digits + 1..];
        }
        let l = l
            .trim_start_matches(['-', '*', '•'])
            .trim()
            .trim_matches(['"', '\u{201c}', '\u{201d}', '\''])
            .trim();
        if l.is_empty() || seen.iter().any(|s| s.eq_ignore_ascii_case(l)) {
            continue;
        }
        seen.push(l.to_owned());
        if seen.len() == SMART_REPLIES {
            break;
        }
    }
    seen.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_core::MessageKind;

    fn msg(seq: u64, sender: &str, body: &str) -> Message {
        Message {
            room: "r".into(),
            seq,
            sender: sender.into(),
            body: body.into(),
            ts: 0,
            kind: if sender == "assistant" {
                MessageKind::Bot
            } else {
                MessageKind::User
            },
            client_id: None,
            file: None,
        }
    }

    #[test]
    fn answer_maps_roles_and_sends_the_question_once() {
        let ctx = vec![
            msg(1, "alice", "hi"),
            msg(2, "assistant", "hello alice"),
            msg(3, "bob", "what is rust?"),
        ];
        let req = BotRequest::new(
            "r",
            "bob",
            BotTask::Answer {
                prompt: "what is rust?".into(),
            },
            ctx,
        );
        let m = build_messages(&OpenAiSettings::default(), &req);
        let got: Vec<_> = m.iter().map(|m| (m.role, m.content.as_str())).collect();
        assert_eq!(
            got[1..],
            [
                ("user", "alice: hi"),
                ("assistant", "hello alice"),
                ("user", "bob: what is rust?"),
            ]
        );
        assert_eq!(got[0].0, "system");
    }

    #[test]
    fn context_is_bounded_newest_kept() {
        let ctx: Vec<_> = (1..=50)
            .map(|i| msg(i, "alice", &format!("message {i:02}")))
            .collect();
        let req = BotRequest::new("r", "bob", BotTask::Answer { prompt: "q".into() }, ctx);
        let s = OpenAiSettings::default().context_chars(100);
        let m = build_messages(&s, &req);
        let total: usize = m[1..].iter().map(|m| m.content.chars().count()).sum();
        assert!(total <= 100 + "bob: ".len(), "{total}");
        assert_eq!(m[m.len() - 2].content, "alice: message 50");
        assert!(m.len() > 3);
    }

    #[test]
    fn summary_and_smart_replies_carry_the_transcript() {
        let ctx = vec![msg(1, "alice", "lunch at noon?"), msg(2, "bob", "sure")];
        let req = BotRequest::new("r", "carol", BotTask::Summarize { count: 2 }, ctx.clone());
        let m = build_messages(&OpenAiSettings::default(), &req);
        assert!(m[1].content.contains("alice: lunch at noon?\nbob: sure"));
        assert!(m[1].content.starts_with("Summarise"));
        let req = BotRequest::new("r", "carol", BotTask::SmartReplies, ctx);
        let m = build_messages(&OpenAiSettings::default(), &req);
        assert!(m[1].content.contains("exactly 3 short replies"));
        assert!(m[1].content.contains("carol"));
    }

    #[test]
    fn a_long_newest_message_is_cut_not_dropped() {
        let ctx = vec![msg(1, "alice", &"x".repeat(500))];
        let req = BotRequest::new("r", "bob", BotTask::Summarize { count: 1 }, ctx);
        let m = build_messages(&OpenAiSettings::default().context_chars(50), &req);
        assert!(m[1]
            .content
            .ends_with(&format!("alice: {}", "x".repeat(43))));
    }

    #[test]
    fn suggestions_are_cleaned() {
        let text = "1. \"Sounds good!\"\n\n2) Sure\n- sure\n* Let me check\nExtra one";
        assert_eq!(clean_suggestions(text), "Sounds good!\nSure\nLet me check");
    }
}
