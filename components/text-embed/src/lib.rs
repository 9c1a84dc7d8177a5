//! `text-embed`: a sentence embedding with all-MiniLM-L6-v2 (int8), and the
//! nearest of the deployment's labels.
//!
//! The body is the text (UTF-8), or, when the content type is JSON, an object
//! `{"text": "..."}`. The component tokenises it ([`tokenizer`], WordPiece as
//! Hugging Face's tokenizer.json says), runs the model, mean-pools the last
//! hidden state over the attention mask and L2-normalises it.
//!
//! The response is JSON: `embedding` (384 numbers), `tokens`, `truncated`
//! (the text had more than 128 tokens), and, when the deployment names
//! labels, `label`, `similarity` and `similarities` (cosine with the closest
//! reference sentence of each label).
//!
//! Deployment settings (`wasi:config`):
//! * `model`: graph name (default `minilm`);
//! * `label.NAME`: reference sentences of label NAME, separated by `|`;
//! * `mode`: `respond` (default) or `annotate` (headers `x-text-label`,
//!   `x-text-similarity`; needs labels);
//! * `embedding`: `false` leaves the embedding out of the response;
//! * `ids`: `true` adds the token ids to the response.

pub mod tokenizer;
mod unicode_tables;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use verge_sdk::{Error, Handler, Model, Outcome, Request, Tensor, settings};

/// The embedding size of all-MiniLM-L6-v2.
pub const DIM: usize = 384;

/// Mean of the hidden states (`[tokens, dim]`, row-major) over the tokens whose mask is 1.
pub fn mean_pool(hidden: &[f32], mask: &[i64], dim: usize) -> Vec<f32> {
    let mut sum = vec![0f32; dim];
    let mut count = 0f32;
    for (row, &m) in hidden.chunks_exact(dim).zip(mask) {
        if m != 0 {
            for (s, h) in sum.iter_mut().zip(row) {
                *s += h;
            }
            count += 1.0;
        }
    }
    // sentence-transformers clamps the count at 1e-9.
    let count = count.max(1e-9);
    sum.iter_mut().for_each(|s| *s /= count);
    sum
}

/// Scales `v` to unit length (sentence-transformers' Normalize, eps 1e-12).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb).max(1e-12)
}

/// Labels and their reference sentences from `label.NAME` settings.
pub fn parse_labels(settings: &[(String, String)]) -> Result<Vec<(String, Vec<String>)>, Error> {
    settings
        .iter()
        .map(|(name, value)| {
            let sentences: Vec<String> = value
                .split('|')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            if name.is_empty() || sentences.is_empty() {
                Err(Error::internal(format!(
                    "setting label.{name} = {value:?}: expected a label name and sentences separated by |"
                )))
            } else {
                Ok((name.clone(), sentences))
            }
        })
        .collect()
}

/// The text of a request: the body, or `text` of a JSON body.
pub fn request_text(req: &Request) -> Result<String, Error> {
    let text = if req.content_type.contains("json") {
        let v: serde_json::Value = serde_json::from_slice(&req.body)
            .map_err(|e| Error::invalid(format!("the body is not JSON: {e}")))?;
        v.get("text")
            .and_then(|t| t.as_str())
            .ok_or_else(|| Error::invalid("expected a JSON object with a string field \"text\""))?
            .to_string()
    } else {
        req.text()?.to_string()
    };
    if text.trim().is_empty() {
        return Err(Error::invalid("empty text: there is nothing to embed"));
    }
    Ok(text)
}

fn json_floats(v: &[f32]) -> String {
    let items: Vec<String> = v.iter().map(|x| format!("{x}")).collect();
    format!("[{}]", items.join(","))
}

pub struct TextEmbed;

fn embed(model: &Model, enc: &tokenizer::Encoding) -> Result<Vec<f32>, Error> {
    let n = enc.ids.len() as u32;
    let outputs = model.run(&[
        ("input_ids", Tensor::new(&[1, n], &enc.ids)?),
        ("attention_mask", Tensor::new(&[1, n], &enc.attention_mask)?),
        ("token_type_ids", Tensor::new(&[1, n], &enc.token_type_ids)?),
    ])?;
    let hidden = outputs
        .get("last_hidden_state")?
        .expect_dims(&[Some(1), Some(n), Some(DIM as u32)])?
        .values::<f32>()?;
    let mut v = mean_pool(&hidden, &enc.attention_mask, DIM);
    l2_normalize(&mut v);
    Ok(v)
}

/// Embeddings of the labels' reference sentences, by model name and sentence.
type References = HashMap<(String, String), Rc<[f32]>>;

thread_local! {
    /// Computed once per instance rather than on every request.
    static REFERENCES: RefCell<References> = RefCell::new(HashMap::new());
}

/// The embedding of a label's reference sentence, from the cache when it is there.
fn reference_embedding(model: &Model, sentence: &str) -> Result<Rc<[f32]>, Error> {
    let key = (model.name().to_string(), sentence.to_string());
    if let Some(v) = REFERENCES.with(|m| m.borrow().get(&key).cloned()) {
        return Ok(v);
    }
    let v: Rc<[f32]> = embed(model, &tokenizer::encode(sentence))?.into();
    REFERENCES.with(|m| m.borrow_mut().insert(key, v.clone()));
    Ok(v)
}

impl Handler for TextEmbed {
    fn handle(req: Request) -> Result<Outcome, Error> {
        let text = request_text(&req)?;
        let model = Model::load(&settings::get_or("model", "minilm".to_string())?)?;
        let labels = parse_labels(&settings::with_prefix("label.")?)?;
        let annotate = match settings::raw("mode")?.as_deref() {
            None | Some("respond") => false,
            Some("annotate") if !labels.is_empty() => true,
            Some(other) => {
                return Err(Error::internal(format!(
                    "setting mode = {other:?}: expected \"respond\", or \"annotate\" with label.NAME settings"
                )));
            }
        };
        let enc = tokenizer::encode(&text);
        let embedding = embed(&model, &enc)?;

        let mut similarities = Vec::new();
        for (name, sentences) in &labels {
            let mut best = f32::NEG_INFINITY;
            for s in sentences {
                best = best.max(cosine(&embedding, &reference_embedding(&model, s)?));
            }
            similarities.push((name.as_str(), best));
        }
        let nearest =
            similarities
                .iter()
                .copied()
                .fold(None, |acc: Option<(&str, f32)>, (n, s)| match acc {
                    Some((_, b)) if b >= s => acc,
                    _ => Some((n, s)),
                });
        if annotate {
            let (label, sim) = nearest.expect("labels are set");
            return Ok(Outcome::annotate([
                ("x-text-label", label.to_string()),
                ("x-text-similarity", format!("{sim}")),
            ]));
        }

        let mut body = format!(
            "{{\"tokens\":{},\"truncated\":{}",
            enc.ids.len(),
            enc.truncated
        );
        if let Some((label, sim)) = nearest {
            let all: Vec<String> = similarities
                .iter()
                .map(|(n, s)| format!("{}:{s}", verge_sdk::json_string(n)))
                .collect();
            body += &format!(
                ",\"label\":{},\"similarity\":{sim},\"similarities\":{{{}}}",
                verge_sdk::json_string(label),
                all.join(",")
            );
        }
        if settings::get_or("ids", false)? {
            let ids: Vec<String> = enc.ids.iter().map(i64::to_string).collect();
            body += &format!(",\"ids\":[{}]", ids.join(","));
        }
        if settings::get_or("embedding", true)? {
            body += &format!(",\"embedding\":{}", json_floats(&embedding));
        }
        body.push('}');
        Ok(Outcome::json(200, body))
    }
}

verge_sdk::export!(TextEmbed);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_follows_the_mask() {
        let hidden = [1.0, 2.0, 3.0, 4.0, 100.0, 100.0];
        assert_eq!(mean_pool(&hidden, &[1, 1, 0], 2), vec![2.0, 3.0]);
        let mut v = vec![3.0, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        assert!((cosine(&[1.0, 0.0], &[1.0, 1.0]) - 0.70710677).abs() < 1e-6);
    }

    #[test]
    fn labels_and_text() {
        let labels = parse_labels(&[("food".into(), "I ate | Dinner was good|".into())]).unwrap();
        assert_eq!(
            labels,
            vec![(
                "food".into(),
                vec!["I ate".into(), "Dinner was good".into()]
            )]
        );
        assert!(parse_labels(&[("x".into(), " | ".into())]).is_err());
        let req = |ct: &str, body: &str| Request {
            content_type: ct.into(),
            body: body.as_bytes().to_vec(),
            ..Request::default()
        };
        assert_eq!(request_text(&req("text/plain", "hi")).unwrap(), "hi");
        assert_eq!(
            request_text(&req("application/json", r#"{"text":"hi"}"#)).unwrap(),
            "hi"
        );
        for (ct, body) in [
            ("", "  \n"),
            ("application/json", "{}"),
            ("application/json", r#"{"text":""}"#),
        ] {
            assert!(
                matches!(request_text(&req(ct, body)), Err(Error::InvalidInput(_))),
                "{body}"
            );
        }
    }
}
