//! `image-classify`: a PNG or JPEG in, ImageNet's top-k classes out, with
//! EfficientNet-Lite0 (`models/efficientnet_lite0.py` converts its weights).
//!
//! The component decodes the image, crops its centre square, resizes it to
//! 224×224 and normalises it ([`image`]), runs the model and answers JSON:
//! `{"top": [{"index", "label", "score"}, ...]}`.
//!
//! Deployment settings (`wasi:config`): `model` (graph name, default
//! `efficientnet-lite0`), `top-k` (1 to 20, default 5), `mode`: `respond`
//! (default) or `annotate` (headers `x-image-label`, `x-image-score`).

pub mod image;

mod labels {
    include!(concat!(env!("OUT_DIR"), "/labels.rs"));
}

pub use labels::LABELS;
use verge_sdk::{Error, Handler, Model, Outcome, Request, Tensor, json_string, settings};

/// The `k` best classes, best first (ties: lower index first).
pub fn top_k(scores: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.into_iter().take(k).map(|i| (i, scores[i])).collect()
}

/// The JSON answer for the top classes.
pub fn json(top: &[(usize, f32)]) -> String {
    let items: Vec<String> = top
        .iter()
        .map(|&(i, s)| {
            format!(
                "{{\"index\":{i},\"label\":{},\"score\":{s}}}",
                json_string(LABELS[i])
            )
        })
        .collect();
    format!("{{\"top\":[{}]}}", items.join(","))
}

pub struct ImageClassify;

impl Handler for ImageClassify {
    fn handle(req: Request) -> Result<Outcome, Error> {
        if req.truncated {
            return Ok(Outcome::defer(format!(
                "image truncated by the host at {} bytes",
                req.body.len()
            )));
        }
        let k: usize = settings::get_in("top-k", 5, 1..=20)?;
        let annotate = settings::annotate()?;
        let input = image::preprocess(&image::decode(&req.body)?);
        let model = Model::load(&settings::get_or(
            "model",
            "efficientnet-lite0".to_string(),
        )?)?;
        let s = image::SIZE as u32;
        let outputs = model.run(&[("input", Tensor::new(&[1, 3, s, s], &input)?)])?;
        let scores = outputs
            .get("probabilities")?
            .expect_dims(&[Some(1), Some(LABELS.len() as u32)])?
            .values::<f32>()?;
        let top = top_k(&scores, k);
        if annotate {
            let (i, score) = top[0];
            return Ok(Outcome::annotate([
                ("x-image-label", LABELS[i].to_string()),
                ("x-image-score", format!("{score}")),
            ]));
        }
        Ok(Outcome::json(200, json(&top)))
    }
}

verge_sdk::export!(ImageClassify);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_classes() {
        let top = top_k(&[0.1, 0.5, 0.2, 0.5], 3);
        assert_eq!(top, vec![(1, 0.5), (3, 0.5), (2, 0.2)]);
        assert_eq!(LABELS[285], "Egyptian Mau");
        let j = json(&top[..1]);
        assert!(
            j.starts_with("{\"top\":[{\"index\":1,\"label\":\"goldfish\""),
            "{j}"
        );
    }
}
