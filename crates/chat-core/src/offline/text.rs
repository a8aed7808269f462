//! Text normalisation shared by the knowledge base, the summaries and the
//! smart replies: lower-case words, punctuation stripped, stop words
//! removed, a few synonyms folded together, and a light suffix stemmer.

/// Words too common to tell questions apart.
const STOP_WORDS: &[&str] = &[
    "a", "about", "above", "after", "again", "all", "also", "am", "an", "and", "any", "are", "as",
    "at", "be", "been", "before", "being", "both", "but", "by", "could", "did", "do", "does",
    "doing", "each", "for", "from", "get", "got", "had", "has", "have", "having", "he", "her",
    "here", "hers", "him", "his", "how", "i", "if", "in", "into", "is", "it", "its", "just", "let",
    "me", "mine", "more", "most", "my", "no", "nor", "not", "now", "of", "off", "on", "once",
    "only", "or", "other", "our", "ours", "own", "please", "same", "she", "should", "so", "some",
    "such", "than", "that", "the", "their", "them", "then", "there", "these", "they", "this",
    "those", "through", "to", "too", "under", "until", "up", "us", "very", "want", "was", "we",
    "were", "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with",
    "would", "you", "your", "yours", "can", "cannot", "im", "ive", "dont", "doesnt", "tell",
    "know", "way", "there", "thing", "things", "really", "hey", "hi", "hello", "ok", "okay",
    "whats", "hows", "wheres", "whos", "thats", "lets", "youre", "cant", "wont", "isnt", "arent",
    "didnt", "id", "ill", "possible", "anyone", "somebody", "someone", "kindly", "need", "like",
];

/// Words folded into one term (after stemming), so that paraphrases meet.
const SYNONYMS: &[(&str, &str)] = &[
    ("channel", "room"),
    ("chatroom", "room"),
    ("group", "room"),
    ("make", "create"),
    ("start", "create"),
    ("add", "invite"),
    ("kick", "remove"),
    ("ban", "remove"),
    ("erase", "delete"),
    ("dm", "direct"),
    ("pm", "direct"),
    ("privately", "private"),
    ("secret", "private"),
    ("hidden", "private"),
    ("passwd", "password"),
    ("passphrase", "password"),
    ("login", "log"),
    ("signin", "log"),
    ("logon", "log"),
    ("register", "signup"),
    ("registration", "signup"),
    ("account", "signup"),
    ("username", "name"),
    ("nickname", "name"),
    ("nick", "name"),
    ("earlier", "history"),
    ("previous", "history"),
    ("past", "history"),
    ("scroll", "history"),
    ("attachment", "file"),
    ("upload", "file"),
    ("image", "file"),
    ("photo", "file"),
    ("picture", "file"),
    ("ai", "bot"),
    ("assistant", "bot"),
    ("helper", "bot"),
    ("llm", "bot"),
    ("gpt", "bot"),
    ("chatgpt", "bot"),
    ("summarize", "summary"),
    ("summarise", "summary"),
    ("recap", "summary"),
    ("tldr", "summary"),
    ("suggestion", "suggest"),
    ("throttle", "limit"),
    ("quota", "limit"),
    ("maximum", "limit"),
    ("max", "limit"),
    ("big", "size"),
    ("length", "size"),
    ("large", "size"),
    ("disconnect", "disconnected"),
    ("drop", "disconnected"),
    ("reconnect", "resume"),
    ("miss", "resume"),
    ("offline", "presence"),
    ("online", "presence"),
    ("away", "presence"),
    ("status", "presence"),
    ("moderator", "admin"),
    ("owner", "admin"),
    ("mod", "admin"),
    ("post", "send"),
    ("write", "send"),
    ("say", "send"),
];

/// Whether `word` (lower case, as produced by [`words`]) is a stop word.
pub(crate) fn is_stop_word(word: &str) -> bool {
    STOP_WORDS.contains(&word)
}

/// Lower-case words of `text`: letters and digits; apostrophes are dropped
/// inside words ("don't" becomes "dont"), everything else separates.
pub(crate) fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '\u{2019}'))
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric())
                .flat_map(char::to_lowercase)
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
}

/// A light suffix stemmer: plural `s`/`es`/`ies`, `ing`, `ed`, `ly`.
pub(crate) fn stem(word: &str) -> String {
    let w = word;
    let n = w.chars().count();
    let cut = |suffix: &str| w[..w.len() - suffix.len()].to_owned();
    let undouble = |s: String| {
        let b = s.as_bytes();
        let l = b.len();
        if l >= 3
            && b[l - 1] == b[l - 2]
            && !b"lsz".contains(&b[l - 1])
            && b[l - 1].is_ascii_alphabetic()
        {
            s[..l - 1].to_owned()
        } else {
            s
        }
    };
    if n > 4 && w.ends_with("ies") {
        return format!("{}y", &w[..w.len() - 3]);
    }
    if n > 4
        && (w.ends_with("sses") || w.ends_with("xes") || w.ends_with("ches") || w.ends_with("shes"))
    {
        return cut("es");
    }
    if n > 5 && w.ends_with("ing") {
        return undouble(cut("ing"));
    }
    if n > 4 && w.ends_with("ed") && !w.ends_with("eed") {
        return undouble(cut("ed"));
    }
    if n > 5 && w.ends_with("ly") {
        return cut("ly");
    }
    if n > 3 && w.ends_with('s') && !w.ends_with("ss") && !w.ends_with("us") && !w.ends_with("is") {
        return cut("s");
    }
    w.to_owned()
}

/// The normalised term of one word from [`words`]: `None` for a stop word,
/// else stemmed with synonyms folded.
pub(crate) fn term(word: &str) -> Option<String> {
    if is_stop_word(word) {
        return None;
    }
    let s = stem(word);
    Some(
        SYNONYMS
            .iter()
            .find(|(from, _)| *from == s || *from == word)
            .map_or(s, |(_, to)| (*to).to_owned()),
    )
}

/// The normalised terms of `text`: words, stop words removed, stemmed,
/// synonyms folded. Used alike for documents and queries.
pub(crate) fn terms(text: &str) -> Vec<String> {
    words(text).filter_map(|w| term(&w)).collect()
}

/// Splits `text` into pieces that concatenate back to it, each a word with
/// the whitespace before it: the deltas of a streamed reply.
pub(crate) fn word_deltas(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut prev_space = true;
    for (i, c) in text.char_indices() {
        let space = c.is_whitespace();
        if space && !prev_space && i > start {
            out.push(text[start..i].to_owned());
            start = i;
        }
        prev_space = space;
    }
    if start < text.len() {
        out.push(text[start..].to_owned());
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn words_are_lower_case_without_punctuation() {
        let w: Vec<_> = words("Don't PANIC: it's #general, ok?").collect();
        assert_eq!(w, ["dont", "panic", "its", "general", "ok"]);
    }

    #[test]
    fn stemming_meets_in_the_middle() {
        for (a, b) in [
            ("rooms", "room"),
            ("messages", "message"),
            ("joining", "join"),
            ("joined", "join"),
            ("replies", "reply"),
            ("running", "run"),
            ("quickly", "quick"),
            ("status", "status"),
            ("address", "address"),
        ] {
            assert_eq!(stem(a), stem(b), "{a} vs {b}");
        }
    }

    #[test]
    fn terms_drop_stop_words_and_fold_synonyms() {
        assert_eq!(
            terms("How do I make a new channel?"),
            ["create", "new", "room"]
        );
        assert_eq!(terms("Can I send a DM?"), ["send", "direct"]);
        assert!(terms("what is it").is_empty());
    }

    #[test]
    fn deltas_concatenate_back() {
        for text in ["Hello world", "  a\n\nb  ", "", "é ✓"] {
            assert_eq!(word_deltas(text).concat(), text);
        }
        assert_eq!(word_deltas("a b\nc"), ["a", " b", "\nc"]);
    }
}
