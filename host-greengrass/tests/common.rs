//! Where the tests find the built components and the fetched models.

#![allow(dead_code)]

use std::path::PathBuf;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A component built by `./dev build` (wasm32-wasip2, profile `component`).
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
        "{} is missing: build the components first (./dev test does)",
        path.display()
    );
    path
}

/// A model file extracted by `models/fetch.py`.
pub fn model(name: &str, file: &str) -> PathBuf {
    let dir = std::env::var_os("VERGE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("models/.cache"));
    let path = dir.join(name).join(file);
    assert!(
        path.exists(),
        "{} is missing: run python3 models/fetch.py first (./dev test does)",
        path.display()
    );
    path
}

pub fn magika() -> PathBuf {
    model("magika-standard-v3-3", "model.onnx")
}
