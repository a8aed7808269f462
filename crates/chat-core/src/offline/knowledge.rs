//! The offline bot's knowledge: questions and answers, from the bundled
//! `assets/knowledge.md` or a file of the host's, ranked by BM25.
//!
//! # File formats
//!
//! Markdown (any extension but `.json`): each entry is a `## ` heading with
//! the question, an optional `Also:` line of other phrasings separated by
//! `|`, and the answer text up to the next `## ` heading. Text before the
//! first `## ` heading is ignored.
//!
//! ```text
//! ## How do I create a room?
//! Also: make a channel | open a new room
//! Send `create_room` with a name; you become its admin.
//! ```
//!
//! JSON (`.json`): an array of `{"question": ..., "answer": ..., "also":
//! [...]}` objects (`also` optional).
//!
//! # Ranking
//!
//! BM25 (k1 = [`K1`], b = [`B`]) over the normalised terms of each entry,
//! with the question's terms (and its `Also:` phrasings) counted
//! [`QUESTION_WEIGHT`] times, so an entry about the asked thing beats one
//! that merely mentions it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::text::terms;

/// BM25 term-frequency saturation.
pub const K1: f64 = 1.2;
/// BM25 length normalisation.
pub const B: f64 = 0.75;
/// How many times a question term counts against an answer term.
pub const QUESTION_WEIGHT: f64 = 3.0;
/// Largest knowledge file read, in bytes.
pub const MAX_KNOWLEDGE_BYTES: u64 = 4 * 1024 * 1024;
/// How much a query term that no entry contains counts towards the query's
/// maximum score (see [`Hit::relevance`]), as a fraction of the idf of a
/// term found in no entry.
pub const UNKNOWN_WEIGHT: f64 = 1.0;

/// The knowledge file compiled into the crate.
pub const BUNDLED_KNOWLEDGE: &str = include_str!("../../assets/knowledge.md");

/// One question and its answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Entry {
    /// The question, as shown in `topics`.
    pub question: String,
    /// Other phrasings of the question (ranked like the question).
    #[serde(default)]
    pub also: Vec<String>,
    /// The answer.
    pub answer: String,
}

impl Entry {
    /// An entry.
    pub fn new(question: impl Into<String>, answer: impl Into<String>) -> Self {
        Entry {
            question: question.into(),
            also: Vec::new(),
            answer: answer.into(),
        }
    }
}

/// Why a knowledge file could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KnowledgeError {
    /// The file could not be read.
    #[error("cannot read knowledge file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_KNOWLEDGE_BYTES`].
    #[error("knowledge file is larger than {limit} bytes")]
    TooLarge {
        /// The bound.
        limit: u64,
    },
    /// A JSON knowledge file is not an array of entries.
    #[error("bad JSON knowledge file at line {line}, column {column}: {message}")]
    Json {
        /// Line of the error.
        line: usize,
        /// Column of the error.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A Markdown knowledge file has a malformed entry.
    #[error("bad knowledge file at line {line}: {reason}")]
    Markdown {
        /// Line of the entry.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The file has no entries.
    #[error("knowledge file has no entries")]
    Empty,
}

/// A ranked entry.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Hit<'a> {
    /// The entry.
    pub entry: &'a Entry,
    /// Its BM25 score for the query.
    pub score: f64,
    /// The score, normalised so that one threshold fits any query and any
    /// base: divided by the smaller of [`KnowledgeBase::reference_score`]
    /// (what one distinctive term can add) and the query's own maximum
    /// (what every query term could add at most; a term the base does not
    /// know counts as a distinctive one). 1.0 is one distinctive query term
    /// found in the entry's question; entries about the question score
    /// about 1-2, chance matches below 1.
    pub relevance: f64,
}

/// Entries and their BM25 index.
#[derive(Debug, Clone)]
pub struct KnowledgeBase {
    entries: Vec<Entry>,
    /// term -> (entry index, weighted term frequency)
    postings: HashMap<String, Vec<(usize, f64)>>,
    /// weighted length of each entry
    lengths: Vec<f64>,
    avg_len: f64,
}

impl KnowledgeBase {
    /// The bundled knowledge about this chat server.
    pub fn bundled() -> Self {
        KnowledgeBase::parse_markdown(BUNDLED_KNOWLEDGE).unwrap_or_else(|e| {
            // Guarded by a unit test; never expected.
            tracing::error!(error = %e, "the bundled knowledge file is broken");
            KnowledgeBase::index(vec![Entry::new("help", "Type `help`.")])
        })
    }

    /// Builds the index over `entries`.
    pub fn from_entries(entries: Vec<Entry>) -> Result<Self, KnowledgeError> {
        if entries.is_empty() {
            return Err(KnowledgeError::Empty);
        }
        Ok(KnowledgeBase::index(entries))
    }

    /// Loads a file: JSON when its extension is `.json`, Markdown
    /// otherwise. Reads the file synchronously: call it at startup, not on
    /// the async runtime's hot path.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, KnowledgeError> {
        let path = path.as_ref();
        let io = |source| KnowledgeError::Io {
            path: path.to_owned(),
            source,
        };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > MAX_KNOWLEDGE_BYTES {
            return Err(KnowledgeError::TooLarge {
                limit: MAX_KNOWLEDGE_BYTES,
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        if json {
            KnowledgeBase::parse_json(&text)
        } else {
            KnowledgeBase::parse_markdown(&text)
        }
    }

    /// Parses a JSON array of entries.
    pub fn parse_json(text: &str) -> Result<Self, KnowledgeError> {
        let entries: Vec<Entry> = serde_json::from_str(text).map_err(|e| KnowledgeError::Json {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        for (i, e) in entries.iter().enumerate() {
            if e.question.trim().is_empty() || e.answer.trim().is_empty() {
                return Err(KnowledgeError::Json {
                    line: 0,
                    column: 0,
                    message: format!("entry {} has an empty question or answer", i + 1),
                });
            }
        }
        KnowledgeBase::from_entries(entries)
    }

    /// Parses the Markdown format (see the module docs).
    pub fn parse_markdown(text: &str) -> Result<Self, KnowledgeError> {
        let mut entries = Vec::new();
        let mut current: Option<(usize, Entry)> = None;
        let finish = |cur: Option<(usize, Entry)>, out: &mut Vec<Entry>| match cur {
            Some((line, mut e)) => {
                e.answer = e.answer.trim().to_owned();
                if e.answer.is_empty() {
                    return Err(KnowledgeError::Markdown {
                        line,
                        reason: "question without an answer",
                    });
                }
                out.push(e);
                Ok(())
            }
            None => Ok(()),
        };
        for (i, line) in text.lines().enumerate() {
            if let Some(q) = line.strip_prefix("## ") {
                finish(current.take(), &mut entries)?;
                if q.trim().is_empty() {
                    return Err(KnowledgeError::Markdown {
                        line: i + 1,
                        reason: "empty question",
                    });
                }
                current = Some((i + 1, Entry::new(q.trim(), String::new())));
            } else if let Some((_, e)) = current.as_mut() {
                let also = line
                    .trim_start()
                    .get(..5)
                    .is_some_and(|p| p.eq_ignore_ascii_case("also:"));
                if e.answer.trim().is_empty() && also {
                    let rest = &line.trim_start()[5..];
                    e.also.extend(
                        rest.split('|')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned),
                    );
                } else {
                    e.answer.push_str(line);
                    e.answer.push('\n');
                }
            }
        }
        finish(current.take(), &mut entries)?;
        KnowledgeBase::from_entries(entries)
    }

    fn index(entries: Vec<Entry>) -> Self {
        let mut postings: HashMap<String, Vec<(usize, f64)>> = HashMap::new();
        let mut lengths = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            let mut tf: HashMap<String, f64> = HashMap::new();
            let mut len = 0.0;
            let question = std::iter::once(&e.question).chain(&e.also);
            for t in question.flat_map(|q| terms(q)) {
                *tf.entry(t).or_default() += QUESTION_WEIGHT;
                len += QUESTION_WEIGHT;
            }
            for t in terms(&e.answer) {
                *tf.entry(t).or_default() += 1.0;
                len += 1.0;
            }
            for (t, f) in tf {
                postings.entry(t).or_default().push((i, f));
            }
            lengths.push(len);
        }
        let avg_len = lengths.iter().sum::<f64>() / (lengths.len().max(1) as f64);
        KnowledgeBase {
            entries,
            postings,
            lengths,
            avg_len: avg_len.max(1.0),
        }
    }

    /// What one distinctive query term scores when it occurs once in the
    /// question of an entry of average length, and in no other entry. BM25
    /// scores grow with the size of the base (through the idf); dividing
    /// by this makes one threshold work for any base.
    pub fn reference_score(&self) -> f64 {
        let n = self.entries.len() as f64;
        question_match((1.0 + (n - 0.5) / 1.5).ln())
    }

    /// The entries, in file order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries (never, for a built base).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The best `limit` entries for `query`, best first; entries sharing no
    /// term with the query are left out.
    pub fn search(&self, query: &str, limit: usize) -> Vec<Hit<'_>> {
        let mut query_terms = terms(query);
        query_terms.sort_unstable();
        query_terms.dedup();
        let n = self.entries.len() as f64;
        let mut scores: HashMap<usize, f64> = HashMap::new();
        for t in &query_terms {
            let Some(posting) = self.postings.get(t) else {
                continue;
            };
            let df = posting.len() as f64;
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            for &(doc, tf) in posting {
                let norm = K1 * (1.0 - B + B * self.lengths[doc] / self.avg_len);
                *scores.entry(doc).or_default() += idf * tf * (K1 + 1.0) / (tf + norm);
            }
        }
        let reference = self.reference_score().max(f64::MIN_POSITIVE);
        let idf_unknown = (1.0 + (n + 0.5) / 0.5).ln();
        let max_total: f64 = query_terms
            .iter()
            .map(|t| {
                let idf = match self.postings.get(t) {
                    Some(p) => (1.0 + (n - p.len() as f64 + 0.5) / (p.len() as f64 + 0.5)).ln(),
                    None => UNKNOWN_WEIGHT * idf_unknown,
                };
                question_match(idf)
            })
            .sum();
        // Normalise by the smaller of the two: a query of common terms is
        // judged by how much of it matched, a long or chatty one by how
        // strongly its distinctive terms matched.
        let norm = reference.min(max_total).max(f64::MIN_POSITIVE);
        let mut hits: Vec<Hit<'_>> = scores
            .into_iter()
            .map(|(doc, score)| Hit {
                entry: &self.entries[doc],
                score,
                relevance: score / norm,
            })
            .collect();
        hits.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.entry.question.cmp(&b.entry.question))
        });
        hits.truncate(limit);
        hits
    }
}

/// The BM25 score of a term of inverse document frequency `idf` occurring
/// once in the question of an entry of average length.
fn question_match(idf: f64) -> f64 {
    idf * QUESTION_WEIGHT * (K1 + 1.0) / (QUESTION_WEIGHT + K1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_file_parses_with_enough_entries() {
        let kb = KnowledgeBase::parse_markdown(BUNDLED_KNOWLEDGE).unwrap();
        assert!((30..=60).contains(&kb.len()), "{} entries", kb.len());
        for e in kb.entries() {
            assert!(e.question.ends_with('?'), "{}", e.question);
            assert!(e.answer.len() > 20, "{}", e.question);
        }
    }

    #[test]
    fn markdown_entries_with_also_lines() {
        let kb = KnowledgeBase::parse_markdown(
            "# Title\nintro text\n\n## What is X?\nAlso: define x | x meaning\nX is a thing.\n\nSecond paragraph.\n## Why Y?\nBecause.\n",
        )
        .unwrap();
        assert_eq!(kb.len(), 2);
        let e = &kb.entries()[0];
        assert_eq!(e.also, ["define x", "x meaning"]);
        assert_eq!(e.answer, "X is a thing.\n\nSecond paragraph.");
    }

    #[test]
    fn broken_files_are_typed_errors() {
        let e = KnowledgeBase::parse_markdown("## Question?\n\n## Other?\nanswer").unwrap_err();
        assert!(matches!(e, KnowledgeError::Markdown { line: 1, .. }), "{e}");
        let e = KnowledgeBase::parse_markdown("##  \nanswer").unwrap_err();
        assert!(matches!(e, KnowledgeError::Markdown { line: 1, .. }), "{e}");
        assert!(matches!(
            KnowledgeBase::parse_markdown("just text").unwrap_err(),
            KnowledgeError::Empty
        ));
        let e = KnowledgeBase::parse_json(r#"[{"question": "q?"}]"#).unwrap_err();
        assert!(matches!(e, KnowledgeError::Json { line: 1, .. }), "{e}");
        let e = KnowledgeBase::parse_json(r#"[{"question": "q?", "answer": " "}]"#).unwrap_err();
        assert!(matches!(e, KnowledgeError::Json { .. }), "{e}");
        assert!(matches!(
            KnowledgeBase::parse_json("[]").unwrap_err(),
            KnowledgeError::Empty
        ));
    }

    #[test]
    fn question_terms_weigh_more_than_answer_terms() {
        let kb = KnowledgeBase::from_entries(vec![
            Entry::new("How do I leave a room?", "Send leave with the room name."),
            Entry::new(
                "How do I delete a message?",
                "You cannot; rooms keep every message, you may leave the room.",
            ),
        ])
        .unwrap();
        let hits = kb.search("leave room", 2);
        assert_eq!(hits[0].entry.question, "How do I leave a room?");
        assert!(hits[0].score > hits[1].score);
        assert!(kb.search("weather forecast", 2).is_empty());
    }
}
