//! The `text-embed` component on the device host against the reference of
//! `tests/reference/text_embed_reference.py` (Hugging Face `tokenizers` +
//! onnxruntime on the same int8 MiniLM), whose JSON lines the test reads from
//! VERGE_TEXT_EMBED_REFERENCE: the same token ids, and cosine >= 0.999 per
//! sentence; then known pairs, labels and bad inputs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use verge_device::nn::Graphs;
use verge_device::runtime::{
    CallError, Deployment, GuestError, Limits, Outcome, Placement, Prepared, Request, Runtime,
};
use verge_nn_tract::{ElementType, Tensor};
use wasmtime::component::Component;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn wasm() -> PathBuf {
    let path = std::env::var_os("VERGE_WASM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace().join("target"))
                .join("wasm32-wasip2/component")
        })
        .join("text_embed.wasm");
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build --target wasm32-wasip2 --profile component -p text-embed)",
        path.display()
    );
    path
}

fn model() -> PathBuf {
    let path = std::env::var_os("VERGE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("models/.cache"))
        .join("minilm-l6-v2-int8/model.onnx");
    assert!(
        path.exists(),
        "{} is missing: run python3 models/fetch.py first",
        path.display()
    );
    path
}

fn reference() -> Vec<Value> {
    let path = std::env::var("VERGE_TEXT_EMBED_REFERENCE").expect(
        "VERGE_TEXT_EMBED_REFERENCE must name the reference JSON lines (tests/reference/text_embed_reference.py > FILE)",
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

struct Host {
    runtime: Runtime,
    prepared: Prepared,
}

impl Host {
    fn new() -> Host {
        let graphs = Graphs::load(&[("minilm".into(), model())]).unwrap();
        let runtime = Runtime::new(graphs).unwrap();
        let component = Component::from_file(runtime.engine(), wasm()).unwrap();
        let prepared = runtime.prepare(&component).unwrap();
        Host { runtime, prepared }
    }

    fn call(
        &self,
        content_type: &str,
        body: &[u8],
        settings: &[(&str, &str)],
    ) -> Result<Outcome, CallError> {
        let settings: Vec<(String, String)> = settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let deployment = Deployment::new(
            Placement::Local,
            Limits {
                deadline: Duration::from_secs(60),
                ..Limits::default()
            },
            &settings,
        );
        let request = Request {
            content_type: content_type.into(),
            body: body.to_vec(),
            attributes: vec![],
            truncated: false,
        };
        self.runtime.call(&self.prepared, &deployment, &request)
    }

    fn json(&self, text: &str, settings: &[(&str, &str)]) -> Value {
        match self.call("text/plain", text.as_bytes(), settings) {
            Ok(Outcome::Respond(r)) if r.status == 200 => serde_json::from_slice(&r.body).unwrap(),
            other => panic!("{text:?}: {other:?}"),
        }
    }

    fn embedding(&self, text: &str) -> Vec<f64> {
        floats(&self.json(text, &[])["embedding"])
    }
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
    let host = Host::new();
    let mut worst = 1f64;
    let (mut ours, mut ort_ms) = (Duration::ZERO, 0f64);
    for row in &rows {
        let text = row["text"].as_str().unwrap();
        let started = Instant::now();
        let got = host.json(text, &[("ids", "true")]);
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
    let model = host.runtime.graphs().model("minilm").unwrap().clone();
    let mut session = model.session();
    let started = Instant::now();
    for row in &rows {
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
        let inputs = [
            ("input_ids".to_string(), tensor(&ids)),
            ("attention_mask".to_string(), tensor(&vec![1; ids.len()])),
            ("token_type_ids".to_string(), tensor(&vec![0; ids.len()])),
        ];
        session.run(&inputs).unwrap();
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
fn known_pairs() {
    let host = Host::new();
    let food = host.embedding("A man is eating food.");
    let bread = host.embedding("A man is eating a piece of bread.");
    let stocks = host.embedding("The stock market crashed.");
    let (similar, unrelated) = (cosine(&food, &bread), cosine(&food, &stocks));
    println!("food/bread {similar:.3}, food/stocks {unrelated:.3}");
    assert!(similar > 0.6, "food/bread similarity {similar}");
    assert!(unrelated < 0.2, "food/stocks similarity {unrelated}");
}

#[test]
fn nearest_label() {
    let host = Host::new();
    let labels = [
        (
            "label.account",
            "How do I reset my password?|I cannot log in",
        ),
        ("label.billing", "I want a refund|Why was I charged twice?"),
        ("label.food", "A man is eating a piece of bread."),
    ];
    let got = host.json(
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
    let host = Host::new();
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
