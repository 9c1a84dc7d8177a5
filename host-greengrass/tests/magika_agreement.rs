//! The `file-type` component against the `magika` Python package itself, on
//! a corpus of real files from this machine (tests/reference/corpus.py): the
//! reference labels come from `tests/reference/magika_reference.py`, whose
//! JSON lines `./dev test` writes and names in VERGE_MAGIKA_REFERENCE.

use std::time::Duration;

use serde_json::Value;
use verge_device::nn::{ElementType, EngineSpec, Tensor};
use verge_device::runtime::Outcome;
use verge_testkit::Host;

fn rows() -> Vec<Value> {
    verge_testkit::reference("VERGE_MAGIKA_REFERENCE", "./dev test writes them")
}

/// The corpus through the component, on `backend`, against Python magika.
fn agreement(backend: &str, engine: EngineSpec) {
    let rows = rows();
    assert!(
        rows.len() >= 200,
        "the corpus has {} files, at least 200 are needed",
        rows.len()
    );

    let wasm = verge_testkit::wasm("file_type");
    let host = Host::with_engine(
        "magika",
        verge_testkit::magika(),
        wasm,
        Duration::from_secs(30),
        engine,
    );

    let (mut same, mut score_diff) = (0, 0f64);
    let mut disagreements = Vec::new();
    for row in &rows {
        let path = row["path"].as_str().unwrap();
        let body = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let outcome = host.call("", &body, &[]);
        let Ok(Outcome::Respond(r)) = outcome else {
            panic!("{path}: {outcome:?}");
        };
        let got: Value = serde_json::from_slice(&r.body).unwrap();
        if got["label"] == row["label"] {
            same += 1;
            let d = (got["score"].as_f64().unwrap() - row["score"].as_f64().unwrap()).abs();
            score_diff = score_diff.max(d);
        } else {
            disagreements.push(format!(
                "  {path}: verge {} ({}) vs magika {} ({})",
                got["label"], got["score"], row["label"], row["score"]
            ));
        }
    }
    let agreement = same as f64 / rows.len() as f64;
    println!(
        "file-type on {backend} vs python magika: {same}/{} identical labels ({:.2} %), max score difference on agreeing files {score_diff:.2e}",
        rows.len(),
        agreement * 100.0
    );
    for d in &disagreements {
        println!("{d}");
    }
    assert!(
        agreement >= 0.98,
        "agreement {:.2} % is under 98 %",
        agreement * 100.0
    );
}

#[test]
fn file_type_on_tract_agrees_with_python_magika() {
    agreement("tract", EngineSpec::default());
}

#[test]
fn file_type_on_onnxruntime_agrees_with_python_magika() {
    agreement("onnxruntime", verge_testkit::onnxruntime(0));
}

/// The corpus files that reach the model, as its input.
fn model_inputs() -> Vec<Vec<(String, Tensor)>> {
    let cases: Vec<_> = rows()
        .iter()
        .filter_map(|row| {
            let body = std::fs::read(row["path"].as_str().unwrap()).ok()?;
            let magika::Prepared::Model(f) = magika::prepare(&body) else {
                return None;
            };
            let data = f.iter().flat_map(|v| v.to_le_bytes()).collect();
            let t = Tensor::new(vec![1, magika::FEATURES as u32], ElementType::I32, data);
            Some(vec![("bytes".to_string(), t)])
        })
        .collect();
    assert!(cases.len() >= 200, "{} files reach the model", cases.len());
    cases
}

#[test]
fn openvino_and_the_cpu_provider_agree_on_magika() {
    let Some(lib) = verge_testkit::openvino_child("openvino_and_the_cpu_provider_agree_on_magika")
    else {
        return;
    };
    let cases = model_inputs();
    let a = verge_testkit::openvino_agrees(&lib, &verge_testkit::magika(), &cases);
    a.assert_agree("magika", cases.len());
    // One OpenVINO subgraph: the whole model.
    assert_eq!(
        a.node_runs.keys().collect::<Vec<_>>(),
        ["OpenVINOExecutionProvider"]
    );
}

#[test]
fn tract_and_onnxruntime_agree_on_magika() {
    let cases = model_inputs();
    let a = verge_testkit::backends_agree(&verge_testkit::magika(), &cases);
    a.assert_agree("magika", cases.len());
}
