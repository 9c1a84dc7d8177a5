//! Magika's preprocessing and postprocessing, as its Python package does them
//! for `standard_v3_3` (magika 1.0.3, `magika/magika.py`): the same byte
//! features, the same small-file rules, the same thresholds and overwrite map.
//! Pure Rust, so it can be measured natively against its Wasm build.

#![allow(clippy::unreadable_literal)]

/// What the content-type table says of one label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContentType {
    pub label: &'static str,
    pub mime_type: &'static str,
    pub group: &'static str,
    pub description: &'static str,
    pub is_text: bool,
}

pub mod config {
    use super::ContentType;
    include!(concat!(env!("OUT_DIR"), "/magika_config.rs"));
}

use config::*;

/// The model's input length: `beg` then `end` features.
pub const FEATURES: usize = BEG_SIZE + END_SIZE;

/// What to do with a payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Prepared {
    /// Decided without the model (empty or too few bytes), with score 1.
    Decided(&'static str),
    /// Run the model on these features (values 0..=255, or the padding token).
    Model(Box<[i32; FEATURES]>),
}

/// Python's `bytes.strip()` whitespace: space, \t, \n, \r, \v, \f.
fn is_py_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Extracts the features the model needs from a whole payload.
pub fn prepare(content: &[u8]) -> Prepared {
    if content.is_empty() {
        return Prepared::Decided("empty");
    }
    if content.len() < MIN_FILE_SIZE_FOR_DL {
        return Prepared::Decided(few_bytes_label(content));
    }
    let block = BLOCK_SIZE.min(content.len());
    let mut features = Box::new([PADDING_TOKEN as i32; FEATURES]);

    // Beginning: lstrip the first block, take up to BEG_SIZE, pad at the end.
    let beg = &content[..block];
    let start = beg
        .iter()
        .position(|&b| !is_py_space(b))
        .unwrap_or(beg.len());
    let beg = &beg[start..];
    let beg = &beg[..beg.len().min(BEG_SIZE)];
    for (f, &b) in features[..BEG_SIZE].iter_mut().zip(beg) {
        *f = b as i32;
    }

    // End: rstrip the last block, take its last END_SIZE bytes, pad at the start.
    let end = &content[content.len() - block..];
    let stop = end
        .iter()
        .rposition(|&b| !is_py_space(b))
        .map_or(0, |i| i + 1);
    let end = &end[..stop];
    let end = &end[end.len().saturating_sub(END_SIZE)..];
    let offset = FEATURES - end.len();
    for (f, &b) in features[offset..].iter_mut().zip(end) {
        *f = b as i32;
    }

    // Too few meaningful bytes after stripping: decide on the raw bytes.
    if features[MIN_FILE_SIZE_FOR_DL - 1] == PADDING_TOKEN as i32 {
        return Prepared::Decided(few_bytes_label(&content[..block]));
    }
    Prepared::Model(features)
}

fn few_bytes_label(content: &[u8]) -> &'static str {
    if std::str::from_utf8(content).is_ok() {
        "txt"
    } else {
        "unknown"
    }
}

/// The content type of a label, from Magika's table.
pub fn content_type(label: &str) -> Option<&'static ContentType> {
    CONTENT_TYPES
        .binary_search_by(|c| c.label.cmp(label))
        .ok()
        .map(|i| &CONTENT_TYPES[i])
}

/// Magika's verdict on one payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// What the model said (None when the model was not needed).
    pub dl_label: Option<&'static str>,
    /// The label Magika reports, after the overwrite map and thresholds.
    pub output: &'static ContentType,
    pub score: f32,
}

/// Turns the model's scores (one per target label) into Magika's verdict,
/// in its default high-confidence mode.
pub fn decide(scores: &[f32]) -> Result<Verdict, String> {
    if scores.len() != TARGET_LABELS.len() {
        return Err(format!(
            "the model returned {} scores, Magika's config has {} labels",
            scores.len(),
            TARGET_LABELS.len()
        ));
    }
    // First maximum, as Python's max(range(...), key=...) picks it.
    let (best, score) =
        scores
            .iter()
            .copied()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |acc, (i, s)| if s > acc.1 { (i, s) } else { acc },
            );
    let dl_label = TARGET_LABELS[best];
    let mut label = OVERWRITE_MAP
        .iter()
        .find(|(from, _)| *from == dl_label)
        .map_or(dl_label, |(_, to)| *to);
    let threshold = THRESHOLDS
        .iter()
        .find(|(l, _)| *l == dl_label)
        .map_or(MEDIUM_CONFIDENCE_THRESHOLD, |(_, t)| *t);
    if score < threshold {
        let is_text = content_type(label).is_some_and(|c| c.is_text);
        label = if is_text { "txt" } else { "unknown" };
    }
    let output =
        content_type(label).ok_or_else(|| format!("label '{label}' is not in Magika's table"))?;
    Ok(Verdict {
        dl_label: Some(dl_label),
        output,
        score,
    })
}

/// The verdict for a payload decided without the model.
pub fn decided(label: &'static str) -> Verdict {
    Verdict {
        dl_label: None,
        output: content_type(label).expect("rule labels are in the table"),
        score: 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_tiny_payloads_skip_the_model() {
        assert_eq!(prepare(b""), Prepared::Decided("empty"));
        assert_eq!(prepare(b"hi"), Prepared::Decided("txt"));
        assert_eq!(prepare(b"\xff\xfe\x00"), Prepared::Decided("unknown"));
        // Over eight bytes, but three once the leading whitespace is stripped.
        assert_eq!(prepare(b"          abc"), Prepared::Decided("txt"));
        assert_eq!(
            prepare(b"\n\n\n\n\n\n\n\xff\xfe"),
            Prepared::Decided("unknown")
        );
    }

    #[test]
    fn features_strip_whitespace_and_pad() {
        let content = b"\n\t  #!/bin/sh\necho hello world\n\n \x0b";
        let Prepared::Model(f) = prepare(content) else {
            panic!("model expected")
        };
        // As Python's bytes.lstrip() / rstrip(): the beginning loses its
        // leading whitespace only, the end its trailing whitespace only.
        let beg = b"#!/bin/sh\necho hello world\n\n \x0b";
        let end = b"\n\t  #!/bin/sh\necho hello world";
        assert_eq!(&f[..beg.len()], beg.map(|b| b as i32));
        assert!(
            f[beg.len()..BEG_SIZE]
                .iter()
                .all(|&x| x == PADDING_TOKEN as i32)
        );
        assert!(
            f[BEG_SIZE..FEATURES - end.len()]
                .iter()
                .all(|&x| x == PADDING_TOKEN as i32)
        );
        assert_eq!(&f[FEATURES - end.len()..], end.map(|b| b as i32));
    }

    #[test]
    fn long_payloads_take_the_first_and_last_bytes() {
        let content: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8 + 1).collect();
        let Prepared::Model(f) = prepare(&content) else {
            panic!("model expected")
        };
        assert_eq!(f[0], content[0] as i32);
        assert_eq!(f[BEG_SIZE - 1], content[BEG_SIZE - 1] as i32);
        assert_eq!(f[BEG_SIZE], content[content.len() - END_SIZE] as i32);
        assert_eq!(f[FEATURES - 1], *content.last().unwrap() as i32);
    }

    #[test]
    fn low_scores_fall_back_to_txt_or_unknown() {
        let mut scores = vec![0.0; TARGET_LABELS.len()];
        let py = TARGET_LABELS.iter().position(|&l| l == "python").unwrap();
        scores[py] = 0.99;
        let v = decide(&scores).unwrap();
        assert_eq!((v.output.label, v.output.group), ("python", "code"));
        scores[py] = 0.3;
        assert_eq!(decide(&scores).unwrap().output.label, "txt");
        let elf = TARGET_LABELS.iter().position(|&l| l == "elf").unwrap();
        scores[elf] = 0.4;
        let v = decide(&scores).unwrap();
        assert_eq!((v.dl_label, v.output.label), (Some("elf"), "unknown"));
        assert!(decide(&scores[1..]).is_err());
    }
}
