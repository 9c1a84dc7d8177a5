//! Helpers for tests of components against the device host: where the built
//! components, the fetched models and the reference files are, and a runtime
//! with one component prepared to call.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use wasmtime::component::Component;

use crate::nn::{Backend, ElementType, EngineSpec, Graphs, ModelSpec, Tensor};
use crate::runtime::{
    CallError, Deployment, Limits, Outcome, Placement, Prepared, Request, Runtime,
};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The component `NAME.wasm` built for wasm32-wasip2 with profile `component`,
/// in `$VERGE_WASM_DIR`, else `$CARGO_TARGET_DIR/wasm32-wasip2/component`;
/// panics naming the missing file and the build command.
pub fn wasm(name: &str) -> PathBuf {
    let dir = std::env::var_os("VERGE_WASM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace().join("target"))
                .join("wasm32-wasip2/component")
        });
    let path = dir.join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build it first (./dev build, or cargo build --target wasm32-wasip2 --profile component -p {})",
        path.display(),
        name.replace('_', "-")
    );
    path
}

/// Where the models are: `$VERGE_MODELS_DIR`, else `models/.cache`.
pub fn models_dir() -> PathBuf {
    std::env::var_os("VERGE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("models/.cache"))
}

/// The file `NAME/FILE` in [`models_dir`]; panics naming the missing file and
/// `make`, the command that makes it.
pub fn model(name: &str, file: &str, make: &str) -> PathBuf {
    let path = models_dir().join(name).join(file);
    assert!(
        path.exists(),
        "{} is missing: run {make} first",
        path.display()
    );
    path
}

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
        target: crate::nn::Target::Gpu,
        providers: vec![crate::nn::Provider::Openvino],
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

/// The JSON lines of the reference file named by the environment variable
/// `var`; panics if it is unset, saying that `make` writes it.
pub fn reference(var: &str, make: &str) -> Vec<Value> {
    let path = std::env::var(var)
        .unwrap_or_else(|_| panic!("{var} must name the reference JSON lines ({make})"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A runtime with one model loaded and one component prepared.
pub struct Host {
    pub runtime: Runtime,
    pub prepared: Prepared,
    deadline: Duration,
}

impl Host {
    /// Loads `model` as the graph `graph`, prepares the component at `wasm`;
    /// each call gets `deadline`.
    pub fn new(graph: &str, model: PathBuf, wasm: PathBuf, deadline: Duration) -> Host {
        Self::with_engine(graph, model, wasm, deadline, EngineSpec::default())
    }

    /// [`Host::new`] with the model on the given engine.
    pub fn with_engine(
        graph: &str,
        model: PathBuf,
        wasm: PathBuf,
        deadline: Duration,
        engine: EngineSpec,
    ) -> Host {
        let spec = ModelSpec {
            name: graph.into(),
            path: model,
            engine,
        };
        let graphs = Graphs::load(&[spec]).unwrap_or_else(|e| panic!("{e}"));
        let runtime = Runtime::new(graphs).unwrap();
        let component = Component::from_file(runtime.engine(), wasm).unwrap();
        let prepared = runtime.prepare(&component).unwrap();
        Host {
            runtime,
            prepared,
            deadline,
        }
    }

    /// Calls the component, placed locally, with a body, its content type and
    /// the deployment's settings.
    pub fn call(
        &self,
        content_type: &str,
        body: &[u8],
        settings: &[(&str, &str)],
    ) -> Result<Outcome, CallError> {
        let settings: Vec<(String, String)> = settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let limits = Limits {
            deadline: self.deadline,
            ..Limits::default()
        };
        let deployment = Deployment::new(Placement::Local, limits, &settings);
        let request = Request {
            content_type: content_type.into(),
            body: body.to_vec(),
            attributes: vec![],
            truncated: false,
        };
        self.runtime.call(&self.prepared, &deployment, &request)
    }
}

/// How two engines (tract and ONNX Runtime, or two of ONNX Runtime's
/// providers) compare on the same inputs.
#[derive(Debug, Default)]
pub struct Agreement {
    /// The two engines' names.
    pub engines: [String; 2],
    /// Each engine's mean time per call, in milliseconds (model only; the
    /// first call, which may compile, left out when there are others).
    pub ms_per_call: [f64; 2],
    /// For [`openvino_agrees`]: node runs of the second engine by the
    /// provider that ran them, from ONNX Runtime's profile.
    pub node_runs: std::collections::BTreeMap<String, usize>,
    /// The largest absolute difference over every float output.
    pub max_abs_diff: f32,
    /// "case N: output 'X'" for each non-float output that differs, and each
    /// float output whose arg-max differs.
    pub mismatches: Vec<String>,
}

impl Agreement {
    /// [`Agreement::assert_close`], and no input answered differently.
    pub fn assert_agree(&self, what: &str, cases: usize) {
        self.assert_close(what, cases);
        assert!(self.mismatches.is_empty(), "{what}: {:?}", self.mismatches);
    }

    /// Prints the comparison of `cases` inputs of `what`, and holds every
    /// float output to 1e-4.
    pub fn assert_close(&self, what: &str, cases: usize) {
        let [a, b] = &self.engines;
        let [ta, tb] = self.ms_per_call;
        println!(
            "{what}: {a} vs {b} on {cases} inputs: max |diff| {:.2e}, mismatches {:?}; per call {a} {ta:.3} ms, {b} {tb:.3} ms{}",
            self.max_abs_diff,
            self.mismatches,
            if self.node_runs.is_empty() {
                String::new()
            } else {
                format!("; {b}'s node runs by provider {:?}", self.node_runs)
            }
        );
        assert!(
            self.max_abs_diff <= 1e-4,
            "{what}: {a} and {b} differ by {}",
            self.max_abs_diff
        );
    }
}

/// Runs each input through tract and through ONNX Runtime (one thread) and
/// compares them; outputs must have the same shape and type.
pub fn backends_agree(model: &Path, inputs: &[Vec<(String, Tensor)>]) -> Agreement {
    engines_agree(
        model,
        inputs,
        ("tract", EngineSpec::default()),
        ("onnxruntime", onnxruntime(1)),
    )
}

/// [`backends_agree`] for OpenVINO's provider (on its CPU plugin, one
/// thread) against ONNX Runtime's CPU provider (one thread), both from the
/// onnxruntime-openvino library `lib`: run it in [`openvino_child`].
pub fn openvino_agrees(lib: &Path, model: &Path, inputs: &[Vec<(String, Tensor)>]) -> Agreement {
    let cpu = EngineSpec {
        library: Some(lib.to_path_buf()),
        ..onnxruntime(1)
    };
    let dir = std::env::temp_dir().join(format!("verge-openvino-profile-{}", std::process::id()));
    let ov = EngineSpec {
        profile: Some(dir.join("profile")),
        ..openvino(lib, "CPU", 1, None)
    };
    let mut agreement = engines_agree(
        model,
        inputs,
        ("onnxruntime cpu provider", cpu),
        ("openvino CPU", ov),
    );
    agreement.node_runs = node_runs_by_provider(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    agreement
}

/// From the ONNX Runtime profiles (`*.json`) in `dir`: how many node runs
/// each execution provider made.
pub fn node_runs_by_provider(dir: &Path) -> std::collections::BTreeMap<String, usize> {
    let mut by = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().extension().is_none_or(|x| x != "json") {
            continue;
        }
        let events: Vec<Value> = serde_json::from_slice(&std::fs::read(e.path()).unwrap())
            .unwrap_or_else(|err| panic!("{}: {err}", e.path().display()));
        for ev in events {
            if ev["cat"] == "Node" && ev["name"].as_str().unwrap_or("").ends_with("_kernel_time") {
                let p = ev["args"]["provider"].as_str().unwrap_or("?").to_string();
                *by.entry(p).or_default() += 1;
            }
        }
    }
    by
}

/// Runs each input through two engines and compares them; outputs must have
/// the same shape and type.
pub fn engines_agree(
    model: &Path,
    inputs: &[Vec<(String, Tensor)>],
    (a_name, a_engine): (&str, EngineSpec),
    (b_name, b_engine): (&str, EngineSpec),
) -> Agreement {
    let graphs = Graphs::load(&[
        ModelSpec {
            name: "a".into(),
            path: model.into(),
            engine: a_engine,
        },
        ModelSpec {
            name: "b".into(),
            path: model.into(),
            engine: b_engine,
        },
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let mut first = graphs.get("a").unwrap().context();
    let mut second = graphs.get("b").unwrap().context();
    let mut agreement = Agreement {
        engines: [a_name.into(), b_name.into()],
        ..Agreement::default()
    };
    let mut times = [Duration::ZERO; 2];
    for (case, input) in inputs.iter().enumerate() {
        let started = std::time::Instant::now();
        let a = first
            .compute_named(input.clone())
            .unwrap_or_else(|e| panic!("{a_name}, case {case}: {e}"));
        let between = std::time::Instant::now();
        let b = second
            .compute_named(input.clone())
            .unwrap_or_else(|e| panic!("{b_name}, case {case}: {e}"));
        if case > 0 || inputs.len() == 1 {
            times[0] += between - started;
            times[1] += between.elapsed();
        }
        assert_eq!(a.len(), b.len(), "case {case}: output count");
        for ((name, x), (other, y)) in a.iter().zip(&b) {
            assert_eq!(name, other, "case {case}: outputs in a different order");
            assert_eq!(
                (&x.dims, x.ty),
                (&y.dims, y.ty),
                "case {case}: output '{name}'"
            );
            let same = if x.ty == ElementType::F32 {
                let (x, y) = (floats(&x.data), floats(&y.data));
                for (p, q) in x.iter().zip(&y) {
                    let d = (p - q).abs();
                    // NaN on either side counts as the largest difference.
                    agreement.max_abs_diff = if d.is_nan() {
                        f32::INFINITY
                    } else {
                        agreement.max_abs_diff.max(d)
                    };
                }
                argmax(&x) == argmax(&y)
            } else {
                x.data == y.data
            };
            if !same {
                agreement
                    .mismatches
                    .push(format!("case {case}: output '{name}'"));
            }
        }
    }
    let timed = inputs.len().saturating_sub(1).max(1) as f64;
    agreement.ms_per_call = times.map(|t| t.as_secs_f64() * 1000.0 / timed);
    agreement
}

fn floats(data: &[u8]) -> Vec<f32> {
    data.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn argmax(v: &[f32]) -> Option<usize> {
    (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b]))
}

/// One wasi:nn behaviour-suite case (its JSON) through the probe component's
/// `nn-case` command: `Ok` when the probe's own check passed, else why not.
pub fn probe_nn_case(
    runtime: &Runtime,
    probe: &Prepared,
    deployment: &Deployment,
    case_json: &str,
) -> Result<(), String> {
    let request = Request {
        content_type: "application/json".into(),
        body: case_json.as_bytes().to_vec(),
        attributes: vec![("probe".into(), "nn-case".into())],
        truncated: false,
    };
    match runtime.call(probe, deployment, &request) {
        Ok(Outcome::Respond(r)) => {
            let v: Value = serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
            match v["ok"].as_bool() {
                Some(true) => Ok(()),
                _ => Err(v["why"].to_string()),
            }
        }
        other => Err(format!("{other:?}")),
    }
}
