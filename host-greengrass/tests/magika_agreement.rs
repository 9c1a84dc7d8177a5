//! The `file-type` component against the `magika` Python package itself, on
//! a corpus of real files from this machine (tests/reference/corpus.py): the
//! reference labels come from `tests/reference/magika_reference.py`, whose
//! JSON lines `./dev test` writes and names in VERGE_MAGIKA_REFERENCE.

mod common;

use std::time::Duration;

use serde_json::Value;
use verge_device::nn::Graphs;
use verge_device::runtime::{Deployment, Limits, Outcome, Placement, Request, Runtime};
use wasmtime::component::Component;

#[test]
fn file_type_agrees_with_python_magika() {
    let reference = std::env::var("VERGE_MAGIKA_REFERENCE").expect(
        "VERGE_MAGIKA_REFERENCE must name the reference JSON lines (./dev test writes them)",
    );
    let text = std::fs::read_to_string(&reference).unwrap();
    let rows: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        rows.len() >= 200,
        "the corpus has {} files, at least 200 are needed",
        rows.len()
    );

    let graphs = Graphs::load(&[("magika".into(), common::magika())]).unwrap();
    let runtime = Runtime::new(graphs).unwrap();
    let component = Component::from_file(runtime.engine(), common::wasm("file_type")).unwrap();
    let prepared = runtime.prepare(&component).unwrap();
    let deployment = Deployment::new(
        Placement::Local,
        Limits {
            deadline: Duration::from_secs(30),
            ..Limits::default()
        },
        &[],
    );

    let (mut same, mut score_diff) = (0, 0f64);
    let mut disagreements = Vec::new();
    for row in &rows {
        let path = row["path"].as_str().unwrap();
        let body = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let request = Request {
            content_type: String::new(),
            body,
            attributes: vec![],
            truncated: false,
        };
        let outcome = runtime.call(&prepared, &deployment, &request);
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
        "file-type vs python magika: {same}/{} identical labels ({:.2} %), max score difference on agreeing files {score_diff:.2e}",
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
