//! The `wasi:nn` behaviour suite: one table of cases (`cases.json`, models
//! written by `models.py`), run on every engine natively, through the device
//! host, through the provider component under wasmtime and through the packed
//! Lambda@Edge shim, and checked by [`check`] everywhere (the probe component
//! carries this crate, so the edge checks in Wasm with the same code).

use serde_json::Value;
use verge_nn::{ElementType, Tensor};

/// The cases, as shipped beside this crate.
pub const CASES_JSON: &str = include_str!("../cases.json");
/// The TensorFlow Lite table (models written by `tflite_models.py`).
pub const TFLITE_CASES_JSON: &str = include_str!("../tflite-cases.json");

/// How a case gets its graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// `graph.load-by-name`: what every component does.
    ByName,
    /// `graph.load` with the model's bytes: refused by every host.
    Bytes,
}

/// One case: a model, the inputs of one `compute`, and what must come back.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub model: String,
    pub load: Load,
    pub inputs: Vec<(String, Tensor)>,
    pub expect: Expect,
    /// For float outputs: |got - want| <= atol + rtol × |want| (NaN equals NaN);
    /// `None` compares bytes exactly.
    pub tolerance: Option<Tolerance>,
    /// The case as JSON, for hosts that run it inside a component (the probe's `nn-case`).
    pub json: String,
    /// The operators its model uses (`ops`, written by onnx_node_cases.py),
    /// for a count per operator.
    pub ops: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    pub rtol: f64,
    pub atol: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    Outputs(Vec<(String, Tensor)>),
    /// The code as WIT spells it, the message, and whether the engine's own
    /// words follow the message (after ": ").
    Error {
        code: String,
        message: String,
        detail: bool,
    },
}

/// What a host answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Outputs(Vec<(String, Tensor)>),
    Error { code: String, data: String },
}

impl Outcome {
    pub fn error(e: &verge_nn::NnError) -> Outcome {
        Outcome::Error {
            code: e.code.as_str().to_string(),
            data: e.data(),
        }
    }
}

/// A case run natively: its outcome on `graph` (or the error getting it), or,
/// where its model was refused at start, that refusal.
pub fn run_natively(
    case: &Case,
    graph: Result<verge_nn::Graph, verge_nn::NnError>,
    refused: &[(String, verge_nn::NnError)],
) -> Outcome {
    if let Some(got) = refusal(case, refused) {
        return got;
    }
    match graph.and_then(|g| g.context().compute_named(case.inputs.clone())) {
        Ok(outputs) => Outcome::Outputs(outputs),
        Err(e) => Outcome::error(&e),
    }
}

/// A case's outcome where its model was refused at start: that refusal.
pub fn refusal(case: &Case, refused: &[(String, verge_nn::NnError)]) -> Option<Outcome> {
    refused
        .iter()
        .find(|(name, _)| *name == case.model)
        .map(|(_, e)| Outcome::error(e))
}

/// An error code's WIT name from a generated enum's `Debug` text
/// (`ErrorCode::InvalidArgument` or `InvalidArgument` → `invalid-argument`),
/// for runners that hold wit-bindgen's or wasmtime's own enum.
pub fn code_name(debug: &str) -> String {
    let last = debug.rsplit("::").next().unwrap_or(debug);
    let mut out = String::new();
    for (i, c) in last.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Every case of [`CASES_JSON`].
pub fn cases() -> Vec<Case> {
    parse(CASES_JSON).expect("cases.json is valid")
}

/// Every case of [`TFLITE_CASES_JSON`].
pub fn tflite_cases() -> Vec<Case> {
    parse(TFLITE_CASES_JSON).expect("tflite-cases.json is valid")
}

/// The models the cases load by name (what a host must deploy for the suite).
pub fn models() -> Vec<String> {
    models_of(cases())
}

/// The models some cases load by name.
pub fn models_of(cases: Vec<Case>) -> Vec<String> {
    let mut v: Vec<String> = cases
        .into_iter()
        .filter(|c| c.load == Load::ByName && c.model != "nosuch")
        .map(|c| c.model)
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Parses a suite file (or one case, for the probe).
pub fn parse(text: &str) -> Result<Vec<Case>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    match v.get("cases") {
        Some(Value::Array(cases)) => cases.iter().map(case).collect(),
        _ => Ok(vec![case(&v)?]),
    }
}

fn text<'a>(v: &'a Value, key: &str) -> Result<&'a str, String> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("'{key}' must be a string in {v}"))
}

fn case(v: &Value) -> Result<Case, String> {
    let name = text(v, "name")?.to_string();
    let load = match v.get("load").and_then(Value::as_str) {
        None | Some("name") => Load::ByName,
        Some("bytes") => Load::Bytes,
        Some(other) => return Err(format!("{name}: unknown load '{other}'")),
    };
    let tensors = |key: &str| -> Result<Vec<(String, Tensor)>, String> {
        v.get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().map(tensor).collect())
            .unwrap_or(Ok(Vec::new()))
            .map_err(|e| format!("{name}: {e}"))
    };
    let expect = match v.get("error") {
        Some(e) => Expect::Error {
            code: text(e, "code")?.to_string(),
            message: text(e, "message")?.to_string(),
            detail: e.get("detail").and_then(Value::as_bool).unwrap_or(false),
        },
        None => Expect::Outputs(tensors("outputs")?),
    };
    let tolerance = v.get("tolerance").map(|t| Tolerance {
        rtol: t["rtol"].as_f64().unwrap_or(0.0),
        atol: t["atol"].as_f64().unwrap_or(0.0),
    });
    Ok(Case {
        tolerance,
        model: text(v, "model")?.to_string(),
        load,
        inputs: tensors("inputs")?,
        expect,
        name,
        json: v.to_string(),
        ops: v
            .get("ops")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|o| o.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

fn tensor(v: &Value) -> Result<(String, Tensor), String> {
    let name = text(v, "name")?.to_string();
    let ty = ElementType::parse(text(v, "type")?).ok_or_else(|| format!("bad type in {v}"))?;
    let dims: Vec<u32> = v
        .get("dims")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("'dims' missing in {v}"))?
        .iter()
        .map(|d| d.as_u64().map(|d| d as u32).ok_or("dims are numbers"))
        .collect::<Result<_, _>>()?;
    let data = match (v.get("values"), v.get("bytes")) {
        _ if v.get("b64").is_some() => {
            base64(v["b64"].as_str().ok_or("'b64' is a string")?).ok_or("'b64' is not base64")?
        }
        (Some(Value::Array(values)), _) => {
            let mut data = Vec::new();
            for x in values {
                encode(ty, x, &mut data).ok_or_else(|| format!("{x} is not a {ty}"))?;
            }
            data
        }
        (_, Some(n)) => vec![0; n.as_u64().ok_or("'bytes' is a number")? as usize],
        _ => return Err(format!("'values' or 'bytes' needed in {v}")),
    };
    Ok((name, Tensor::new(dims, ty, data)))
}

fn encode(ty: ElementType, x: &Value, out: &mut Vec<u8>) -> Option<()> {
    match ty {
        ElementType::F16 => out.extend(half::f16::from_f64(x.as_f64()?).to_le_bytes()),
        ElementType::Bf16 => out.extend(half::bf16::from_f64(x.as_f64()?).to_le_bytes()),
        ElementType::F32 => out.extend((x.as_f64()? as f32).to_le_bytes()),
        ElementType::F64 => out.extend(x.as_f64()?.to_le_bytes()),
        ElementType::U8 => out.push(u8::try_from(x.as_u64()?).ok()?),
        ElementType::I32 => out.extend(i32::try_from(x.as_i64()?).ok()?.to_le_bytes()),
        ElementType::I64 => out.extend(x.as_i64()?.to_le_bytes()),
    }
    Some(())
}

/// Standard base64 (with padding), as the cases' `b64` data is written.
fn base64(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        let take = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&n.to_be_bytes()[1..1 + take]);
    }
    Some(out)
}

/// Float elements of `t` as f64, for tolerant comparison.
fn floats(t: &Tensor) -> Option<Vec<f64>> {
    let f =
        |size: usize, conv: &dyn Fn(&[u8]) -> f64| t.data.chunks_exact(size).map(conv).collect();
    Some(match t.ty {
        ElementType::F16 => f(2, &|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64()),
        ElementType::Bf16 => f(2, &|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64()),
        ElementType::F32 => f(4, &|c| f32::from_le_bytes(c.try_into().unwrap()) as f64),
        ElementType::F64 => f(8, &|c| f64::from_le_bytes(c.try_into().unwrap())),
        _ => return None,
    })
}

fn same(want: &Tensor, got: &Tensor, tolerance: Option<Tolerance>) -> bool {
    if want.ty != got.ty || want.dims != got.dims {
        return false;
    }
    match (tolerance, floats(want), floats(got)) {
        (Some(t), Some(w), Some(g)) if w.len() == g.len() => w.iter().zip(&g).all(|(w, g)| {
            (w.is_nan() && g.is_nan()) || w == g || (g - w).abs() <= t.atol + t.rtol * w.abs()
        }),
        _ => want.data == got.data,
    }
}

fn describe(t: &Tensor) -> String {
    format!("{} ({} bytes)", t.describe(), t.data.len())
}

/// Whether `got` is what `case` expects; the mismatch, said plainly, if not.
pub fn check(case: &Case, got: &Outcome) -> Result<(), String> {
    match (&case.expect, got) {
        (Expect::Outputs(want), Outcome::Outputs(got)) => {
            let names =
                |v: &[(String, Tensor)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
            if names(want) != names(got) {
                return Err(format!(
                    "outputs {:?}, expected {:?}",
                    names(got),
                    names(want)
                ));
            }
            for ((name, w), (_, g)) in want.iter().zip(got) {
                if !same(w, g, case.tolerance) {
                    let head = |t: &Tensor| t.data.iter().take(32).copied().collect::<Vec<u8>>();
                    return Err(format!(
                        "output '{name}' is {} {:?}…, expected {} {:?}…",
                        describe(g),
                        head(g),
                        describe(w),
                        head(w)
                    ));
                }
            }
            Ok(())
        }
        (
            Expect::Error {
                code,
                message,
                detail,
            },
            Outcome::Error { code: c, data },
        ) => {
            let text_ok = if *detail {
                data.strip_prefix(message.as_str())
                    .is_some_and(|rest| rest.starts_with(": ") && rest.len() > 2)
            } else {
                data == message
            };
            if c == code && text_ok {
                Ok(())
            } else {
                let shape = if *detail {
                    "{message}: <engine's words>"
                } else {
                    "{message}"
                };
                Err(format!(
                    "error {c} '{data}', expected {code} '{message}' (as {shape})"
                ))
            }
        }
        (Expect::Outputs(_), Outcome::Error { code, data }) => {
            Err(format!("error {code} '{data}', expected outputs"))
        }
        (Expect::Error { code, message, .. }, Outcome::Outputs(got)) => Err(format!(
            "{} outputs, expected error {code} '{message}'",
            got.len()
        )),
    }
}

/// One line per case and a closing count, for a runner's report.
pub struct Report {
    pub runner: String,
    pub passed: usize,
    pub failed: Vec<String>,
}

impl Report {
    pub fn new(runner: &str) -> Report {
        Report {
            runner: runner.to_string(),
            passed: 0,
            failed: Vec::new(),
        }
    }

    pub fn record(&mut self, case: &Case, got: &Outcome) {
        match check(case, got) {
            Ok(()) => self.passed += 1,
            Err(why) => self.failed.push(format!("{}: {why}", case.name)),
        }
    }

    /// Prints the count and panics with every failure.
    pub fn finish(self) {
        println!(
            "wasi:nn behaviour suite on {}: {} passed, {} failed",
            self.runner,
            self.passed,
            self.failed.len()
        );
        assert!(
            self.failed.is_empty(),
            "{}:\n  {}",
            self.runner,
            self.failed.join("\n  ")
        );
    }
}

/// Whether an engine keeps its claims over a set of cases: a case whose
/// model the engine refuses at load (unsupported-operation: an operator,
/// attribute or type it does not run) is skipped; every case it loads must
/// pass. Counted per operator of the case's model.
#[derive(Default)]
pub struct Coverage {
    pub runner: String,
    /// operator → (passed, failed, skipped)
    pub ops: std::collections::BTreeMap<String, (usize, usize, usize)>,
    pub passed: usize,
    pub skipped: usize,
    pub failed: Vec<String>,
}

impl Coverage {
    pub fn new(runner: &str) -> Coverage {
        Coverage {
            runner: runner.to_string(),
            ..Coverage::default()
        }
    }

    /// Records a case: `got` is what the host answered, load errors included.
    pub fn record(&mut self, case: &Case, got: &Outcome) {
        let refused = matches!(got, Outcome::Error { code, .. } if code == "unsupported-operation")
            && !matches!(&case.expect, Expect::Error { code, .. } if code == "unsupported-operation");
        let slot = if refused {
            self.skipped += 1;
            2
        } else {
            match check(case, got) {
                Ok(()) => {
                    self.passed += 1;
                    0
                }
                Err(why) => {
                    self.failed.push(format!("{}: {why}", case.name));
                    1
                }
            }
        };
        for op in &case.ops {
            let e = self.ops.entry(op.clone()).or_default();
            match slot {
                0 => e.0 += 1,
                1 => e.1 += 1,
                _ => e.2 += 1,
            }
        }
    }

    /// The operators with at least one case run (passed or failed).
    pub fn claimed(&self) -> Vec<&str> {
        self.ops
            .iter()
            .filter(|(_, (p, f, _))| p + f > 0)
            .map(|(o, _)| o.as_str())
            .collect()
    }

    /// Prints the table (operators with a case run) and panics with every failure.
    pub fn finish(self) {
        println!(
            "{}: {} passed, {} failed, {} skipped (refused at load)",
            self.runner,
            self.passed,
            self.failed.len(),
            self.skipped
        );
        println!(
            "  {:<28} {:>6} {:>6} {:>7}",
            "operator", "passed", "failed", "skipped"
        );
        for (op, (p, f, s)) in &self.ops {
            if p + f > 0 {
                println!("  {op:<28} {p:>6} {f:>6} {s:>7}");
            }
        }
        assert!(
            self.failed.is_empty(),
            "{}: cases the engine loads must pass:\n  {}",
            self.runner,
            self.failed.join("\n  ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_parses_and_covers_every_kind_of_case() {
        let cases = cases();
        assert!(cases.len() >= 25, "{} cases", cases.len());
        let codes: std::collections::BTreeSet<String> = cases
            .iter()
            .filter_map(|c| match &c.expect {
                Expect::Error { code, .. } => Some(code.clone()),
                Expect::Outputs(_) => None,
            })
            .collect();
        for code in [
            "invalid-argument",
            "invalid-encoding",
            "not-found",
            "security",
            "unsupported-operation",
        ] {
            assert!(codes.contains(code), "no case expects {code}");
        }
        let types: std::collections::BTreeSet<&str> = cases
            .iter()
            .flat_map(|c| c.inputs.iter().map(|(_, t)| t.ty.as_str()))
            .collect();
        for t in ElementType::ALL {
            assert!(types.contains(t.as_str()), "no case hands in {t}");
        }
        assert_eq!(
            models(),
            [
                "add",
                "bool_input",
                "corrupt",
                "truncated",
                "types",
                "unnamed",
                "widen"
            ]
        );
    }

    #[test]
    fn base64_and_tolerance() {
        assert_eq!(base64("AAECAw==").unwrap(), [0, 1, 2, 3]);
        assert_eq!(base64("AAEC").unwrap(), [0, 1, 2]);
        assert_eq!(base64("AA==").unwrap(), [0]);
        assert!(base64("A").is_none() && base64("*A==").is_none());
        let t = |v: f32| Tensor::new(vec![1], ElementType::F32, v.to_le_bytes().to_vec());
        let tol = Some(Tolerance {
            rtol: 1e-3,
            atol: 1e-7,
        });
        assert!(same(&t(1.0), &t(1.0005), tol));
        assert!(!same(&t(1.0), &t(1.01), tol));
        assert!(same(&t(f32::NAN), &t(f32::NAN), tol));
        assert!(!same(&t(1.0), &t(1.0005), None));
    }

    #[test]
    fn code_names_from_generated_enums() {
        assert_eq!(code_name("ErrorCode::InvalidArgument"), "invalid-argument");
        assert_eq!(code_name("NotFound"), "not-found");
        for c in verge_nn::ErrorCode::ALL {
            assert_eq!(code_name(&format!("{c:?}")), c.as_str());
        }
    }

    #[test]
    fn check_compares_codes_messages_and_bytes() {
        let case = &cases()[0];
        let Expect::Outputs(want) = &case.expect else {
            panic!()
        };
        assert_eq!(check(case, &Outcome::Outputs(want.clone())), Ok(()));
        let mut off = want.clone();
        off[0].1.data[0] ^= 1;
        assert!(
            check(case, &Outcome::Outputs(off))
                .unwrap_err()
                .contains("output 'sum'")
        );
        let corrupt = cases().into_iter().find(|c| c.model == "corrupt").unwrap();
        let err = |data: &str| Outcome::Error {
            code: "invalid-encoding".into(),
            data: data.into(),
        };
        assert!(
            check(
                &corrupt,
                &err("model 'corrupt' cannot be loaded: tract: bad wire type")
            )
            .is_ok()
        );
        assert!(check(&corrupt, &err("model 'corrupt' cannot be loaded")).is_err());
        assert!(check(&corrupt, &err("model 'corrupt' cannot be loaded!: x")).is_err());
    }
}
