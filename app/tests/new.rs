//! `verge new NAME --lang rust|js|python`, as an author uses it: the project
//! is written outside this repository, its `test.sh` installs the toolchain
//! from the registries, builds NAME.wasm and runs it on the device host; then
//! the component is packed for CloudFront with `verge-edge pack` and called
//! as Lambda@Edge calls it, with the same answer.
//!
//! Needs the registries (npm, PyPI, crates.io), node, and what ./dev makes
//! (VERGE_WASM_DIR for the edge's engine). The Rust project is built with
//! this workspace's Cargo.lock and target folder, so the crates they share
//! are not built again.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use verge_testkit::scratch;

fn bin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_verge"))
        .parent()
        .unwrap()
        .join(name)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The outcome Lambda@Edge's handler gave for `input` (shims/lambda-edge/src/invoke.mjs).
fn at_the_edge(dir: &Path, wasm: &Path, input: &Path) -> Value {
    let out = dir.join("edge");
    let pack = Command::new(bin("verge-edge"))
        .env(
            "VERGE_NN_PROVIDER_DIR",
            std::env::var_os("VERGE_WASM_DIR").unwrap(),
        )
        .args(["pack", "--component"])
        .arg(wasm)
        .args([
            "--trigger",
            "origin-request",
            "--include-body",
            "--engine",
            "compact",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        pack.status.success(),
        "{}",
        String::from_utf8_lossy(&pack.stderr)
    );
    let unzipped = dir.join("edge-unzipped");
    zip::ZipArchive::new(std::fs::File::open(out.join("function.zip")).unwrap())
        .unwrap()
        .extract(&unzipped)
        .unwrap();
    let node = std::env::var_os("VERGE_NODE").unwrap_or_else(|| "node".into());
    let mut child = Command::new(node)
        .arg(repo().join("shims/lambda-edge/src/invoke.mjs"))
        .arg(&unzipped)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let request = serde_json::json!({ "inputs": [{ "file": input, "content_type": "text/plain" }], "repeat": 1 });
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        request.to_string().as_bytes(),
    )
    .unwrap();
    let done = child.wait_with_output().unwrap();
    assert!(done.status.success());
    let line: Value =
        serde_json::from_slice(done.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    line["outcome"].clone()
}

#[test]
fn a_new_component_builds_and_answers_alike_on_both_hosts_in_each_language() {
    if std::env::var_os("VERGE_WASM_DIR").is_none() {
        assert!(
            std::env::var("VERGE_REQUIRE_ALL").as_deref() != Ok("1"),
            "set VERGE_WASM_DIR (VERGE_REQUIRE_ALL=1)"
        );
        eprintln!("skipped: set VERGE_WASM_DIR");
        return;
    }
    let root = scratch("verge-new");
    for lang in ["rust", "js", "python"] {
        let name = format!("hello-{lang}");
        let dir = root.join(&name);
        let new = Command::new(env!("CARGO_BIN_EXE_verge"))
            .args(["new", &name, "--lang", lang, "--dir"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            new.status.success(),
            "{}",
            String::from_utf8_lossy(&new.stderr)
        );
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
        assert!(readme.lines().count() <= 10, "{readme}");
        if lang == "rust" {
            std::fs::copy(repo().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
        }
        let test = Command::new(dir.join("test.sh"))
            .env("VERGE_DEVICE", bin("verge-device"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&test.stdout);
        assert!(
            test.status.success(),
            "{lang}: {stdout}\n{}",
            String::from_utf8_lossy(&test.stderr)
        );
        let device: Value = serde_json::from_str(
            stdout
                .lines()
                .find(|l| l.starts_with("{\"respond\""))
                .unwrap(),
        )
        .unwrap();
        let body = &device["respond"]["body"];
        assert_eq!(body["message"], "hello, verge", "{lang}");
        let edge = at_the_edge(
            &dir,
            &dir.join(format!("{name}.wasm")),
            &dir.join("sample.txt"),
        );
        assert_eq!(edge["kind"], "respond", "{lang}: {edge}");
        assert_eq!(&edge["body"], body, "{lang}: the edge's answer");
        println!("{lang}: {stdout}");
    }
    std::fs::remove_dir_all(&root).unwrap();
}
