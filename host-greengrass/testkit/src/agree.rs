//! Two engines run on the same inputs and compared, output by output.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use verge_device::nn::{ElementType, EngineSpec, Graphs, ModelSpec, Tensor};

use crate::engines::{onnxruntime, openvino};

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
/// onnxruntime-openvino library `lib`: run it in [`crate::openvino_child`].
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
