//! Smart replies: three short replies to the latest message someone else
//! wrote, by what kind of message it is (a thank-you, a greeting, a
//! question, news, a problem, ...), with an answer from the knowledge base
//! first when it is a question the base can answer.

use super::knowledge::KnowledgeBase;
use super::text::words;
use crate::protocol::{Message, MessageKind};

/// Suggestions made.
pub const SUGGESTIONS: usize = 3;
/// Longest knowledge-base answer offered as a suggestion, in characters.
pub const MAX_SUGGESTION_CHARS: usize = 120;

const GREETINGS: &[&str] = &[
    "hi",
    "hello",
    "hey",
    "hiya",
    "howdy",
    "yo",
    "morning",
    "evening",
    "greetings",
];
const FAREWELLS: &[&str] = &["bye", "goodbye", "cya", "ciao", "night", "goodnight"];
const THANKS: &[&str] = &["thanks", "thank", "thx", "ty", "cheers", "appreciated"];
const APOLOGIES: &[&str] = &["sorry", "apologies", "oops"];
const GOOD_NEWS: &[&str] = &[
    "great",
    "awesome",
    "done",
    "finished",
    "shipped",
    "released",
    "works",
    "working",
    "fixed",
    "merged",
    "congrats",
    "congratulations",
    "yay",
    "passed",
];
const TROUBLE: &[&str] = &[
    "broken", "broke", "fail", "fails", "failed", "failing", "error", "bug", "crash", "crashed",
    "down", "problem", "issue", "stuck", "slow",
];
const YES_NO_STARTS: &[&str] = &[
    "is", "are", "am", "can", "could", "do", "does", "did", "will", "would", "should", "shall",
    "have", "has", "had", "was", "were", "may", "might", "anyone", "any",
];
const WH_STARTS: &[&str] = &[
    "what", "when", "where", "who", "whom", "whose", "which", "why", "how",
];

fn any_of(words: &[String], set: &[&str]) -> bool {
    words.iter().any(|w| set.contains(&w.as_str()))
}

/// The first sentence of a knowledge-base answer, short enough to send.
fn short_answer(answer: &str) -> String {
    let first = answer
        .split_inclusive(['.', '!', '?'])
        .next()
        .unwrap_or(answer)
        .lines()
        .next()
        .unwrap_or("")
        .trim();
    match first.char_indices().nth(MAX_SUGGESTION_CHARS) {
        Some((i, _)) => format!("{}…", first[..i].trim_end()),
        None => first.to_owned(),
    }
}

/// Three replies `asker` could send next.
pub(crate) fn smart_replies(
    context: &[Message],
    asker: &str,
    kb: &KnowledgeBase,
    min_relevance: f64,
) -> Vec<String> {
    let said = |m: &&Message| m.kind != MessageKind::System;
    let last = context
        .iter()
        .rev()
        .filter(said)
        .find(|m| m.sender != asker)
        .or_else(|| context.iter().rev().find(said));
    let Some(last) = last else {
        return vec![
            "Hi everyone!".into(),
            "How is everyone doing?".into(),
            "What's new?".into(),
        ];
    };
    let text = last.body.trim();
    let w: Vec<String> = words(text).collect();
    let first = w.first().map(String::as_str).unwrap_or("");
    let who = &last.sender;

    let mut out: Vec<String> = Vec::new();
    let question =
        text.ends_with('?') || WH_STARTS.contains(&first) || YES_NO_STARTS.contains(&first);
    if question {
        if let Some(hit) = kb
            .search(text, 1)
            .into_iter()
            .next()
            .filter(|h| h.relevance >= min_relevance)
        {
            out.push(short_answer(&hit.entry.answer));
        }
    }
    let canned: [&str; 3] = if any_of(&w, THANKS) {
        ["You're welcome!", "Any time!", "Glad I could help."]
    } else if any_of(&w, APOLOGIES) {
        ["No worries!", "It's fine, really.", "Don't worry about it."]
    } else if question && YES_NO_STARTS.contains(&first) {
        ["Yes", "No", "Let me check"]
    } else if question {
        [
            "Good question!",
            "I'm not sure, let me check.",
            "I'll get back to you on that.",
        ]
    } else if any_of(&w, FAREWELLS) || text.to_lowercase().contains("see you") {
        ["Bye!", "See you later!", "Take care!"]
    } else if GREETINGS.contains(&first) || text.to_lowercase().starts_with("good morning") {
        ["", "Hello! How are you?", "Hey, good to see you!"]
    } else if any_of(&w, TROUBLE) {
        [
            "Oh no, what happened?",
            "Can I help with that?",
            "Thanks for letting us know.",
        ]
    } else if any_of(&w, GOOD_NEWS) {
        ["Great news!", "Nice work!", "Thanks for the update."]
    } else {
        [
            "Sounds good!",
            "Thanks for letting me know.",
            "Tell me more?",
        ]
    };
    for c in canned {
        let c = if c.is_empty() {
            format!("Hi {who}!")
        } else {
            c.to_owned()
        };
        if out.len() < SUGGESTIONS && !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn msg(sender: &str, body: &str) -> Message {
        Message {
            room: "r".into(),
            seq: 1,
            sender: sender.into(),
            body: body.into(),
            ts: 0,
            kind: MessageKind::User,
            client_id: None,
            file: None,
        }
    }

    fn replies(ctx: &[Message]) -> Vec<String> {
        smart_replies(
            ctx,
            "me",
            &KnowledgeBase::bundled(),
            super::super::DEFAULT_MIN_RELEVANCE,
        )
    }

    #[test]
    fn always_three_replies_by_kind_of_message() {
        let cases: &[(&str, &str)] = &[
            ("Thanks a lot for the help!", "You're welcome!"),
            ("hello there", "Hi alice!"),
            ("Is the build green?", "Yes"),
            ("Why did the deploy stop?", "Good question!"),
            ("The build is broken again", "Oh no, what happened?"),
            ("I shipped the new version", "Great news!"),
            ("sorry, I was late", "No worries!"),
            ("ok bye, see you tomorrow", "Bye!"),
            ("Lunch is at noon", "Sounds good!"),
        ];
        for (body, expected) in cases {
            let r = replies(&[msg("alice", body)]);
            assert_eq!(r.len(), 3, "{body}: {r:?}");
            assert!(r.contains(&expected.to_string()), "{body}: {r:?}");
        }
    }

    #[test]
    fn a_question_the_knowledge_base_answers_comes_first() {
        let r = replies(&[msg("alice", "how do I make a private room?")]);
        assert_eq!(r.len(), 3);
        assert!(r[0].contains("private"), "{r:?}");
        assert!(r[0].chars().count() <= MAX_SUGGESTION_CHARS + 1);
    }

    #[test]
    fn replies_answer_someone_else() {
        let ctx = [msg("alice", "thank you!"), msg("me", "no problem")];
        assert_eq!(replies(&ctx)[0], "You're welcome!");
        assert_eq!(replies(&[]).len(), 3);
    }
}
