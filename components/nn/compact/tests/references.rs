//! The compact engine natively against independent references:
//!
//! * ONNX's own operator tests (components/nn/suite/onnx_node_cases.py into
//!   `$VERGE_ONNX_NODE_CASES`): every case whose model the engine loads must
//!   pass, and the count per operator is printed; a model it refuses (an
//!   operator, attribute or type it does not run) is skipped.
//! * scikit-learn models converted with skl2onnx (models/sklearn_cases.py
//!   into `$VERGE_SKLEARN_CASES`), against onnxruntime's outputs: all must
//!   load and pass.
//!
//! `./dev test` writes both folders. The wasi:nn behaviour suite runs on this
//! engine with the others (host-greengrass/tests/nn_suite.rs).

use std::path::PathBuf;

use verge_nn::{Graph, NnError, Tensor};
use verge_nn_compact::Compact;
use verge_nn_suite::{Case, Coverage, Outcome};

fn dir(var: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        panic!("{var} must name the folder of cases.json and models/ (./dev test writes it)")
    })
}

fn cases(dir: &std::path::Path) -> Vec<Case> {
    let text = std::fs::read_to_string(dir.join("cases.json")).expect("cases.json");
    verge_nn_suite::parse(&text).expect("cases.json parses")
}

/// A case run as a host would: load by name (here: from the folder), compute.
fn run(dir: &std::path::Path, case: &Case) -> Outcome {
    let go = || -> Result<Vec<(String, Tensor)>, NnError> {
        let bytes = std::fs::read(dir.join("models").join(format!("{}.onnx", case.model)))
            .expect("the case's model");
        Graph::load(&case.model, &Compact, &bytes)?
            .context()
            .compute_named(case.inputs.clone())
    };
    match go() {
        Ok(outputs) => Outcome::Outputs(outputs),
        Err(e) => Outcome::error(&e),
    }
}

#[test]
fn onnx_node_tests() {
    let dir = dir("VERGE_ONNX_NODE_CASES");
    let mut coverage = Coverage::new("onnx node tests on the compact engine, natively");
    let runs = |op: &String| verge_nn_compact::OPERATORS.iter().any(|(_, o)| o == op);
    for case in cases(&dir) {
        let got = run(&dir, &case);
        // Where the claim is narrower than the operator: say why.
        if let Outcome::Error { code, data } = &got
            && code == "unsupported-operation"
            && case.ops.iter().all(runs)
        {
            println!("  narrowed: {}: {data}", case.name);
        }
        coverage.record(&case, &got);
    }
    let claimed = coverage.claimed().len();
    coverage.finish();
    assert!(claimed >= 24, "only {claimed} operators ran");
}

#[test]
fn scikit_learn_models() {
    let dir = dir("VERGE_SKLEARN_CASES");
    let mut report =
        verge_nn_suite::Report::new("scikit-learn models on the compact engine, natively");
    for case in cases(&dir) {
        report.record(&case, &run(&dir, &case));
    }
    assert!(report.passed >= 20, "{} cases", report.passed);
    report.finish();
}

#[test]
fn every_operator_is_claimed_once() {
    let mut ops: Vec<_> = verge_nn_compact::OPERATORS.to_vec();
    ops.sort();
    ops.dedup();
    assert_eq!(ops.len(), verge_nn_compact::OPERATORS.len());
}
