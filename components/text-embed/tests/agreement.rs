//! The `text-embed` component on the device host against the reference of
//! `tests/reference/text_embed_reference.py` (Hugging Face `tokenizers` +
//! onnxruntime on the same int8 MiniLM), whose JSON lines the test reads from
//! VERGE_TEXT_EMBED_REFERENCE: the same token ids, and cosine >= 0.999 per
//! sentence; then known pairs, labels and bad inputs.

use std::time::{Duration, Instant};

use serde_json::Value;
use verge_device::nn::EngineSpec;
use verge_device::runtime::{CallError, GuestError, Outcome};
use verge_nn::{ElementType, Tensor};
use verge_testkit::Host;

fn reference() -> Vec<Value> {
    verge_testkit::reference(
        "VERGE_TEXT_EMBED_REFERENCE",
        "tests/reference/text_embed_reference.py > FILE",
    )
}

fn model() -> std::path::PathBuf {
    verge_testkit::model(
        "minilm-l6-v2-int8",
        "model-gather-first.onnx",
        "python models/gather_first.py (./dev test runs it)",
    )
}

fn host() -> Host {
    host_on(EngineSpec::default())
}

fn host_on(engine: EngineSpec) -> Host {
    let wasm = verge_testkit::wasm("text_embed");
    Host::with_engine("minilm", model(), wasm, Duration::from_secs(60), engine)
}

/// A reference row's token ids as the model's three inputs.
fn inputs(row: &Value) -> Vec<(String, Tensor)> {
    let ids: Vec<i64> = row["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let tensor = |v: &[i64]| {
        Tensor::new(
            vec![1, v.len() as u32],
            ElementType::I64,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
    };
    vec![
        ("input_ids".to_string(), tensor(&ids)),
        ("attention_mask".to_string(), tensor(&vec![1; ids.len()])),
        ("token_type_ids".to_string(), tensor(&vec![0; ids.len()])),
    ]
}

fn json(host: &Host, text: &str, settings: &[(&str, &str)]) -> Value {
    match host.call("text/plain", text.as_bytes(), settings) {
        Ok(Outcome::Respond(r)) if r.status == 200 => serde_json::from_slice(&r.body).unwrap(),
        other => panic!("{text:?}: {other:?}"),
    }
}

fn embedding(host: &Host, text: &str) -> Vec<f64> {
    floats(&json(host, text, &[])["embedding"])
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

#[test]
fn agrees_with_tokenizers_and_onnxruntime() {
    let rows = reference();
    assert!(
        rows.len() >= 15,
        "the reference has {} sentences",
        rows.len()
    );
    let host = host();
    let mut worst = 1f64;
    let (mut ours, mut ort_ms) = (Duration::ZERO, 0f64);
    for row in &rows {
        let text = row["text"].as_str().unwrap();
        let started = Instant::now();
        let got = json(&host, text, &[("ids", "true")]);
        ours += started.elapsed();
        ort_ms += row["ort_ms"].as_f64().unwrap();
        assert_eq!(
            got["ids"], row["ids"],
            "token ids differ from Hugging Face tokenizers for {text:?}"
        );
        let (a, b) = (floats(&got["embedding"]), floats(&row["embedding"]));
        assert_eq!(a.len(), 384);
        let norm = a.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{text:?}: norm {norm}");
        let c = cosine(&a, &b);
        assert!(
            c >= 0.999,
            "{text:?}: cosine {c} with onnxruntime is under 0.999"
        );
        worst = worst.min(c);
    }
    // The same ids through tract natively (model only).
    let mut session = host.runtime.graphs().get("minilm").unwrap().context();
    let started = Instant::now();
    for row in &rows {
        session.compute_named(inputs(row)).unwrap();
    }
    let tract = started.elapsed();
    let n = rows.len() as f64;
    println!(
        "text-embed vs tokenizers + onnxruntime: {} sentences, identical token ids, min cosine {worst:.8}; \
         mean per request: device host {:.1} ms (tokenise + model + pooling, fresh instance), \
         native tract {:.1} ms, onnxruntime (Python, 1 thread) {:.1} ms (model only)",
        rows.len(),
        ours.as_secs_f64() * 1000.0 / n,
        tract.as_secs_f64() * 1000.0 / n,
        ort_ms / n
    );
}

#[test]
fn tract_and_onnxruntime_agree() {
    let cases: Vec<_> = reference().iter().map(inputs).collect();
    let a = verge_testkit::backends_agree(&model(), &cases);
    a.assert_agree("minilm", cases.len());
}

#[test]
fn openvino_and_the_cpu_provider_agree() {
    let Some(lib) = verge_testkit::openvino_child("openvino_and_the_cpu_provider_agree") else {
        return;
    };
    let cases: Vec<_> = reference().iter().map(inputs).collect();
    let a = verge_testkit::openvino_agrees(&lib, &model(), &cases);
    a.assert_agree("minilm", cases.len());
    // OpenVINO runs the model in seven subgraphs; ONNX Runtime's CPU provider
    // the six IsNaN nodes between them (OpenVINO does not take IsNaN).
    let ov = a
        .node_runs
        .get("OpenVINOExecutionProvider")
        .copied()
        .unwrap_or(0);
    let cpu = a
        .node_runs
        .get("CPUExecutionProvider")
        .copied()
        .unwrap_or(0);
    assert!(ov > cpu, "{:?}", a.node_runs);
}

#[test]
fn known_pairs() {
    let host = host();
    let food = embedding(&host, "A man is eating food.");
    let bread = embedding(&host, "A man is eating a piece of bread.");
    let stocks = embedding(&host, "The stock market crashed.");
    let (similar, unrelated) = (cosine(&food, &bread), cosine(&food, &stocks));
    println!("food/bread {similar:.3}, food/stocks {unrelated:.3}");
    assert!(similar > 0.6, "food/bread similarity {similar}");
    assert!(unrelated < 0.2, "food/stocks similarity {unrelated}");
}

#[test]
fn nearest_label() {
    let host = host();
    let labels = [
        (
            "label.account",
            "How do I reset my password?|I cannot log in",
        ),
        ("label.billing", "I want a refund|Why was I charged twice?"),
        ("label.food", "A man is eating a piece of bread."),
    ];
    let got = json(
        &host,
        "I forgot the password to my account and cannot log in.",
        &[labels[0], labels[1], labels[2], ("embedding", "false")],
    );
    assert_eq!(got["label"], "account", "{got}");
    assert!(got.get("embedding").is_none());
    let sims = got["similarities"].as_object().unwrap();
    assert_eq!(sims.len(), 3);
    assert!(sims["account"].as_f64() > sims["billing"].as_f64());

    match host.call(
        "text/plain",
        b"Refund my order, the package arrived damaged!!!",
        &[labels[0], labels[1], ("mode", "annotate")],
    ) {
        Ok(Outcome::Annotate(pairs)) => {
            assert_eq!(pairs[0], ("x-text-label".into(), "billing".into()));
            assert_eq!(pairs[1].0, "x-text-similarity");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_inputs_are_invalid_input() {
    let host = host();
    let cases: [(&str, &[u8], &str); 5] = [
        ("text/plain", b"", "empty text"),
        ("text/plain", b" \n\t ", "empty text"),
        ("text/plain", b"caf\xe9", "not UTF-8"),
        ("application/json", b"{\"txt\": \"hi\"}", "\"text\""),
        ("application/json", b"{oops", "not JSON"),
    ];
    for (ct, body, expected) in cases {
        match host.call(ct, body, &[]) {
            Err(CallError::Component(GuestError::InvalidInput(m))) => {
                assert!(m.contains(expected), "{m:?} should say {expected:?}")
            }
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(body)),
        }
    }
    // A JSON body is fine too.
    let Ok(Outcome::Respond(r)) = host.call("application/json", br#"{"text": "hello"}"#, &[])
    else {
        panic!("JSON body refused")
    };
    assert_eq!(r.status, 200);
    // A bad setting is the deployment's fault.
    assert!(matches!(
        host.call("text/plain", b"hi", &[("mode", "annotate")]),
        Err(CallError::Component(GuestError::Internal(m))) if m.contains("mode")
    ));
}

#[test]
fn the_component_embeds_the_same_on_onnxruntime() {
    let (tract, ort) = (host(), host_on(verge_testkit::onnxruntime(0)));
    let mut worst = 1f64;
    for row in &reference() {
        let text = row["text"].as_str().unwrap();
        worst = worst.min(cosine(&embedding(&tract, text), &embedding(&ort, text)));
    }
    println!("text-embed component, tract vs onnxruntime: min cosine {worst:.8}");
    assert!(worst >= 0.99999, "cosine {worst}");
}
