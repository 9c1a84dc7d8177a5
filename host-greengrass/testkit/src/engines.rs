//! The device engines the tests run and compare: ONNX Runtime from the
//! reference wheel, OpenVINO's provider from the onnxruntime-openvino wheel.

use std::path::{Path, PathBuf};

use verge_device::nn::{Backend, EngineSpec, Provider, Target};

/// The `libonnxruntime` for tests and benchmarks: `$VERGE_ONNXRUNTIME_LIB`,
/// which `./dev` points at the library inside the `onnxruntime` wheel.
pub fn onnxruntime_lib() -> PathBuf {
    std::env::var_os("VERGE_ONNXRUNTIME_LIB")
        .map(PathBuf::from)
        .expect("VERGE_ONNXRUNTIME_LIB must name a libonnxruntime (./dev test sets it)")
}

/// ONNX Runtime on the CPU with `threads` intra-op threads (0: its default).
pub fn onnxruntime(threads: usize) -> EngineSpec {
    EngineSpec {
        backend: Backend::Onnxruntime,
        threads,
        library: Some(onnxruntime_lib()),
        ..EngineSpec::default()
    }
}

/// The `libonnxruntime` of the onnxruntime-openvino wheel (ONNX Runtime with
/// OpenVINO's execution provider): `$VERGE_ONNXRUNTIME_OPENVINO_LIB`, which
/// `./dev test` sets up. Unset, `test` says it is skipped and gets `None`,
/// unless VERGE_REQUIRE_ALL=1 (then it fails).
pub fn openvino_lib(test: &str) -> Option<PathBuf> {
    let lib = std::env::var_os("VERGE_ONNXRUNTIME_OPENVINO_LIB").map(PathBuf::from);
    if lib.is_none() {
        assert!(
            std::env::var("VERGE_REQUIRE_ALL").as_deref() != Ok("1"),
            "{test}: set VERGE_ONNXRUNTIME_OPENVINO_LIB (VERGE_REQUIRE_ALL=1)"
        );
        println!(
            "{test}: skipped: VERGE_ONNXRUNTIME_OPENVINO_LIB is unset (./dev test sets it to the onnxruntime-openvino wheel's libonnxruntime)"
        );
    }
    lib
}

/// For a test that loads ONNX Runtime with OpenVINO's provider, which must
/// not share a process with the tests on the CPU build (a process loads one
/// libonnxruntime): in the test binary's child process running only `test`,
/// the library; in the parent, `None` once that child has passed (its output
/// passed on; its failure is the test's).
pub fn openvino_child(test: &str) -> Option<PathBuf> {
    const CHILD: &str = "VERGE_TEST_CHILD";
    let lib = openvino_lib(test)?;
    if std::env::var(CHILD).as_deref() == Ok(test) {
        return Some(lib);
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env(CHILD, test)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{test} in its own process: {}\n{text}",
        out.status
    );
    assert!(
        text.contains("1 passed"),
        "{test} did not run in its own process:\n{text}"
    );
    print!("{text}");
    None
}

/// ONNX Runtime from `lib` with OpenVINO's provider on `device` (its `threads`
/// inference threads, 0: OpenVINO's default), compiled models cached in `cache_dir`.
pub fn openvino(
    lib: &Path,
    device: &str,
    threads: usize,
    cache_dir: Option<PathBuf>,
) -> EngineSpec {
    EngineSpec {
        backend: Backend::Onnxruntime,
        threads,
        target: Target::Gpu,
        providers: vec![Provider::Openvino],
        library: Some(lib.to_path_buf()),
        device: Some(device.into()),
        cache_dir,
        ..EngineSpec::default()
    }
}

/// Every device engine, by name, as the behaviour suite and the coverage
/// count run them: tract, ONNX Runtime (one thread) and the compact engine.
pub fn engines() -> Vec<(&'static str, EngineSpec)> {
    vec![
        ("tract", EngineSpec::default()),
        ("onnxruntime", onnxruntime(1)),
        (
            "compact",
            EngineSpec {
                backend: Backend::Compact,
                ..EngineSpec::default()
            },
        ),
    ]
}
