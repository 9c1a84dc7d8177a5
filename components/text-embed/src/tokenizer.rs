//! BERT's uncased WordPiece tokenisation, as Hugging Face `tokenizers` does it
//! for all-MiniLM-L6-v2's tokenizer.json (checked by build.rs): BertNormalizer
//! (clean text, space around CJK ideographs, strip accents, lower-case),
//! BertPreTokenizer (split on whitespace and punctuation), greedy
//! longest-match-first WordPiece with `##` continuations, then
//! `[CLS] … [SEP]` truncated to the model's maximum length.

use crate::unicode_tables::{DECOMPOSED, FORMAT_CHARS, NONSPACING_MARKS, PUNCTUATION};

mod vocab {
    include!(concat!(env!("OUT_DIR"), "/vocab.rs"));
}

pub use vocab::{CLS, MAX_LENGTH, SEP, UNK};

/// What the model takes for one text.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoding {
    pub ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub token_type_ids: Vec<i64>,
    /// True when the text had more tokens than the model takes.
    pub truncated: bool,
}

fn in_ranges(c: char, ranges: &[(u32, u32)]) -> bool {
    let c = c as u32;
    ranges
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

fn is_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r') || c.is_whitespace()
}

fn is_control(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\r') && (c.is_control() || in_ranges(c, FORMAT_CHARS))
}

fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || in_ranges(c, PUNCTUATION)
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF
        | 0x3400..=0x4DBF
        | 0x20000..=0x2A6DF
        | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F
        | 0x2B820..=0x2CEAF
        | 0xF900..=0xFAFF
        | 0x2F800..=0x2FA1F)
}

/// NFD without the nonspacing marks, pushed onto `out`.
fn push_stripped(c: char, out: &mut String) {
    let cp = c as u32;
    if (0xAC00..=0xD7A3).contains(&cp) {
        // Hangul syllable: L V (T) jamo.
        let s = cp - 0xAC00;
        let (l, v, t) = (0x1100 + s / 588, 0x1161 + (s % 588) / 28, s % 28);
        out.extend(char::from_u32(l));
        out.extend(char::from_u32(v));
        if t != 0 {
            out.extend(char::from_u32(0x11A7 + t));
        }
    } else if in_ranges(c, NONSPACING_MARKS) {
    } else if let Ok(i) = DECOMPOSED.binary_search_by_key(&cp, |&(k, _)| k) {
        out.push_str(DECOMPOSED[i].1);
    } else {
        out.push(c);
    }
}

/// BertNormalizer with clean_text, handle_chinese_chars, strip_accents and lowercase.
pub fn normalize(text: &str) -> String {
    let mut cleaned = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\0' || c == '\u{fffd}' || is_control(c) {
            continue;
        }
        if is_whitespace(c) {
            cleaned.push(' ');
        } else if is_cjk(c) {
            cleaned.push(' ');
            cleaned.push(c);
            cleaned.push(' ');
        } else {
            push_stripped(c, &mut cleaned);
        }
    }
    cleaned.chars().flat_map(char::to_lowercase).collect()
}

/// BertPreTokenizer: words split on whitespace, each punctuation mark a word of its own.
pub fn pre_tokenize(text: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        if is_whitespace(c) || is_punctuation(c) {
            if let Some(s) = start.take() {
                words.push(&text[s..i]);
            }
            if is_punctuation(c) {
                words.push(&text[i..i + c.len_utf8()]);
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        words.push(&text[s..]);
    }
    words
}

fn vocab_token(i: usize) -> &'static str {
    &vocab::TOKENS[vocab::STARTS[i] as usize..vocab::STARTS[i + 1] as usize]
}

fn lookup(token: &str) -> Option<i64> {
    let (mut lo, mut hi) = (0, vocab::IDS.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        match vocab_token(mid).as_bytes().cmp(token.as_bytes()) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return Some(i64::from(vocab::IDS[mid])),
        }
    }
    None
}

/// WordPiece on one word: longest prefix first, `##` continuations, `[UNK]`
/// for the whole word when any part has no piece.
pub fn word_piece(word: &str, out: &mut Vec<i64>) {
    if word.chars().count() > vocab::MAX_INPUT_CHARS_PER_WORD {
        out.push(UNK);
        return;
    }
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut piece = String::new();
    while start < word.len() {
        let mut end = word.len();
        let mut found = None;
        while start < end {
            piece.clear();
            if start > 0 {
                piece.push_str("##");
            }
            piece.push_str(&word[start..end]);
            if let Some(id) = lookup(&piece) {
                found = Some(id);
                break;
            }
            // Back off one character.
            end = word[..end].char_indices().last().map_or(start, |(i, _)| i);
        }
        match found {
            Some(id) => {
                pieces.push(id);
                start = end;
            }
            None => {
                out.push(UNK);
                return;
            }
        }
    }
    out.extend(pieces);
}

/// The model's inputs for one text: `[CLS] tokens [SEP]`, at most `MAX_LENGTH` ids.
pub fn encode(text: &str) -> Encoding {
    let normalized = normalize(text);
    let mut ids = vec![CLS];
    for word in pre_tokenize(&normalized) {
        word_piece(word, &mut ids);
    }
    let truncated = ids.len() + 1 > MAX_LENGTH;
    ids.truncate(MAX_LENGTH - 1);
    ids.push(SEP);
    let n = ids.len();
    Encoding {
        ids,
        attention_mask: vec![1; n],
        token_type_ids: vec![0; n],
        truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(tok: &str) -> i64 {
        lookup(tok).unwrap_or_else(|| panic!("{tok} not in the vocabulary"))
    }

    #[test]
    fn vocabulary() {
        assert_eq!(vocab::IDS.len(), 30522);
        assert_eq!(
            (id("[PAD]"), id("[UNK]"), id("[CLS]"), id("[SEP]")),
            (0, UNK, CLS, SEP)
        );
        assert_eq!((CLS, SEP, UNK), (101, 102, 100));
        assert_eq!(id("##ing"), 2075);
        assert_eq!(lookup("notaword"), None);
        assert!((1..vocab::IDS.len()).all(|i| vocab_token(i - 1) < vocab_token(i)));
    }

    #[test]
    fn normalisation() {
        assert_eq!(normalize("Héllo\tWÖRLD\u{200b}!"), "hello world!");
        assert_eq!(normalize("naïve café Ångström"), "naive cafe angstrom");
        assert_eq!(normalize("中文"), " 中  文 ");
        assert_eq!(normalize("a\u{0}b\u{fffd}c\r\nd"), "abc  d");
    }

    #[test]
    fn punctuation_splits_words() {
        assert_eq!(
            pre_tokenize("hello, world! it's 3.5$"),
            [
                "hello", ",", "world", "!", "it", "'", "s", "3", ".", "5", "$"
            ]
        );
        assert_eq!(pre_tokenize("  «quoted»  "), ["«", "quoted", "»"]);
    }

    #[test]
    fn word_pieces() {
        let e = encode("A man is eating food.");
        assert_eq!(
            e.ids,
            [
                CLS,
                id("a"),
                id("man"),
                id("is"),
                id("eating"),
                id("food"),
                id("."),
                SEP
            ]
        );
        assert_eq!(e.attention_mask, vec![1; 8]);
        assert_eq!(e.token_type_ids, vec![0; 8]);
        let mut out = vec![];
        word_piece("unaffable", &mut out);
        assert!(out.len() > 1 && !out.contains(&UNK), "{out:?}");
        out.clear();
        word_piece("\u{10ffff}", &mut out);
        assert_eq!(out, [UNK]);
        out.clear();
        word_piece(&"a".repeat(101), &mut out);
        assert_eq!(out, [UNK]);
    }

    #[test]
    fn long_texts_are_truncated() {
        let e = encode(&"word ".repeat(500));
        assert_eq!(e.ids.len(), MAX_LENGTH);
        assert_eq!((e.ids[0], e.ids[MAX_LENGTH - 1]), (CLS, SEP));
        assert!(e.truncated);
        assert!(!encode("short").truncated);
    }
}
