//! Batching changes no answer: every shipped component, on every engine that
//! runs its model, gives the same outcomes with `--batch` as without it
//! (numbers within 1e-5), and the calls really were joined into fewer runs.
//!
//! `verge-device run --batch MAX:WAIT_US` runs its inputs concurrently
//! through the same batcher `serve` uses (`[models.X] batch`); the serve test
//! drives one through HTTP with a malformed and a hung call beside the good
//! ones (tests/serve.rs).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use verge_testkit::{magika, model, wasm, workspace};

/// How far a batched score may be from the unbatched one. Engines may round a
/// batched kernel differently (the batch changes how rows are tiled); the
/// widest seen here is reported by the test.
const TOLERANCE: f64 = 1e-5;

struct Case {
    component: &'static str,
    model: (&'static str, PathBuf),
    config: Vec<&'static str>,
    inputs: Vec<PathBuf>,
    engines: &'static [&'static str],
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

fn cases(scratch: &Path) -> Vec<Case> {
    let root = workspace();
    let models = verge_testkit::models_dir();
    // text-embed's inputs: sentences of one length in tokens batch together,
    // others run beside them.
    let sentences = [
        "The cat sat on the mat",
        "The dog ran in the park",
        "A bird sang in the tree",
        "It will rain tomorrow afternoon",
        "She ran a marathon in under three hours",
        "I ate a delicious pizza for dinner",
        "The team won the football match",
        "The soup was too salty",
    ];
    let texts: Vec<PathBuf> = sentences
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let p = scratch.join(format!("sentence-{i}.txt"));
            std::fs::write(&p, s).unwrap();
            p
        })
        .collect();
    let mut sources = files(&root.join("host-greengrass/src"), "rs");
    sources.truncate(12);
    let photos: Vec<PathBuf> = [
        "skimage-chelsea/chelsea.png",
        "skimage-coffee/coffee.png",
        "skimage-rocket/rocket.jpg",
    ]
    .iter()
    .map(|p| models.join(p))
    .collect();
    vec![
        Case {
            component: "file_type",
            model: ("magika", magika()),
            config: vec!["mode=respond"],
            inputs: sources,
            engines: &["tract", "onnxruntime"],
        },
        Case {
            component: "fraud_score",
            model: (
                "fraud-score",
                model("fraud-score", "model.onnx", "python models/fraud_score.py"),
            ),
            config: vec!["mode=respond"],
            inputs: files(&root.join("examples/shop/inputs"), "json"),
            engines: &["tract", "onnxruntime", "compact"],
        },
        Case {
            component: "text_embed",
            model: (
                "minilm",
                model(
                    "minilm-l6-v2-int8",
                    "model-gather-first.onnx",
                    "python models/gather_first.py",
                ),
            ),
            config: vec![
                "mode=respond",
                "label.food=I ate a delicious pizza for dinner|The soup was too salty",
                "label.sports=The team won the football match|She ran a marathon",
            ],
            inputs: texts,
            engines: &["tract", "onnxruntime"],
        },
        Case {
            component: "image_classify",
            model: (
                "efficientnet-lite0",
                model(
                    "efficientnet-lite0",
                    "model.onnx",
                    "python models/efficientnet_lite0.py",
                ),
            ),
            config: vec!["mode=respond"],
            // Each photo twice: the batch holds more than one of a kind.
            inputs: [photos.clone(), photos].concat(),
            engines: &["tract", "onnxruntime"],
        },
    ]
}

/// The outcomes of `verge-device run` over the case's inputs, and its stderr.
fn run(case: &Case, engine: &str, batch: Option<&str>) -> (Vec<Value>, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_verge-device"));
    c.arg("run")
        .arg(wasm(case.component))
        .arg("--model")
        .arg(format!("{}={}", case.model.0, case.model.1.display()))
        .args(["--backend", engine]);
    if engine == "onnxruntime" {
        c.arg("--onnxruntime-lib")
            .arg(verge_testkit::onnxruntime_lib());
    }
    for k in &case.config {
        c.args(["--config", k]);
    }
    for i in &case.inputs {
        c.arg("--input").arg(i);
    }
    if let Some(b) = batch {
        c.args(["--batch", b]);
    }
    let out = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{} on {engine} (batch {batch:?}): {stderr}",
        case.component
    );
    let outcomes: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            // Timings differ from run to run; the outcome is the rest.
            v.as_object_mut().unwrap().remove("ms");
            v
        })
        .collect();
    assert_eq!(outcomes.len(), case.inputs.len(), "{stderr}");
    (outcomes, stderr)
}

/// Compares two outcomes: the same shape, strings equal (or both numbers, as
/// a score in a header), numbers within [`TOLERANCE`]; returns the widest
/// difference between numbers.
fn same(a: &Value, b: &Value, at: &str) -> Result<f64, String> {
    let num = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse::<f64>().ok(),
        _ => None,
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            if x.keys().ne(y.keys()) {
                return Err(format!("{at}: keys {:?} against {:?}", x.keys(), y.keys()));
            }
            x.iter().try_fold(0.0f64, |w, (k, v)| {
                Ok(w.max(same(v, &y[k], &format!("{at}.{k}"))?))
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .try_fold(0.0f64, |w, (i, (p, q))| {
                Ok(w.max(same(p, q, &format!("{at}[{i}]"))?))
            }),
        _ if a == b => Ok(0.0),
        _ => match (num(a), num(b)) {
            (Some(x), Some(y)) if (x - y).abs() <= TOLERANCE => Ok((x - y).abs()),
            _ => Err(format!("{at}: {a} against {b}")),
        },
    }
}

/// "N calls in M runs" from `run --batch`'s report.
fn calls_and_runs(stderr: &str, model: &str) -> (usize, usize) {
    let line = stderr
        .lines()
        .find(|l| l.contains(&format!("model '{model}':")) && l.contains(" calls in "))
        .unwrap_or_else(|| panic!("no batch report for {model}: {stderr}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "calls").unwrap();
    (
        words[at - 1].parse().unwrap(),
        words[at + 2].parse().unwrap(),
    )
}

#[test]
fn every_shipped_component_answers_the_same_with_batching_on() {
    let scratch = verge_testkit::scratch("batching");
    let mut report = Vec::new();
    for case in cases(&scratch) {
        let mut joined = false;
        for engine in case.engines {
            let (alone, _) = run(&case, engine, None);
            // A long wait so that the concurrent inputs meet.
            let (batched, stderr) = run(&case, engine, Some("8:20000"));
            let (calls, runs) = calls_and_runs(&stderr, case.model.0);
            assert!(calls >= case.inputs.len(), "{stderr}");
            let mut widest = 0.0f64;
            for (i, (a, b)) in alone.iter().zip(&batched).enumerate() {
                widest = widest.max(
                    same(a, b, &format!("{} on {engine}, input {i}", case.component))
                        .unwrap_or_else(|e| panic!("{e}\nalone: {a}\nbatched: {b}")),
                );
            }
            report.push(format!(
                "{:<15} {engine:<12} {calls:>3} calls in {runs:>3} runs, widest difference {widest:.1e}",
                case.component
            ));
            joined |= runs < calls;
        }
        // Inputs of one shape (all but text-embed's, whose sentences differ
        // in length) were joined on some engine: a lone call never waits, so
        // on a model faster than instantiating a component (fraud-score on
        // ONNX Runtime) the calls may never meet.
        assert!(
            joined || case.component == "text_embed",
            "{}: no engine joined its calls\n{}",
            case.component,
            report.join("\n")
        );
    }
    println!("{}", report.join("\n"));
    std::fs::remove_dir_all(&scratch).unwrap();
}
