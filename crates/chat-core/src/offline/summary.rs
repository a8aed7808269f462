//! Extractive summaries: who spoke and how much, the main topics (the most
//! frequent terms), and the sentences whose terms are most frequent in the
//! conversation, in their original order.

use std::collections::HashMap;

use super::text::{term, words};
use crate::protocol::{Message, MessageKind};

/// Longest sentence quoted in a summary, in characters.
pub const MAX_QUOTE_CHARS: usize = 160;
/// Most topics listed.
pub const MAX_TOPICS: usize = 5;
/// How much a sentence's score drops for repeating terms of the sentences
/// already picked (0: not at all, 1: to nothing when it only repeats).
const REPEAT_PENALTY: f64 = 1.0;

struct Sentence<'a> {
    order: usize,
    sender: &'a str,
    text: &'a str,
    terms: Vec<String>,
}

/// Splits a message into sentences: at line breaks and after `.`, `!` or
/// `?` followed by whitespace.
fn sentences(body: &str) -> impl Iterator<Item = &str> {
    body.lines().flat_map(|line| {
        let mut out = Vec::new();
        let mut start = 0;
        let mut chars = line.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            let next_space = chars.peek().is_none_or(|(_, n)| n.is_whitespace());
            if matches!(c, '.' | '!' | '?') && next_space {
                let end = i + c.len_utf8();
                out.push(&line[start..end]);
                start = end;
            }
        }
        out.push(&line[start..]);
        out.into_iter().map(str::trim).filter(|s| !s.is_empty())
    })
}

fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", s[..i].trim_end()),
        None => s.to_owned(),
    }
}

/// "a", "a and b", "a, b and c".
fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// A summary of `messages` quoting at most `max_points` sentences.
pub(crate) fn summarize(messages: &[Message], max_points: usize) -> String {
    let said: Vec<&Message> = messages
        .iter()
        .filter(|m| m.kind != MessageKind::System)
        .collect();
    if said.is_empty() {
        return "There are no messages to summarise yet.".to_owned();
    }

    // Who spoke, most active first (first appearance breaks ties).
    let mut counts: Vec<(&str, usize, usize)> = Vec::new();
    for (i, m) in said.iter().enumerate() {
        match counts.iter_mut().find(|(s, ..)| *s == m.sender) {
            Some(c) => c.1 += 1,
            None => counts.push((&m.sender, 1, i)),
        }
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
    let people: Vec<String> = counts
        .iter()
        .map(|(s, n, _)| format!("{s} ({n})"))
        .collect();

    // Term frequencies over the whole conversation, and the commonest
    // surface word of each term for display.
    let mut tf: HashMap<String, usize> = HashMap::new();
    let mut surface: HashMap<String, HashMap<String, usize>> = HashMap::new();
    let mut all = Vec::new();
    for m in &said {
        for text in sentences(&m.body) {
            let mut terms = Vec::new();
            for w in words(text) {
                if let Some(t) = term(&w) {
                    *tf.entry(t.clone()).or_default() += 1;
                    *surface.entry(t.clone()).or_default().entry(w).or_default() += 1;
                    terms.push(t);
                }
            }
            all.push(Sentence {
                order: all.len(),
                sender: &m.sender,
                text,
                terms,
            });
        }
    }

    let mut topics: Vec<(&String, &usize)> = tf.iter().filter(|(_, n)| **n >= 2).collect();
    topics.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let topics: Vec<String> = topics
        .into_iter()
        .take(MAX_TOPICS)
        .filter_map(|(t, _)| {
            let forms = surface.get(t)?;
            forms
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
                .map(|(w, _)| w.clone())
        })
        .collect();

    // Score: frequency of a sentence's repeated terms, normalised by the
    // square root of its length so long sentences do not win by size.
    let score = |s: &Sentence<'_>| {
        if s.terms.len() < 2 {
            return 0.0;
        }
        let sum: usize = s
            .terms
            .iter()
            .map(|t| tf.get(t).copied().unwrap_or(0))
            .filter(|n| *n >= 2)
            .sum();
        sum as f64 / (s.terms.len() as f64).sqrt()
    };
    // Greedy picks, each discounted by how much it repeats the terms
    // already picked, so the points say different things.
    let want = max_points.min(all.len().div_ceil(3)).max(1);
    let mut picked: Vec<&Sentence<'_>> = Vec::new();
    let mut covered: Vec<&str> = Vec::new();
    while picked.len() < want {
        let best = all
            .iter()
            .filter(|s| {
                !picked
                    .iter()
                    .any(|p| p.order == s.order || p.text.eq_ignore_ascii_case(s.text))
            })
            .map(|s| {
                let repeated = s
                    .terms
                    .iter()
                    .filter(|t| covered.contains(&t.as_str()))
                    .count();
                let novelty = 1.0 - REPEAT_PENALTY * repeated as f64 / s.terms.len().max(1) as f64;
                (score(s) * novelty, s)
            })
            .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.order.cmp(&a.1.order)));
        let Some((_, s)) = best else { break };
        covered.extend(s.terms.iter().map(String::as_str));
        picked.push(s);
    }
    picked.sort_by_key(|s| s.order);

    let n = said.len();
    let mut out = format!(
        "Summary of {n} message{} from {}.",
        if n == 1 { "" } else { "s" },
        join_and(&people)
    );
    if !topics.is_empty() {
        out.push_str(&format!("\nTopics: {}.", topics.join(", ")));
    }
    out.push_str("\nKey points:");
    for s in picked {
        out.push_str(&format!(
            "\n- {}: {}",
            s.sender,
            clip(s.text, MAX_QUOTE_CHARS)
        ));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    pub(crate) fn msg(seq: u64, sender: &str, body: &str) -> Message {
        Message {
            room: "dev".into(),
            seq,
            sender: sender.into(),
            body: body.into(),
            ts: 0,
            kind: MessageKind::User,
            client_id: None,
            file: None,
        }
    }

    fn conversation() -> Vec<Message> {
        [
            ("alice", "Morning all! The release is planned for Friday."),
            (
                "bob",
                "Morning. The sqlite store tests still fail on CI, so the release may slip.",
            ),
            (
                "alice",
                "Which sqlite tests fail? I ran them locally and they passed.",
            ),
            ("carol", "I had coffee already."),
            (
                "bob",
                "The crash recovery tests fail on CI. I think the CI disk is slow.",
            ),
            ("carol", "lol"),
            (
                "alice",
                "OK, let's move the crash recovery tests to a faster disk before the release.",
            ),
            ("bob", "Good idea, I will do it today."),
            ("carol", "Friday works for me."),
        ]
        .iter()
        .enumerate()
        .map(|(i, (s, b))| msg(i as u64 + 1, s, b))
        .collect()
    }

    #[test]
    fn sentences_split_at_terminators_and_lines() {
        let s: Vec<_> = sentences("One. Two! v1.2 is out?\nthree").collect();
        assert_eq!(s, ["One.", "Two!", "v1.2 is out?", "three"]);
    }

    #[test]
    fn summary_names_people_topics_and_key_sentences() {
        let conv = conversation();
        let s = summarize(&conv, 3);
        let input: usize = conv.iter().map(|m| m.body.len() + m.sender.len()).sum();
        assert!(s.len() < input, "{} >= {input}:\n{s}", s.len());
        assert!(
            s.starts_with("Summary of 9 messages from alice (3), bob (3) and carol (3)."),
            "{s}"
        );
        assert!(s.contains("Topics: test"), "{s}");
        assert!(s.contains("release") && s.contains("sqlite"), "{s}");
        assert!(
            !s.contains("coffee") && !s.contains("lol"),
            "chit-chat is left out:\n{s}"
        );
        assert_eq!(s.lines().filter(|l| l.starts_with("- ")).count(), 3, "{s}");
    }

    #[test]
    fn empty_and_tiny_inputs() {
        assert_eq!(summarize(&[], 3), "There are no messages to summarise yet.");
        let s = summarize(&[msg(1, "alice", "hello there")], 3);
        assert!(s.starts_with("Summary of 1 message from alice (1)."), "{s}");
        assert!(s.contains("- alice: hello there"), "{s}");
    }
}
