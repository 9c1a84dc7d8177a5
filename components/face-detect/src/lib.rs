//! `face-detect`: a PNG or JPEG in, the faces in it out, with MediaPipe's
//! BlazeFace short-range model (`face_detection_short_range.tflite` of the
//! mediapipe 0.10.21 wheel; `models/manifest.toml`,
//! `mediapipe-face-detection-short-range`).
//!
//! The component decodes the image (`verge-imaging`), letterboxes it into the
//! model's 128×128 RGB input with values in [-1, 1] ([`preprocess`]), runs
//! the model (input `input` [1,128,128,3]; outputs `regressors` [1,896,16]
//! and `classificators` [1,896,1]), decodes the 896 anchors, merges
//! overlapping boxes by weighted non-maximum suppression and maps the result
//! back onto the image ([`faces`], maths in [`detection`]), as MediaPipe's
//! face detection graph does. It answers JSON, best score first, in pixels
//! of the original image (boxes may reach slightly past its edges):
//!
//! `{"faces":[{"box":{"x","y","width","height"},"score","keypoints":[[x,y],...]}]}`
//!
//! with six keypoints: right eye, left eye, nose tip, mouth centre, right ear
//! tragion, left ear tragion (the subject's right and left).
//!
//! Deployment settings (`wasi:config`): `model` (graph name, default
//! `face-detect`), `min-score` (0 to 1, default 0.5), `max-faces` (1 to 100,
//! default 10), `mode`: `respond` (default) or `annotate` (header `x-faces`:
//! the number of faces).

pub mod detection;

use std::sync::OnceLock;

use detection::{Anchor, AnchorOptions, DecodeOptions, Detection, Letterbox};
use verge_imaging::Rgb;
use verge_sdk::{Error, Handler, Model, Outcome, Request, Tensor, json_number, settings};

/// The model's input side.
pub const SIZE: usize = 128;
/// Anchors, hence rows of the model's outputs.
pub const NUM_BOXES: usize = 896;
/// Values per anchor in `regressors`: a box (4) and six keypoints (12).
pub const NUM_COORDS: usize = 16;
/// Boxes overlapping a better one by more than this (IoU) merge into it.
pub const MIN_SUPPRESSION_THRESHOLD: f32 = 0.3;

fn anchors() -> &'static [Anchor] {
    static ANCHORS: OnceLock<Vec<Anchor>> = OnceLock::new();
    ANCHORS.get_or_init(|| detection::ssd_anchors(&AnchorOptions::short_range()))
}

/// The model's input, `[1, 128, 128, 3]` floats in [-1, 1] (interleaved
/// RGB), and where the image lies in it: the whole image scaled to fit,
/// centred, black around it.
pub fn preprocess(img: &Rgb) -> (Vec<f32>, Letterbox) {
    let letterbox = Letterbox::new(img.width, img.height, SIZE, SIZE);
    let (x, y) = letterbox.grids(SIZE, SIZE);
    let small = verge_imaging::warp_bilinear(img, SIZE, SIZE, x, y);
    let scale = 2.0f32 / 255.0;
    let input = small
        .pixels
        .iter()
        .map(|&v| f32::from(v) * scale - 1.0)
        .collect();
    (input, letterbox)
}

/// The faces scoring at least `min_score`, at most `max_faces`, best first,
/// in image pixels, from the model's raw outputs (`regressors`: 896 × 16,
/// `scores`: 896 logits).
pub fn faces(
    regressors: &[f32],
    scores: &[f32],
    letterbox: &Letterbox,
    min_score: f32,
    max_faces: usize,
) -> Vec<Detection> {
    let found = detection::decode(
        regressors,
        scores,
        anchors(),
        &DecodeOptions::short_range(min_score),
    );
    detection::weighted_nms(&found, MIN_SUPPRESSION_THRESHOLD, max_faces)
        .iter()
        .map(|d| letterbox.detection_to_image(d))
        .collect()
}

fn num(x: f32) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        json_number(f64::from(x))
    }
}

/// The JSON answer for faces in image pixels.
pub fn json(faces: &[Detection]) -> String {
    let items: Vec<String> = faces
        .iter()
        .map(|f| {
            let kps: Vec<String> = f
                .keypoints
                .iter()
                .map(|p| format!("[{},{}]", num(p[0]), num(p[1])))
                .collect();
            format!(
                "{{\"box\":{{\"x\":{},\"y\":{},\"width\":{},\"height\":{}}},\"score\":{},\"keypoints\":[{}]}}",
                num(f.xmin),
                num(f.ymin),
                num(f.width),
                num(f.height),
                num(f.score),
                kps.join(",")
            )
        })
        .collect();
    format!("{{\"faces\":[{}]}}", items.join(","))
}

struct Settings {
    model: String,
    min_score: f32,
    max_faces: usize,
    annotate: bool,
}

fn read_settings() -> Result<Settings, Error> {
    let min_score: f32 = settings::get_in("min-score", 0.5, 0.0..=1.0)?;
    let max_faces: usize = settings::get_in("max-faces", 10, 1..=100)?;
    let annotate = settings::annotate()?;
    Ok(Settings {
        model: settings::get_or("model", "face-detect".to_string())?,
        min_score,
        max_faces,
        annotate,
    })
}

pub struct FaceDetect;

impl Handler for FaceDetect {
    fn handle(req: Request) -> Result<Outcome, Error> {
        if req.truncated {
            return Ok(Outcome::defer(format!(
                "image truncated by the host at {} bytes",
                req.body.len()
            )));
        }
        let s = read_settings()?;
        let (input, letterbox) = preprocess(&verge_imaging::decode(&req.body)?);
        let model = Model::load(&s.model)?;
        let side = SIZE as u32;
        let outputs = model.run(&[("input", Tensor::new(&[1, side, side, 3], &input)?)])?;
        let boxes = NUM_BOXES as u32;
        let regressors = outputs
            .get("regressors")?
            .expect_dims(&[Some(1), Some(boxes), Some(NUM_COORDS as u32)])?
            .values::<f32>()?;
        let scores = outputs
            .get("classificators")?
            .expect_dims(&[Some(1), Some(boxes), Some(1)])?
            .values::<f32>()?;
        let found = faces(&regressors, &scores, &letterbox, s.min_score, s.max_faces);
        if s.annotate {
            return Ok(Outcome::annotate([("x-faces", found.len().to_string())]));
        }
        Ok(Outcome::json(200, json(&found)))
    }
}

verge_sdk::export!(FaceDetect);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocessing_letterboxes_into_minus_one_to_one() {
        // A white 256×128 image: rows 32 to 95 of the tensor are white (1),
        // the padding above and below is black (-1).
        let img = Rgb {
            width: 256,
            height: 128,
            pixels: vec![255; 256 * 128 * 3],
        };
        let (x, lb) = preprocess(&img);
        assert_eq!(x.len(), SIZE * SIZE * 3);
        let row = |y: usize| &x[y * SIZE * 3..(y + 1) * SIZE * 3];
        assert!(row(0).iter().all(|&v| v == -1.0));
        assert!(row(31).iter().all(|&v| v == -1.0));
        assert!(row(32).iter().all(|&v| v == 1.0));
        assert!(row(95).iter().all(|&v| v == 1.0));
        assert!(row(96).iter().all(|&v| v == -1.0));
        assert_eq!(lb.to_image(0.5, 0.5), [128.0, 64.0]);
    }

    /// Raw outputs: for each (anchor, size in tensor px, logit), a square box
    /// centred on the anchor.
    fn outputs_with(hits: &[(usize, f32, f32)]) -> (Vec<f32>, Vec<f32>) {
        let mut reg = vec![0f32; NUM_BOXES * NUM_COORDS];
        let mut scores = vec![-10f32; NUM_BOXES];
        for &(i, size, logit) in hits {
            reg[i * NUM_COORDS + 2] = size;
            reg[i * NUM_COORDS + 3] = size;
            scores[i] = logit;
        }
        (reg, scores)
    }

    #[test]
    fn faces_from_raw_outputs() {
        // Anchors 0 and 1 share a cell (centre 4, 4 px in the tensor): one
        // merged face. The last anchor (centre 120, 120 px) is another.
        let (reg, scores) = outputs_with(&[(0, 8.0, 3.0), (1, 8.0, 1.0), (895, 16.0, 2.0)]);
        let lb = Letterbox::new(256, 256, SIZE, SIZE);
        let f = faces(&reg, &scores, &lb, 0.5, 10);
        assert_eq!(f.len(), 2);
        assert!(f[0].score > f[1].score);
        // In image pixels (×2): centre (8, 8), 16 px wide.
        let near = |a: f32, b: f32| (a - b).abs() < 1e-4;
        assert!(near(f[0].xmin, 0.0) && near(f[0].ymin, 0.0), "{f:?}");
        assert!(near(f[0].width, 16.0) && near(f[0].height, 16.0), "{f:?}");
        assert!(near(f[1].xmin, 224.0) && near(f[1].width, 32.0), "{f:?}");
        assert_eq!(f[0].keypoints.len(), 6);
        assert!(
            f[0].keypoints
                .iter()
                .all(|p| near(p[0], 8.0) && near(p[1], 8.0))
        );
        // Thresholds and the cap.
        assert_eq!(faces(&reg, &scores, &lb, 0.9, 10).len(), 1);
        assert_eq!(faces(&reg, &scores, &lb, 0.5, 1).len(), 1);
        assert!(faces(&reg, &vec![-10.0; NUM_BOXES], &lb, 0.5, 10).is_empty());
    }

    #[test]
    fn json_answer() {
        let f = Detection {
            xmin: 1.5,
            ymin: 2.0,
            width: 10.0,
            height: 12.25,
            score: 0.75,
            keypoints: vec![[3.0, 4.5]; 6],
        };
        let j = json(&[f]);
        assert!(
            j.starts_with(
                "{\"faces\":[{\"box\":{\"x\":1.5,\"y\":2,\"width\":10,\"height\":12.25},\"score\":0.75,\"keypoints\":[[3,4.5],"
            ),
            "{j}"
        );
        assert_eq!(json(&[]), "{\"faces\":[]}");
        assert_eq!(num(f32::NAN), "null");
    }

    #[test]
    fn requests_natively() {
        let req = |body: &[u8], truncated| Request {
            body: body.to_vec(),
            truncated,
            ..Request::default()
        };
        // Not an image: invalid input, as image-classify says it.
        assert!(matches!(
            FaceDetect::handle(req(b"GIF89a", false)),
            Err(Error::InvalidInput(m)) if m.contains("not a PNG or JPEG")
        ));
        assert!(matches!(
            FaceDetect::handle(req(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", false)),
            Err(Error::InvalidInput(m)) if m.contains("invalid PNG")
        ));
        // A truncated body is deferred, not decoded.
        assert!(matches!(
            FaceDetect::handle(req(b"\xff\xd8\xff", true)),
            Ok(Outcome::Defer(_))
        ));
    }
}
