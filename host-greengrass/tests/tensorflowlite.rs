//! The TensorFlow Lite engine: the behaviour suite's TFLite table
//! (components/nn/suite/tflite-cases.json) natively and through the device
//! host; an ONNX and a TFLite model side by side, each on the engine its file
//! asks for; and the real models operators have (MediaPipe's, microWakeWord's)
//! load, or are refused naming why.
//!
//! `./dev test` sets `VERGE_TENSORFLOWLITE_LIB` (the library from the
//! pymicro-wakeword wheel), `VERGE_TFLITE_SUITE_MODELS` (what
//! tflite_models.py wrote) and `VERGE_TFLITE_ZOO` (the wheels' models).

use std::path::PathBuf;

use verge_device::nn::{Backend, EngineSpec, Graphs, ModelSpec};
use verge_nn::{ElementType, NnError, Tensor};
use verge_nn_suite::{Case, Report};

fn dir(var: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{var} must be set (./dev test sets it)"))
}

fn spec(name: &str) -> ModelSpec {
    ModelSpec {
        name: name.into(),
        path: dir("VERGE_TFLITE_SUITE_MODELS").join(format!("{name}.tflite")),
        engine: EngineSpec::default(),
    }
}

fn load(cases: &[Case]) -> (Graphs, Vec<(String, NnError)>) {
    let names = verge_nn_suite::models_of(cases.to_vec());
    verge_testkit::load_each(names.iter().map(|n| spec(n)).collect())
}

#[test]
fn the_tflite_table_natively_and_on_the_device_host() {
    let cases = verge_nn_suite::tflite_cases();
    let (graphs, refused) = load(&cases);
    for loaded in graphs.loaded() {
        assert_eq!(loaded.backend, Backend::Tensorflowlite, "{}", loaded.name);
    }
    let mut report = Report::new("tensorflowlite, natively");
    for case in &cases {
        let got = verge_nn_suite::run_natively(case, graphs.by_name(&case.model), &refused);
        report.record(case, &got);
    }
    report.finish();

    verge_testkit::suite_on_device_host(
        "the device host on tensorflowlite (probe component)",
        graphs,
        &refused,
        &cases,
    );
}

#[test]
fn the_engine_follows_the_file_and_a_named_backend_still_decides() {
    let onnx = ModelSpec::tract("onnx", dir("VERGE_NN_SUITE_MODELS").join("add.onnx"));
    let graphs = Graphs::load(&[onnx.clone(), spec("add")]).unwrap();
    let engines: Vec<(String, Backend)> = graphs
        .loaded()
        .into_iter()
        .map(|l| (l.name, l.backend))
        .collect();
    assert_eq!(
        engines,
        [
            ("add".to_string(), Backend::Tensorflowlite),
            ("onnx".to_string(), Backend::Tract)
        ]
    );
    // Both answer the same question alike, by name.
    let a = Tensor::new(vec![1, 4], ElementType::F32, le(&[1.0, 2.0, 3.0, 4.0]));
    let b = Tensor::new(vec![1, 4], ElementType::F32, le(&[0.5; 4]));
    for name in ["add", "onnx"] {
        let out = graphs
            .by_name(name)
            .unwrap()
            .context()
            .compute_named(vec![("a".into(), a.clone()), ("b".into(), b.clone())])
            .unwrap();
        let sum = out.iter().find(|(n, _)| n == "sum").unwrap();
        assert_eq!(sum.1.data, le(&[1.5, 2.5, 3.5, 4.5]), "{name}");
    }
    // A backend the configuration names is kept, and says why it cannot.
    let mut pinned = spec("add");
    pinned.engine.named = true;
    let e = Graphs::load(&[pinned]).err().unwrap().to_string();
    assert!(
        e.contains("is a TensorFlow Lite model, which tract does not run"),
        "{e}"
    );
    let mut wrong = onnx;
    wrong.engine.backend = Backend::Tensorflowlite;
    wrong.engine.named = true;
    let e = Graphs::load(&[wrong]).err().unwrap().to_string();
    assert!(e.contains("not a TensorFlow Lite model"), "{e}");
    // Without the library: a clear error naming where it looked.
    let mut missing = spec("add");
    missing.name = "missing".into();
    missing.engine.tensorflowlite.library = Some("/nonexistent/libtensorflowlite_c.so".into());
    let e = Graphs::load(&[missing]).err().unwrap().to_string();
    assert!(
        e.contains("TensorFlow Lite is already loaded") || e.contains("no TensorFlow Lite library"),
        "{e}"
    );
}

fn le(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Every `.tflite` file the wheels ship (MediaPipe 0.10.21's and
/// microWakeWord's) loads and runs on zeros, or is refused naming the
/// operator the library lacks, or the int8 tensor wasi:nn cannot carry.
#[test]
fn the_wheels_models_load_or_say_why_not() {
    let zoo = dir("VERGE_TFLITE_ZOO");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&zoo)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tflite"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 15,
        "{} models in {}",
        files.len(),
        zoo.display()
    );
    let (mut ran, mut refused) = (0, 0);
    for path in &files {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let spec = ModelSpec::tract(&name, path);
        match Graphs::load(&[spec]) {
            Ok(graphs) => {
                let graph = graphs.by_name(&name).unwrap();
                let inputs = verge_testkit::zero_inputs(&graph);
                let out = graph.context().compute_named(inputs);
                let out = out.unwrap_or_else(|e| panic!("{name}: {e}"));
                println!("{name}: ran, {} outputs ({})", out.len(), graph.signature());
                ran += 1;
            }
            Err(e) => {
                let e = e.to_string();
                println!("{name}: refused: {e}");
                assert!(
                    e.contains("custom op") || e.contains("int8") || e.contains(" i8["),
                    "{name}: refused without naming an operator or int8: {e}"
                );
                refused += 1;
            }
        }
    }
    println!(
        "{} TFLite models: {ran} ran, {refused} refused",
        files.len()
    );
    assert!(ran >= 10, "{ran} ran");
}
