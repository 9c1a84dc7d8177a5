//! The ONNX Runtime backend's failures, as a user meets them: a missing
//! library, a missing GPU provider and a model ONNX Runtime refuses are clear
//! errors, or a logged fallback to tract when the deployment allows one. (Bad
//! tensors are the behaviour suite's: components/nn-suite.)
//!
//! Each load-failure case runs `verge-device run` in its own process: the
//! library is loaded once per process, so a failed load must not be followed
//! by a good one in the same test binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use verge_device::nn::{ElementType, Graphs, ModelSpec, Tensor};
use verge_device::testkit;

fn run(model: &Path, flags: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_verge-device"))
        .arg("run")
        .arg(common::wasm("file_type"))
        .arg("--model")
        .arg(format!("magika={}", model.display()))
        .args([
            "--input",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cli.rs"),
        ])
        .args(flags)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn label(o: &Output) -> String {
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", String::from_utf8_lossy(&o.stdout), stderr(o)));
    v["respond"]["body"]["label"].as_str().unwrap().to_string()
}

fn lib() -> String {
    testkit::onnxruntime_lib().display().to_string()
}

#[test]
fn runs_on_onnxruntime() {
    let o = run(
        &common::magika(),
        &["--backend", "onnxruntime", "--onnxruntime-lib", &lib()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(label(&o), "rust");
}

#[test]
fn a_missing_library_is_a_clear_error_or_a_fallback() {
    let flags = [
        "--backend",
        "onnxruntime",
        "--onnxruntime-lib",
        "/nonexistent/libonnxruntime.so",
    ];
    let o = run(&common::magika(), &flags);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("model 'magika'") && e.contains("on onnxruntime"),
        "{e}"
    );
    assert!(
        e.contains("not-found") && e.contains("/nonexistent/libonnxruntime.so"),
        "{e}"
    );

    let o = run(
        &common::magika(),
        &[&flags[..], &["--fallback-to-tract"]].concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("'magika' runs on tract"),
        "{}",
        stderr(&o)
    );
    assert_eq!(label(&o), "rust");
}

#[test]
fn a_missing_gpu_provider_is_a_clear_error_or_a_fallback() {
    // The CPU build of ONNX Runtime offers no CUDA (nor TensorRT).
    let flags = [
        "--backend",
        "onnxruntime",
        "--onnxruntime-lib",
        &lib(),
        "--gpu",
        "--provider",
        "cuda",
    ];
    let o = run(&common::magika(), &flags);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("execution target gpu") && e.contains("none of cuda"),
        "{e}"
    );

    let o = run(
        &common::magika(),
        &[&flags[..], &["--fallback-to-tract"]].concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("runs on tract"), "{}", stderr(&o));
    assert_eq!(label(&o), "rust");
}

/// Magika's model claiming ONNX IR version 99: ONNX Runtime refuses it, tract
/// (which reads the graph, not the version) does not.
fn future_ir_model() -> PathBuf {
    let mut bytes = std::fs::read(common::magika()).unwrap();
    // ModelProto field 1 (ir_version) is a one-byte varint at the start.
    assert_eq!(bytes[0], 0x08, "ir_version comes first");
    assert!(bytes[1] < 0x80);
    bytes[1] = 99;
    let path = std::env::temp_dir().join(format!("verge-ir99-{}.onnx", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_model_onnxruntime_refuses_is_a_clear_error_or_a_fallback() {
    let model = future_ir_model();
    let flags = ["--backend", "onnxruntime", "--onnxruntime-lib", &lib()];
    let o = run(&model, &flags);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("on onnxruntime") && e.contains("loading the model"),
        "{e}"
    );

    let o = run(&model, &[&flags[..], &["--fallback-to-tract"]].concat());
    std::fs::remove_file(&model).unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("runs on tract"), "{}", stderr(&o));
    assert_eq!(label(&o), "rust");
}

#[test]
fn concurrent_calls_share_one_model() {
    let graphs = Graphs::load(&[ModelSpec {
        name: "magika".into(),
        path: common::magika(),
        engine: testkit::onnxruntime(1),
    }])
    .unwrap();
    let input = Tensor::new(vec![1, 2048], ElementType::I32, vec![0; 8192]);
    let want = graphs
        .get("magika")
        .unwrap()
        .context()
        .compute_named(vec![("bytes".into(), input.clone())])
        .unwrap();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                let mut s = graphs.get("magika").unwrap().context();
                for _ in 0..5 {
                    let out = s.compute_named(vec![("bytes".into(), input.clone())]);
                    assert_eq!(out.unwrap(), want);
                }
            });
        }
    });
}

#[test]
fn settings_that_cannot_be_meant_are_refused_before_loading() {
    let cases: [(&[&str], &str); 3] = [
        (&["--gpu"], "needs the onnxruntime backend"),
        (
            &["--backend", "onnxruntime", "--provider", "cuda"],
            "gpu target only",
        ),
        // A typo is not the device's fault: no fallback hides it.
        (
            &[
                "--backend",
                "onnxruntime",
                "--gpu",
                "--provider",
                "cdua",
                "--fallback-to-tract",
            ],
            "invalid value 'cdua' for '--provider <PROVIDERS>'",
        ),
    ];
    for (flags, expected) in cases {
        let o = run(&common::magika(), flags);
        assert_eq!(o.status.code(), Some(1), "{flags:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(expected), "{flags:?}: {}", stderr(&o));
    }
}
