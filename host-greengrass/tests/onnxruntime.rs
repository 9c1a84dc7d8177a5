//! The ONNX Runtime backend's failures, as a user meets them: a missing
//! library, a missing GPU provider and a model ONNX Runtime refuses are clear
//! errors, or a logged fallback to tract when the deployment allows one. (Bad
//! tensors are the behaviour suite's: components/nn/suite.)
//!
//! Each load-failure case runs `verge-device run` in its own process: the
//! library is loaded once per process, so a failed load must not be followed
//! by a good one in the same test binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use verge_device::nn::{ElementType, EngineSpec, Graphs, ModelSpec, Tensor};

fn run(model: &Path, flags: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_verge-device"))
        .arg("run")
        .arg(verge_testkit::wasm("file_type"))
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
    verge_testkit::onnxruntime_lib().display().to_string()
}

#[test]
fn runs_on_onnxruntime() {
    let o = run(
        &verge_testkit::magika(),
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
    let o = run(&verge_testkit::magika(), &flags);
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
        &verge_testkit::magika(),
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
    let o = run(&verge_testkit::magika(), &flags);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("execution target gpu") && e.contains("none of cuda"),
        "{e}"
    );

    falls_back_to_tract(&flags);
}

/// With `--fallback-to-tract` added to `flags` (which `run` refuses), Magika
/// runs on tract, and says so.
fn falls_back_to_tract(flags: &[&str]) {
    let o = run(
        &verge_testkit::magika(),
        &[flags, &["--fallback-to-tract"]].concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("runs on tract"), "{}", stderr(&o));
    assert_eq!(label(&o), "rust");
}

/// Files and their modification times under `dir`, sorted.
fn files(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        if m.is_dir() {
            v.extend(files(&e.path()));
        } else {
            v.push((e.path(), m.len(), m.modified().unwrap()));
        }
    }
    v.sort();
    v
}

/// Magika through OpenVINO's provider (its CPU plugin; the onnxruntime-openvino
/// wheel's library): ONNX Runtime's profile says every node ran on OpenVINO,
/// the scores are the CPU provider's within 1e-4, and the compiled model is
/// written under the cache folder, `<cache_dir>/openvino/magika-<sha256 prefix>/`.
#[test]
fn openvino_runs_magika_and_keeps_its_compiled_model_under_the_cache_dir() {
    let test = "openvino_runs_magika_and_keeps_its_compiled_model_under_the_cache_dir";
    let Some(lib) = verge_testkit::openvino_child(test) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("verge-openvino-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cache_dir = dir.join("cache");
    let engine = EngineSpec {
        profile: Some(dir.join("profile")),
        ..verge_testkit::openvino(&lib, "CPU", 0, Some(cache_dir.clone()))
    };
    let spec = |name: &str, engine: EngineSpec| ModelSpec {
        name: name.into(),
        path: verge_testkit::magika(),
        engine,
    };
    let cpu = spec(
        "cpu",
        EngineSpec {
            library: Some(lib.clone()),
            ..verge_testkit::onnxruntime(0)
        },
    );
    let cpu = Graphs::load(&[cpu]).unwrap();
    let body = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cli.rs")).unwrap();
    let magika::Prepared::Model(f) = magika::prepare(&body) else {
        panic!("cli.rs reaches the model");
    };
    let data = f.iter().flat_map(|v| v.to_le_bytes()).collect();
    let input = vec![(
        "bytes".to_string(),
        Tensor::new(vec![1, magika::FEATURES as u32], ElementType::I32, data),
    )];
    let want = cpu
        .get("cpu")
        .unwrap()
        .context()
        .compute_named(input.clone())
        .unwrap();

    let mut loads = Vec::new();
    let mut listings = Vec::new();
    for round in 0..2 {
        let started = std::time::Instant::now();
        let graphs = Graphs::load(&[spec("magika", engine.clone())]).unwrap();
        loads.push(started.elapsed());
        let loaded = &graphs.loaded()[0];
        assert_eq!(loaded.providers, ["openvino"]);
        let folder = loaded.cache.clone().expect("openvino gets a cache folder");
        assert!(
            folder.starts_with(cache_dir.join("openvino"))
                && folder
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("magika-"),
            "{}",
            folder.display()
        );
        let got = graphs
            .get("magika")
            .unwrap()
            .context()
            .compute_named(input.clone())
            .unwrap();
        let (a, b) = (floats(&got[0].1.data), floats(&want[0].1.data));
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            diff <= 1e-4,
            "round {round}: openvino and cpu differ by {diff}"
        );
        drop(graphs); // ends the session: its profile is written
        let runs = verge_testkit::node_runs_by_provider(&dir);
        println!(
            "round {round}: load {:?}, max |diff| with the cpu provider {diff:.2e}, node runs by provider {runs:?}",
            loads[round]
        );
        assert!(
            runs.get("OpenVINOExecutionProvider")
                .is_some_and(|&n| n > 0)
                && runs.keys().all(|p| p == "OpenVINOExecutionProvider"),
            "every node runs on OpenVINO: {runs:?}"
        );
        let listing = files(&folder);
        for (path, size, _) in &listing {
            println!(
                "  {} ({size} bytes)",
                path.strip_prefix(&dir).unwrap().display()
            );
        }
        assert!(
            listing
                .iter()
                .any(|(p, size, _)| p.extension().is_some_and(|e| e == "blob") && *size > 0),
            "OpenVINO wrote its compiled model: {listing:?}"
        );
        listings.push(listing);
    }
    // onnxruntime-openvino 1.24.1 (OpenVINO 2025.4) reads the blob back on a
    // second load, then compiles again and rewrites it (its import looks for
    // a weights file beside a model it was given in memory): said, not held.
    let rewritten = listings[0]
        .iter()
        .zip(&listings[1])
        .any(|(a, b)| a.2 != b.2);
    println!(
        "second load {:?} vs first {:?}; the blob was {}",
        loads[1],
        loads[0],
        if rewritten {
            "compiled again and rewritten"
        } else {
            "reused as it was"
        }
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A device OpenVINO does not find here (no Intel GPU): a clear error, or the
/// fallback to tract.
#[test]
fn an_openvino_device_that_is_absent_is_a_clear_error_or_a_fallback() {
    let Some(lib) = verge_testkit::openvino_lib(
        "an_openvino_device_that_is_absent_is_a_clear_error_or_a_fallback",
    ) else {
        return;
    };
    let lib = lib.display().to_string();
    let flags = [
        "--backend",
        "onnxruntime",
        "--onnxruntime-lib",
        &lib,
        "--gpu",
        "--provider",
        "openvino",
        "--device",
        "NPU",
    ];
    let o = run(&verge_testkit::magika(), &flags);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    println!("{e}");
    assert!(
        e.contains("model 'magika'") && e.contains("(device NPU)"),
        "{e}"
    );

    falls_back_to_tract(&flags);
}

fn floats(data: &[u8]) -> Vec<f32> {
    data.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Magika's model claiming ONNX IR version 99: ONNX Runtime refuses it, tract
/// (which reads the graph, not the version) does not.
fn future_ir_model() -> PathBuf {
    let mut bytes = std::fs::read(verge_testkit::magika()).unwrap();
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
        path: verge_testkit::magika(),
        engine: verge_testkit::onnxruntime(1),
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
    let ov = [
        "--backend",
        "onnxruntime",
        "--gpu",
        "--provider",
        "openvino",
    ];
    let cases: [(&[&str], &str); 7] = [
        (&["--gpu"], "needs the onnxruntime backend"),
        (
            &["--backend", "onnxruntime", "--device", "CPU"],
            "a device applies to the gpu target",
        ),
        (
            &[&ov[..], &["--device", "TPU"]].concat(),
            "device 'TPU' is not an OpenVINO device type",
        ),
        (
            &[&ov[..], &["--device", "HETERO:"]].concat(),
            "device 'HETERO:' is not an OpenVINO device type",
        ),
        // The default providers are TensorRT and CUDA: a device id.
        (
            &["--backend", "onnxruntime", "--gpu", "--device", "GPU"],
            "device 'GPU' is not a tensorrt device id",
        ),
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
        let o = run(&verge_testkit::magika(), flags);
        assert_eq!(o.status.code(), Some(1), "{flags:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(expected), "{flags:?}: {}", stderr(&o));
    }
}
