//! The `face-detect` component on the device host, its model on the
//! TensorFlow Lite engine, against MediaPipe's own Python face detector
//! (0.10.21, `models/face_detect_reference.py`, JSON lines named by
//! VERGE_FACE_REFERENCE) on photographs from scikit-image's wheel: the same
//! number of faces, and each box within IoU 0.9 of MediaPipe's.

use std::time::{Duration, Instant};

use serde_json::Value;
use verge_device::nn::{Backend, EngineSpec};
use verge_device::runtime::{Outcome, Response};
use verge_testkit::Host;

fn host() -> Host {
    let model = verge_testkit::model(
        "mediapipe-face-detection-short-range",
        "face_detection_short_range.tflite",
        "python3 models/fetch.py",
    );
    Host::with_engine(
        "face-detect",
        model,
        verge_testkit::wasm("face_detect"),
        Duration::from_secs(30),
        EngineSpec::default(),
    )
}

fn iou(a: &Value, b: &Value) -> f64 {
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap();
    let (ax, ay, aw, ah) = (f(a, "x"), f(a, "y"), f(a, "width"), f(a, "height"));
    let (bx, by, bw, bh) = (f(b, "x"), f(b, "y"), f(b, "width"), f(b, "height"));
    let w = ((ax + aw).min(bx + bw) - ax.max(bx)).max(0.0);
    let h = ((ay + ah).min(by + bh) - ay.max(by)).max(0.0);
    let inter = w * h;
    inter / (aw * ah + bw * bh - inter)
}

fn respond(outcome: Outcome) -> Response {
    match outcome {
        Outcome::Respond(r) => r,
        other => panic!("expected a response, got {other:?}"),
    }
}

#[test]
fn agrees_with_mediapipe_on_photographs() {
    let rows = verge_testkit::reference("VERGE_FACE_REFERENCE", "models/face_detect_reference.py");
    assert!(rows.len() >= 6, "{} reference rows", rows.len());
    let host = host();
    assert_eq!(
        host.runtime.graphs().loaded()[0].backend,
        Backend::Tensorflowlite
    );
    let (mut faces, mut worst) = (0, 1.0f64);
    for row in &rows {
        let file = row["file"].as_str().unwrap();
        let body = std::fs::read(row["image"].as_str().unwrap()).unwrap();
        let started = Instant::now();
        let r = respond(
            host.call("", &body, &[])
                .unwrap_or_else(|e| panic!("{file}: {e}")),
        );
        let took = started.elapsed();
        let got: Value = serde_json::from_slice(&r.body).unwrap();
        let (got, want) = (
            got["faces"].as_array().unwrap(),
            row["faces"].as_array().unwrap(),
        );
        assert_eq!(
            got.len(),
            want.len(),
            "{file}: {got:?} against MediaPipe's {want:?}"
        );
        for (g, w) in got.iter().zip(want) {
            let iou = iou(&g["box"], &w["box"]);
            let score = (g["score"].as_f64().unwrap() - w["score"].as_f64().unwrap()).abs();
            assert!(iou >= 0.9, "{file}: IoU {iou} ({g} against {w})");
            assert!(score < 0.01, "{file}: score {g} against {w}");
            worst = worst.min(iou);
            faces += 1;
        }
        println!("{file}: {} faces, {took:.1?} on the device host", got.len());
    }
    println!(
        "{} photos, {faces} faces, every box within IoU {worst:.4} of MediaPipe's",
        rows.len()
    );
    assert!(faces >= 4, "{faces} faces in all");
}

#[test]
fn annotates_limits_and_refuses_what_is_not_an_image() {
    let rows = verge_testkit::reference("VERGE_FACE_REFERENCE", "models/face_detect_reference.py");
    let pair = rows
        .iter()
        .find(|r| r["faces"].as_array().unwrap().len() == 2)
        .expect("a photo with two faces");
    let body = std::fs::read(pair["image"].as_str().unwrap()).unwrap();
    let host = host();
    match host.call("", &body, &[("mode", "annotate")]).unwrap() {
        Outcome::Annotate(headers) => {
            assert!(
                headers.iter().any(|(k, v)| k == "x-faces" && v == "2"),
                "{headers:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    let one: Value =
        serde_json::from_slice(&respond(host.call("", &body, &[("max-faces", "1")]).unwrap()).body)
            .unwrap();
    assert_eq!(one["faces"].as_array().unwrap().len(), 1);
    let none: Value = serde_json::from_slice(
        &respond(host.call("", &body, &[("min-score", "0.9999")]).unwrap()).body,
    )
    .unwrap();
    assert_eq!(none["faces"].as_array().unwrap().len(), 0);
    let e = host
        .call("", b"not an image", &[])
        .expect_err("not an image is an error")
        .to_string();
    assert!(
        e.contains("PNG") || e.contains("JPEG") || e.contains("image"),
        "{e}"
    );
    // The host keeps serving after it.
    assert!(host.call("", &body, &[]).is_ok());
}
