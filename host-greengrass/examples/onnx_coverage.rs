//! Coverage: ONNX's own operator tests (components/nn/suite/onnx_node_cases.py
//! turns the onnx wheel's node tests into behaviour-suite cases) through one
//! component (the probe's `nn-case`) on the device host, on each engine:
//! how many of them a device runs.
//!
//!   onnx_coverage CASES_DIR [--only tract|onnxruntime|compact] [--failures] [--rows FILE]
//!
//! CASES_DIR holds cases.json and models/; ONNX Runtime comes from
//! $VERGE_ONNXRUNTIME_LIB, the probe from $VERGE_WASM_DIR. Prints one line per
//! engine (`N passed, M failed of T`) and, with --failures, each failure.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::Duration;

use verge_device::nn::{Graphs, LoadError, ModelSpec};
use verge_device::runtime::{Deployment, Limits, Placement, Runtime};
use verge_nn_suite::Outcome as Got;
use wasmtime::component::Component;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = PathBuf::from(
        args.first()
            .expect("usage: onnx_coverage CASES_DIR [--only ENGINE] [--failures]"),
    );
    let only = args
        .iter()
        .position(|a| a == "--only")
        .map(|i| args[i + 1].clone());
    let show = args.iter().any(|a| a == "--failures");
    let rows = args
        .iter()
        .position(|a| a == "--rows")
        .map(|i| PathBuf::from(&args[i + 1]));
    let cases = verge_nn_suite::parse(&std::fs::read_to_string(dir.join("cases.json"))?)
        .map_err(|e| anyhow::anyhow!(e))?;
    // Engines panic on some malformed graphs; one model must not stop the count.
    std::panic::set_hook(Box::new(|_| {}));
    for (engine, spec) in verge_testkit::engines() {
        if only.as_deref().is_some_and(|o| o != engine) {
            continue;
        }
        let mut good = Vec::new();
        let mut refused: BTreeMap<String, Got> = BTreeMap::new();
        for case in &cases {
            let model = ModelSpec {
                name: case.model.clone(),
                path: dir.join("models").join(format!("{}.onnx", case.model)),
                engine: spec.clone(),
            };
            match catch_unwind(AssertUnwindSafe(|| {
                Graphs::load(std::slice::from_ref(&model))
            })) {
                Ok(Ok(_)) => good.push(model),
                Ok(Err(LoadError::Model { error, .. })) => {
                    refused.insert(case.model.clone(), Got::error(&error));
                }
                Ok(Err(e)) => anyhow::bail!("{e}"),
                Err(_) => {
                    refused.insert(
                        case.model.clone(),
                        Got::Error {
                            code: "panic".into(),
                            data: format!("{engine} panicked loading it"),
                        },
                    );
                }
            }
        }
        let runtime = Runtime::new(Graphs::load(&good)?)?;
        let probe = runtime.prepare(&Component::from_file(
            runtime.engine(),
            verge_testkit::wasm("probe"),
        )?)?;
        let deployment = Deployment::new(
            Placement::Device,
            Limits::new(Duration::from_secs(20), 1 << 30, 1 << 30),
            &[],
        );
        let (mut passed, mut failed) = (0, Vec::new());
        for case in &cases {
            if let Some(got) = refused.get(&case.model) {
                let why = verge_nn_suite::check(case, got).err().unwrap_or_default();
                failed.push(format!("{}: not loaded: {why}", case.name));
                continue;
            }
            let answer = catch_unwind(AssertUnwindSafe(|| {
                verge_testkit::probe_nn_case(&runtime, &probe, &deployment, &case.json)
            }));
            match answer {
                Ok(Ok(())) => passed += 1,
                Ok(Err(why)) => failed.push(format!("{}: {why}", case.name)),
                Err(_) => failed.push(format!("{}: {engine} panicked running it", case.name)),
            }
        }
        println!(
            "onnx node tests through the device host on {engine}: {passed} passed, {} failed of {}",
            failed.len(),
            cases.len()
        );
        if show {
            for f in &failed {
                println!("  {f}");
            }
        }
        if let Some(rows) = &rows {
            use std::io::Write;
            let row = serde_json::json!({
                "section": "coverage", "workload": "onnx node tests", "system": format!("device, {engine}"),
                "metric": "passed", "unit": "tests", "samples": [passed], "baseline": false, "better": "higher",
            });
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(rows)?;
            writeln!(f, "{row}")?;
        }
    }
    Ok(())
}
