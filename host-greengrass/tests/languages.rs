//! One component, three languages: fraud-score written in Rust
//! (components/fraud-score), JavaScript (components/fraud-score-js, with
//! componentize-qjs) and Python (components/fraud-score-py, with
//! componentize-py), each with its language's SDK, give the same outcomes on
//! the device host: the same responds, annotations and deferrals, and errors
//! of the same kind (their messages quote each language's own JSON parser).
//! The 18 MB Python component is compiled once and a restart loads it from
//! the cache.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use verge_testkit::serve::Daemon;
use verge_testkit::{model, scratch, sha256, wasm, workspace};

const LANGUAGES: [&str; 3] = ["fraud_score", "fraud_score_js", "fraud_score_py"];

fn fraud_model() -> PathBuf {
    model("fraud-score", "model.onnx", "python models/fraud_score.py")
}

/// The shop's transactions, and bodies each language must refuse.
fn inputs(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(workspace().join("examples/shop/inputs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    v.sort();
    let bad: [(&str, &[u8]); 7] = [
        ("empty", b""),
        ("blank", b"  \n"),
        ("array", b"[1, 2]"),
        ("missing", br#"{"amount": 1}"#),
        ("string", br#"{"amount": "12", "hour": 1}"#),
        ("not-json", b"{nope"),
        ("null-feature", br#"{"amount": null}"#),
    ];
    for (name, body) in bad {
        let p = dir.join(format!("{name}.json"));
        std::fs::write(&p, body).unwrap();
        v.push(p);
    }
    v
}

fn run(component: &str, inputs: &[PathBuf], config: &[&str]) -> Vec<Value> {
    let mut c = Command::new(env!("CARGO_BIN_EXE_verge-device"));
    c.arg("run")
        .arg(wasm(component))
        .arg("--model")
        .arg(format!("fraud-score={}", fraud_model().display()));
    for i in inputs {
        c.arg("--input").arg(i);
    }
    for k in config {
        c.args(["--config", k]);
    }
    let out = c.output().unwrap();
    // 2: some input got an error outcome, as the bad bodies must.
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "{component}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("ms");
            v
        })
        .collect()
}

/// An outcome with an error's message left out (its kind kept).
fn comparable(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(e) = v.get_mut("error").and_then(Value::as_object_mut) {
        e.remove("message");
    }
    v
}

#[test]
fn fraud_score_answers_alike_in_rust_javascript_and_python() {
    let dir = scratch("languages");
    let inputs = inputs(&dir);
    let settings: [&[&str]; 4] = [
        &[],
        &["high=0.6"],
        &["low=0.05", "high=0.3"],
        &["low=0.9", "high=0.2"],
    ];
    for config in settings {
        let rust = run("fraud_score", &inputs, config);
        assert_eq!(rust.len(), inputs.len());
        assert!(
            rust.iter().filter(|o| o.get("error").is_none()).count() >= 6
                || config == ["low=0.9", "high=0.2"],
            "{rust:?}"
        );
        for other in &LANGUAGES[1..] {
            let got = run(other, &inputs, config);
            for (r, g) in rust.iter().zip(&got) {
                if r.get("error").is_none() {
                    assert_eq!(r, g, "{other} with {config:?}");
                } else {
                    assert_eq!(comparable(r), comparable(g), "{other} with {config:?}: {g}");
                }
            }
            // Messages the SDKs word alike (not a parser's own words).
            for (r, g) in rust.iter().zip(&got) {
                let m = |v: &Value| v["error"]["message"].as_str().map(String::from);
                if let Some(rm) = m(r).filter(|m| !m.contains("not JSON") && !m.contains("setting"))
                {
                    assert_eq!(Some(rm), m(g), "{other} with {config:?}");
                }
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// One route per language on one daemon: the same transaction gets the same
/// outcome from each; a restart loads every component from the cache.
#[test]
fn a_daemon_serves_all_three_and_restarts_without_compiling() {
    let dir = scratch("languages-serve");
    let model = fraud_model();
    let mut config = format!(
        "state_dir = \"{}\"\n[api]\nlisten = \"127.0.0.1:0\"\n[models.fraud-score]\npath = \"{}\"\nsha256 = \"{}\"\n",
        dir.join("state").display(),
        model.display(),
        sha256(&model)
    );
    for name in LANGUAGES {
        let path = wasm(name);
        config.push_str(&format!(
            "[components.{name}]\npath = \"{}\"\nsha256 = \"{}\"\n[routes.{name}]\ncomponent = \"{name}\"\n",
            path.display(),
            sha256(&path)
        ));
    }
    let path = dir.join("verge.toml");
    std::fs::write(&path, config).unwrap();
    let body = std::fs::read(workspace().join("examples/shop/inputs/tx-late-risky.json")).unwrap();
    let mut loaded = Vec::new();
    for start in ["compiled", "cache"] {
        let mut d = Daemon::start(&path);
        let replies: Vec<Value> = LANGUAGES
            .iter()
            .map(|name| {
                let r = d.post(name, "application/json", &body);
                assert!(r.status < 500, "{name}: {}", r.text());
                r.json()
            })
            .collect();
        assert!(replies.windows(2).all(|w| w[0] == w[1]), "{replies:#?}");
        for l in d.all("component loaded") {
            assert_eq!(l["source"], start, "{l}");
            loaded.push((l["component"].clone(), start, l["ms"].as_u64().unwrap()));
        }
        assert!(d.terminate().success());
    }
    println!("{loaded:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
