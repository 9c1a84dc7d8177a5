//! The `image-classify` component on the device host against onnxruntime on
//! the same preprocessed tensor (`tests/reference/image_classify_reference.py`,
//! JSON lines named by VERGE_IMAGE_REFERENCE): scikit-image's photographs of a
//! cat and a cup of coffee (PNG) and a rocket (JPEG).

use std::time::{Duration, Instant};

use serde_json::Value;
use verge_device::nn::EngineSpec;
use verge_device::runtime::{CallError, GuestError, Outcome};
use verge_nn::{ElementType, Tensor};
use verge_testkit::Host;

fn reference() -> Vec<Value> {
    verge_testkit::reference(
        "VERGE_IMAGE_REFERENCE",
        "tests/reference/image_classify_reference.py",
    )
}

fn model() -> std::path::PathBuf {
    verge_testkit::model(
        "efficientnet-lite0",
        "model.onnx",
        "python models/efficientnet_lite0.py",
    )
}

fn host() -> Host {
    host_on(EngineSpec::default())
}

fn host_on(engine: EngineSpec) -> Host {
    let wasm = verge_testkit::wasm("image_classify");
    Host::with_engine(
        "efficientnet-lite0",
        model(),
        wasm,
        Duration::from_secs(60),
        engine,
    )
}

/// The reference's own preprocessed tensor for a row.
fn tensor(row: &Value) -> Tensor {
    let data = std::fs::read(row["tensor"].as_str().unwrap()).unwrap();
    Tensor::new(vec![1, 3, 224, 224], ElementType::F32, data)
}

fn call(host: &Host, body: &[u8], settings: &[(&str, &str)]) -> Result<Outcome, CallError> {
    host.call("", body, settings)
}

fn top(probabilities: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..probabilities.len()).collect();
    idx.sort_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]));
    idx.truncate(k);
    idx
}

#[test]
fn agrees_with_onnxruntime_on_photographs() {
    let rows = reference();
    assert_eq!(
        rows.len(),
        3,
        "the reference has {} images, expected 3",
        rows.len()
    );
    let host = host();
    let mut session = host
        .runtime
        .graphs()
        .get("efficientnet-lite0")
        .unwrap()
        .context();
    let (mut ours, mut native, mut ort) = (Duration::ZERO, Duration::ZERO, 0f64);
    for row in &rows {
        let image = row["image"].as_str().unwrap();
        let body = std::fs::read(image).unwrap_or_else(|e| panic!("{image}: {e}"));
        let want: Vec<f64> = row["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();

        let started = Instant::now();
        let outcome = call(&host, &body, &[("top-k", "5")]);
        ours += started.elapsed();
        let Ok(Outcome::Respond(r)) = outcome else {
            panic!("{image}: {outcome:?}")
        };
        let got: Value = serde_json::from_slice(&r.body).unwrap();
        let got = got["top"].as_array().unwrap();
        assert_eq!(got.len(), 5);
        let expected = top(&want, 5);
        assert_eq!(
            got[0]["index"].as_u64().unwrap() as usize,
            expected[0],
            "{image}: top-1 differs from onnxruntime: {got:?}"
        );
        // PNG decodes to the same pixels in both: the same tensor, scores within 1e-4.
        // JPEG decoders (zune-jpeg, libjpeg) may differ by a level here and there.
        let tolerance = if row["format"] == "png" { 1e-4 } else { 2e-2 };
        for item in got {
            let i = item["index"].as_u64().unwrap() as usize;
            let d = (item["score"].as_f64().unwrap() - want[i]).abs();
            assert!(d <= tolerance, "{image}: class {i} score differs by {d}");
        }
        println!(
            "{image}: {} ({:.3}), onnxruntime {} ({:.3})",
            got[0]["label"], got[0]["score"], expected[0], want[expected[0]]
        );

        // Native tract on the reference's own tensor agrees with onnxruntime too.
        let input = tensor(row);
        let started = Instant::now();
        let out = session
            .compute_named(vec![("input".into(), input)])
            .unwrap();
        native += started.elapsed();
        let p: Vec<f32> = out[0]
            .1
            .data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let d = p
            .iter()
            .zip(&want)
            .map(|(a, b)| (f64::from(*a) - b).abs())
            .fold(0f64, f64::max);
        assert!(
            d <= 1e-4,
            "{image}: native tract differs from onnxruntime by {d}"
        );
        ort += row["ort_ms"].as_f64().unwrap();
    }
    let n = rows.len() as f64;
    println!(
        "image-classify: mean per request: device host {:.1} ms (decode + preprocess + model, fresh instance), \
         native tract {:.1} ms, onnxruntime (Python, 1 thread) {:.1} ms (model only)",
        ours.as_secs_f64() * 1000.0 / n,
        native.as_secs_f64() * 1000.0 / n,
        ort / n
    );
}

#[test]
fn tract_and_onnxruntime_agree() {
    let inputs: Vec<_> = reference()
        .iter()
        .map(|row| vec![("input".to_string(), tensor(row))])
        .collect();
    let a = verge_testkit::backends_agree(&model(), &inputs);
    a.assert_agree("efficientnet-lite0", inputs.len());
}

#[test]
fn openvino_and_the_cpu_provider_agree() {
    let Some(lib) = verge_testkit::openvino_child("openvino_and_the_cpu_provider_agree") else {
        return;
    };
    let inputs: Vec<_> = reference()
        .iter()
        .map(|row| vec![("input".to_string(), tensor(row))])
        .collect();
    let a = verge_testkit::openvino_agrees(&lib, &model(), &inputs);
    a.assert_agree("efficientnet-lite0", inputs.len());
    // One OpenVINO subgraph: the whole model.
    assert_eq!(
        a.node_runs.keys().collect::<Vec<_>>(),
        ["OpenVINOExecutionProvider"]
    );
}

#[test]
fn photographs_make_sense() {
    let host = host();
    let dir = verge_testkit::models_dir();
    // ImageNet's cats (tabby, tiger cat, Persian, Siamese, Egyptian) and coffee (mug, espresso, cup).
    let cases: [(&str, &[u64]); 2] = [
        ("skimage-chelsea/chelsea.png", &[281, 282, 283, 284, 285]),
        ("skimage-coffee/coffee.png", &[504, 967, 968]),
    ];
    for (file, classes) in cases {
        let path = dir.join(file);
        let body = std::fs::read(&path).unwrap_or_else(|e| {
            panic!("{}: {e}: run python3 models/fetch.py first", path.display())
        });
        match call(&host, &body, &[("mode", "annotate")]) {
            Ok(Outcome::Annotate(pairs)) => {
                assert_eq!(pairs[0].0, "x-image-label");
                let label = &pairs[0].1;
                let i = image_classify::LABELS
                    .iter()
                    .position(|l| l == label)
                    .unwrap() as u64;
                assert!(classes.contains(&i), "{file}: top-1 {label} ({i})");
            }
            other => panic!("{file}: {other:?}"),
        }
    }
}

#[test]
fn bad_inputs_are_invalid_input() {
    let host = host();
    let cases: [(&[u8], &str); 4] = [
        (b"", "not a PNG or JPEG"),
        (b"GIF89a....", "not a PNG or JPEG"),
        (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0", "invalid PNG"),
        (&[0xff, 0xd8, 0xff, 0xe0, 0, 16, b'J', b'F'], "invalid JPEG"),
    ];
    for (body, expected) in cases {
        match call(&host, body, &[]) {
            Err(CallError::Component(GuestError::InvalidInput(m))) => {
                assert!(m.contains(expected), "{m:?} should say {expected:?}")
            }
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(body)),
        }
    }
    assert!(matches!(
        call(&host, b"x", &[("top-k", "0")]),
        Err(CallError::Component(GuestError::Internal(m))) if m.contains("top-k")
    ));
}

#[test]
fn the_component_classifies_the_same_on_onnxruntime() {
    let (tract, ort) = (host(), host_on(verge_testkit::onnxruntime(0)));
    let top = |h: &Host, body: &[u8]| -> Vec<Value> {
        match call(h, body, &[("top-k", "5")]) {
            Ok(Outcome::Respond(r)) => {
                let v: Value = serde_json::from_slice(&r.body).unwrap();
                v["top"].as_array().unwrap().clone()
            }
            other => panic!("{other:?}"),
        }
    };
    for row in &reference() {
        let image = row["image"].as_str().unwrap();
        let body = std::fs::read(image).unwrap();
        let (a, b) = (top(&tract, &body), top(&ort, &body));
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x["index"], y["index"], "{image}: {a:?} vs {b:?}");
            let d = (x["score"].as_f64().unwrap() - y["score"].as_f64().unwrap()).abs();
            assert!(d <= 1e-4, "{image}: class {} differs by {d}", x["index"]);
        }
    }
}
