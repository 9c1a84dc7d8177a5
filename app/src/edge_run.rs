//! Runs a built edge package locally as Lambda@Edge would (Node.js, the
//! package unzipped, events of its trigger): for `verge check`'s outcomes and
//! the summary's warm durations. The driver is the shim's own `invoke.mjs`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::build::Scratch;

const INVOKE: &str = include_str!("../../shims/lambda-edge/src/invoke.mjs");

/// One input's result: its outcome in `verge-device run`'s shape, and the
/// median time of the calls after the first (none for one call).
pub struct Invocation {
    pub outcome: Value,
    pub warm_ms: Option<f64>,
}

/// The oldest Node.js major that runs packs: Lambda@Edge's runtime
/// (nodejs22.x). Node 20 refuses their Wasm (multi-memory, extended-const).
const NODE_MAJOR: u32 = 22;

/// The Node.js that runs packages: `$VERGE_NODE`, else `node` on the path.
fn node() -> std::ffi::OsString {
    std::env::var_os("VERGE_NODE").unwrap_or_else(|| "node".into())
}

/// Which Node.js runs packages here, when one does and it is new enough.
pub fn node_version() -> Option<String> {
    usable_node().ok()
}

fn usable_node() -> Result<String> {
    let out = Command::new(node())
        .arg("--version")
        .output()
        .context("starting node ($VERGE_NODE, else node on the path)")?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let major = version
        .strip_prefix('v')
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    match major {
        Some(m) if out.status.success() && m >= NODE_MAJOR => Ok(version),
        _ => bail!(
            "node {version:?} cannot run edge packages: Lambda@Edge runs Node.js {NODE_MAJOR} \
             (nodejs{NODE_MAJOR}.x), and packs use Wasm features older Node refuses; \
             set $VERGE_NODE to a Node.js {NODE_MAJOR} or later"
        ),
    }
}

/// Each input (path, content type) through the package `zip`, `repeat` times each.
pub fn invoke(zip: &[u8], inputs: &[(PathBuf, String)], repeat: usize) -> Result<Vec<Invocation>> {
    let scratch = Scratch::new("invoke")?;
    let dir = scratch.0.join("package");
    zip::ZipArchive::new(std::io::Cursor::new(zip))
        .context("the package is not a zip")?
        .extract(&dir)
        .context("unzipping the package")?;
    let driver = scratch.0.join("invoke.mjs");
    std::fs::write(&driver, INVOKE)?;
    let request = json!({
        "inputs": inputs.iter().map(|(f, ct)| json!({ "file": absolute(f), "content_type": ct })).collect::<Vec<_>>(),
        "repeat": repeat,
    });
    usable_node()?;
    let mut child = Command::new(node())
        .arg(&driver)
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting node")?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(request.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "node exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut results = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: Value = serde_json::from_str(line).context("the driver's output")?;
        results.push(Invocation {
            outcome: device_shape(&v["outcome"]),
            warm_ms: v["warm_ms"].as_f64(),
        });
    }
    if results.len() != inputs.len() {
        bail!("node answered {} of {} inputs", results.len(), inputs.len());
    }
    Ok(results)
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The driver's `{kind, …}` as `verge-device run` prints an outcome.
/// A component error that `on_error = "pass"` turned into the request passed
/// on is an error here too: the shim logged it.
fn device_shape(o: &Value) -> Value {
    if let Some(logged) = o["logged"].as_array().filter(|l| !l.is_empty()) {
        let message: Vec<String> = logged
            .iter()
            .map(|l| l.as_str().map_or(l.to_string(), str::to_string))
            .collect();
        return json!({ "error": { "kind": "edge", "message": message.join("; ") } });
    }
    match o["kind"].as_str() {
        Some("respond") => json!({ "respond": {
            "status": o["status"],
            "content_type": o["content_type"],
            "headers": o["headers"],
            "body": o["body"],
        } }),
        Some("annotate") => json!({ "annotate": o["headers"] }),
        Some("defer") => json!({ "defer": o["reason"] }),
        _ => json!({ "error": { "kind": "edge", "message": o["error"] } }),
    }
}
