//! Where the tests find the built components, the fetched models and the
//! reference files; scratch folders and digests.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The workspace's root (this crate is `host-greengrass/testkit`).
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
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

/// Magika's model, extracted by `models/fetch.py`.
pub fn magika() -> PathBuf {
    model(
        "magika-standard-v3-3",
        "model.onnx",
        "python3 models/fetch.py",
    )
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

/// A fresh directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("verge-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A file's SHA-256, in hex (as configurations and manifests give it).
pub fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(bytes))
}
