//! `verge-device run` as a user types it.

mod common;

use std::process::Command;

use serde_json::Value;

fn verge_device() -> Command {
    Command::new(env!("CARGO_BIN_EXE_verge-device"))
}

#[test]
fn run_prints_one_json_line_per_input() {
    let script = std::env::current_exe().unwrap();
    let out = verge_device()
        .arg("run")
        .arg(common::wasm("file_type"))
        .arg("--model")
        .arg(format!("magika={}", common::magika().display()))
        .args([
            "--input",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cli.rs"),
        ])
        .arg("--input")
        .arg(&script)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["respond"]["body"]["label"], "rust");
    assert_eq!(lines[1]["respond"]["body"]["label"], "elf");
    assert_eq!(lines[1]["respond"]["body"]["group"], "executable");
}

#[test]
fn failures_are_reported_with_a_nonzero_exit() {
    // A component error: exit 2, the error as JSON.
    let out = verge_device()
        .arg("run")
        .arg(common::wasm("probe"))
        .args(["--input", "/dev/null"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "invalid-input");

    // A missing model file, a malformed --model and a missing component: exit 1 or clap's 2, a message.
    let out = verge_device()
        .arg("run")
        .arg(common::wasm("file_type"))
        .args([
            "--model",
            "magika=/nonexistent.onnx",
            "--input",
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("model 'magika' (/nonexistent.onnx)"));

    let out = verge_device()
        .args(["run", "x.wasm", "--model", "magika", "--input", "/dev/null"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected KEY=VALUE"));

    let out = verge_device()
        .args(["run", "/nonexistent.wasm", "--input", "/dev/null"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading component /nonexistent.wasm"));
}
