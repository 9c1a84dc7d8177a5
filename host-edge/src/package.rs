//! The deployable package: shim, transpiled component, models, manifest, in a
//! deterministic zip (same inputs, same bytes).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::json;
use zip::write::SimpleFileOptions;

use crate::quota::{self, Misfit, Runtime, Trigger};
use crate::{compose, sha256, transpile};

/// The Node shim, embedded so the packager needs nothing beside itself.
const SHIM: &[(&str, &str)] = &[
    (
        "index.mjs",
        include_str!("../../shims/lambda-edge/src/index.mjs"),
    ),
    (
        "cloudfront.mjs",
        include_str!("../../shims/lambda-edge/src/cloudfront.mjs"),
    ),
    (
        "wasi.mjs",
        include_str!("../../shims/lambda-edge/src/wasi.mjs"),
    ),
    (
        "host.mjs",
        include_str!("../../shims/lambda-edge/src/host.mjs"),
    ),
    (
        "models.mjs",
        include_str!("../../shims/lambda-edge/src/models.mjs"),
    ),
    (
        "onnxruntime.mjs",
        include_str!("../../shims/lambda-edge/src/onnxruntime.mjs"),
    ),
    (
        "engine-abi.mjs",
        include_str!("../../shims/lambda-edge/src/engine-abi.mjs"),
    ),
    (
        "cabi.mjs",
        include_str!("../../shims/lambda-edge/src/cabi.mjs"),
    ),
];

/// The `wasi:nn` engine a package runs its models on: ONNX Runtime's Node
/// binding (origin triggers: 17 MB), tract in the provider component (no
/// native code, 2.5 MB), or the compact engine there (a few hundred KB, for
/// viewer triggers).
pub use verge_nn::EngineKind as Engine;

/// The provider component that brings verge's wasi:nn for `engine`, or why
/// the edge has none.
pub fn provider_file(engine: Engine) -> Result<&'static str, PackError> {
    match engine {
        Engine::Onnxruntime => Ok("nn_provider_host.wasm"),
        Engine::Tract => Ok("nn_provider.wasm"),
        Engine::Compact => Ok("nn_provider_compact.wasm"),
        Engine::Tensorflowlite => Err(PackError::Unsupported(format!(
            "--engine tensorflowlite: {TFLITE_RUNS_ON_THE_DEVICE}"
        ))),
    }
}

/// Why a package cannot carry a TensorFlow Lite model.
pub const TFLITE_RUNS_ON_THE_DEVICE: &str = "TensorFlow Lite models run on the device host (verge-device, with libtensorflowlite_c), not at the edge: Node has no TFLite runtime, and TFLite's C library (4.8 MB) would need a native Node binding of its own, at origin triggers only; deploy this model to the device, or convert it to ONNX (tf2onnx) for the edge";

/// What a trigger gets when the user names no engine: native speed at
/// origin; at the viewer nothing native (nor tract) fits the 1 MB zip.
pub fn default_engine(trigger: Trigger) -> Engine {
    if trigger.is_viewer() {
        Engine::Compact
    } else {
        Engine::Onnxruntime
    }
}

/// An installed onnxruntime-node package: its version and the two files a
/// linux-x64 function needs (Lambda@Edge runs x86_64 only).
#[derive(Debug, Clone)]
pub struct OnnxruntimeNode {
    pub version: String,
    pub binding: PathBuf,
    pub library: PathBuf,
}

impl OnnxruntimeNode {
    /// The package at `explicit`, else at `$VERGE_ONNXRUNTIME_NODE`, else in
    /// `node_modules` here; the error says how to get one.
    pub fn find(explicit: Option<PathBuf>) -> anyhow::Result<OnnxruntimeNode> {
        let dir = explicit
            .or_else(|| std::env::var_os("VERGE_ONNXRUNTIME_NODE").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("node_modules/onnxruntime-node"));
        OnnxruntimeNode::at(&dir).map_err(|e| {
            anyhow::anyhow!(
                "the onnxruntime engine packs onnxruntime-node's binding, not found at {}: {e} (install it with `ONNXRUNTIME_NODE_INSTALL=skip npm install onnxruntime-node`, pass --onnxruntime-node DIR, or choose --engine tract)",
                dir.display()
            )
        })
    }

    /// The package at `dir` (the folder holding its package.json).
    pub fn at(dir: &Path) -> Result<OnnxruntimeNode, PackError> {
        let manifest = read(&dir.join("package.json"))?;
        let version = serde_json::from_slice::<serde_json::Value>(&manifest)
            .ok()
            .and_then(|v| v["version"].as_str().map(str::to_string))
            .ok_or_else(|| {
                PackError::Build(anyhow::anyhow!(
                    "{}: no version in package.json",
                    dir.display()
                ))
            })?;
        let bin = dir.join("bin/napi-v6/linux/x64");
        let node = OnnxruntimeNode {
            version,
            binding: bin.join("onnxruntime_binding.node"),
            library: bin.join("libonnxruntime.so.1"),
        };
        for f in [&node.binding, &node.library] {
            if !f.exists() {
                return Err(PackError::Build(anyhow::anyhow!(
                    "{} is missing: onnxruntime-node at {} has no linux-x64 binary",
                    f.display(),
                    dir.display()
                )));
            }
        }
        Ok(node)
    }
}

/// An engine's provider component ([`provider_file`]):
/// `$VERGE_NN_PROVIDER_DIR/<file>`, else the file beside this program or in
/// the cargo target folder it was built in.
pub fn find_provider(file: &str) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("VERGE_NN_PROVIDER_DIR") {
        return Some(Path::new(&dir).join(file));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [
        dir.join(file),
        dir.join("../wasm32-wasip2/component").join(file),
    ]
    .into_iter()
    .find(|p| p.exists())
}

/// Where a model comes from: a file packed into the zip, or a URL the shim
/// fetches once per container and checks against its sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    File(PathBuf),
    Url { url: String, sha256: String },
}

impl ModelSource {
    /// `PATH`, or `https://…#sha256=HEX`.
    pub fn parse(s: &str) -> Result<ModelSource, String> {
        if !(s.starts_with("https://") || s.starts_with("http://")) {
            return Ok(ModelSource::File(PathBuf::from(s)));
        }
        let (url, digest) = s
            .split_once("#sha256=")
            .ok_or_else(|| format!("a model URL needs its digest: {s}#sha256=<64 hex digits>"))?;
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("'{digest}' is not a sha256 (64 hex digits)"));
        }
        Ok(ModelSource::Url {
            url: url.to_string(),
            sha256: digest.to_ascii_lowercase(),
        })
    }
}

/// What to do when the component fails or traps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Let the request (or response) go on unchanged.
    Pass,
    /// Answer 503.
    Fail,
}

#[derive(Clone)]
pub struct PackOptions {
    pub component: PathBuf,
    /// The wasi:nn provider component of the engine ([`provider_file`]).
    pub provider: Vec<u8>,
    pub engine: Engine,
    /// For `Engine::Onnxruntime`: the binding to pack, or why there is none.
    pub onnxruntime_node: Result<OnnxruntimeNode, String>,
    /// Intra-op threads for `Engine::Onnxruntime` (0: one per vCPU the memory buys).
    pub threads: u32,
    pub models: Vec<(String, ModelSource)>,
    pub trigger: Trigger,
    pub include_body: bool,
    pub memory_mb: u32,
    pub timeout_s: u32,
    /// The Lambda runtime the template creates the function on.
    pub runtime: Runtime,
    pub on_error: OnError,
    pub config: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{0}")]
    Misfit(#[from] Misfit),
    #[error("{}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("model name '{0}' is given twice")]
    DuplicateModel(String),
    /// A model the compact engine cannot read, found at pack time.
    #[error("{0}")]
    Unsupported(String),
    /// A model that uses operators or attributes the compact engine does not run.
    #[error("model '{model}' uses what the compact engine does not run: {}; {}", .problems.join("; "), not_compact_hint(*.trigger))]
    NotCompact {
        model: String,
        problems: Vec<String>,
        trigger: Trigger,
    },
    /// The engine's parts are not on this machine (the onnxruntime-node binding).
    #[error("{0}")]
    EngineUnavailable(String),
    #[error("{0:#}")]
    Build(#[from] anyhow::Error),
}

/// A built package, not yet written anywhere.
pub struct Package {
    pub zip: Vec<u8>,
    pub manifest: serde_json::Value,
    /// The interfaces the transpiled component imports (what the shim provides).
    pub imports: Vec<String>,
}

fn read(path: &Path) -> Result<Vec<u8>, PackError> {
    std::fs::read(path).map_err(|error| PackError::Read {
        path: path.into(),
        error,
    })
}

/// Builds the package and checks it against the trigger's quotas: the
/// settings before anything is built, the zip once it is.
pub fn pack(opts: &PackOptions) -> Result<Package, PackError> {
    quota::check_settings(
        opts.trigger,
        opts.memory_mb,
        opts.timeout_s,
        opts.include_body,
    )?;
    let package = build(opts)?;
    quota::check_zip(opts.trigger, package.zip.len() as u64)?;
    Ok(package)
}

/// Builds the package, checked against nothing of the trigger's quotas: what
/// [`pack`] checks, and what the dry run measures and judges itself.
pub fn build(opts: &PackOptions) -> Result<Package, PackError> {
    let component = read(&opts.component)?;
    let plugged = compose::plug_nn(&component, &opts.provider)?;
    // A component that does no inference needs no engine.
    let nn = plugged.is_some();
    let composed = plugged.unwrap_or_else(|| component.clone());
    let js = transpile::to_js(&composed, "component")?;

    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (name, text) in SHIM {
        files.insert((*name).to_string(), text.as_bytes().to_vec());
    }
    files.insert(
        "package.json".into(),
        b"{ \"type\": \"module\" }\n".to_vec(),
    );
    for (name, bytes) in js.files {
        files.insert(format!("component/{name}"), bytes);
    }
    let mut models = serde_json::Map::new();
    for (name, source) in &opts.models {
        let entry = match source {
            ModelSource::File(path) => {
                let bytes = read(path)?;
                if Engine::runs_tflite(&bytes) {
                    return Err(PackError::Unsupported(format!(
                        "model '{name}' ({}) is a TensorFlow Lite model. {TFLITE_RUNS_ON_THE_DEVICE}",
                        path.display()
                    )));
                }
                if opts.engine == Engine::Compact {
                    check_compact(name, &bytes, opts.trigger)?;
                }
                let file = format!("models/{name}.onnx");
                let entry = json!({ "file": file, "sha256": sha256(&bytes), "bytes": bytes.len() });
                files.insert(file, bytes);
                entry
            }
            ModelSource::Url { .. } if opts.engine != Engine::Onnxruntime => {
                return Err(PackError::Build(anyhow::anyhow!(
                    "model '{name}' is a URL: URL models need --engine onnxruntime (the {} provider reads bundled bytes, and could not report a failed download)",
                    opts.engine.as_str()
                )));
            }
            ModelSource::Url { url, sha256 } => json!({ "url": url, "sha256": sha256 }),
        };
        if models.insert(name.clone(), entry).is_some() {
            return Err(PackError::DuplicateModel(name.clone()));
        }
    }
    let engine = match (opts.engine, &opts.onnxruntime_node) {
        _ if !nn => json!({ "name": "none" }),
        (Engine::Tract | Engine::Compact, _) => json!({ "name": opts.engine.as_str() }),
        (Engine::Tensorflowlite, _) => return Err(provider_file(opts.engine).unwrap_err()),
        (Engine::Onnxruntime, Err(why)) => {
            return Err(PackError::EngineUnavailable(why.clone()));
        }
        (Engine::Onnxruntime, Ok(node)) => {
            files.insert(
                "onnxruntime/onnxruntime_binding.node".into(),
                read(&node.binding)?,
            );
            files.insert(
                "onnxruntime/libonnxruntime.so.1".into(),
                read(&node.library)?,
            );
            // Lambda gives about one vCPU per 1,769 MB of memory.
            let threads = match opts.threads {
                0 => (opts.memory_mb / 1769).max(1),
                n => n,
            };
            json!({
                "name": "onnxruntime",
                "onnxruntime_node": node.version,
                "threads": threads,
                "binding": "onnxruntime/onnxruntime_binding.node",
            })
        }
    };
    // Every event's size quotas, from quota.rs: the shim keeps no table of its own.
    let limits: serde_json::Map<String, serde_json::Value> = Trigger::ALL
        .iter()
        .map(|t| {
            let l = t.limits();
            let row = json!({ "body_bytes": l.body_bytes, "response_bytes": l.response_bytes });
            (t.event_type().to_string(), row)
        })
        .collect();
    let manifest = json!({
        "verge": 1,
        "component": {
            "name": opts.component.file_name().map(|n| n.to_string_lossy().to_string()),
            "sha256": sha256(&component),
            "bytes": component.len(),
        },
        "composed_sha256": sha256(&composed),
        "trigger": opts.trigger,
        "include_body": opts.include_body,
        "on_error": opts.on_error,
        "memory_mb": opts.memory_mb,
        "timeout_s": opts.timeout_s,
        "runtime": opts.runtime,
        "limits": limits,
        "models": models,
        "engine": engine,
        "config": opts.config.iter().cloned().collect::<BTreeMap<_, _>>(),
        "imports": js.imports,
        // What verge-edge changed in the generated glue (transpile.rs).
        "glue": {
            "generator": transpile::GENERATOR,
            "byte_copies": js.rewrites.byte_copies,
            "bookkeeping_calls": js.rewrites.bookkeeping_calls,
            "debug_logs": js.rewrites.debug_logs,
            "hybrid_checks": js.rewrites.hybrid_checks,
        },
    });
    let mut text = serde_json::to_vec_pretty(&manifest).expect("a JSON value serialises");
    text.push(b'\n');
    files.insert("verge.json".into(), text);

    let zip = deterministic_zip(&files)?;
    Ok(Package {
        zip,
        manifest,
        imports: js.imports,
    })
}

/// A model the compact engine must run, checked now rather than at the
/// first request: the same reader and operator table as the provider.
fn check_compact(name: &str, bytes: &[u8], trigger: Trigger) -> Result<(), PackError> {
    let problems = verge_nn_compact::unsupported(bytes)
        .map_err(|e| PackError::Unsupported(format!("model '{name}': {}", e.data())))?;
    if problems.is_empty() {
        return Ok(());
    }
    Err(PackError::NotCompact {
        model: name.to_string(),
        problems,
        trigger,
    })
}

fn not_compact_hint(trigger: Trigger) -> &'static str {
    if trigger.is_viewer() {
        "pack it for an origin trigger (origin-request or origin-response) with --engine onnxruntime or tract, where the larger engines fit"
    } else {
        "choose --engine onnxruntime or tract"
    }
}

/// Sorted entries, fixed timestamps and permissions: the same inputs give the
/// same bytes, so a package's sha256 identifies it.
fn deterministic_zip(files: &BTreeMap<String, Vec<u8>>) -> anyhow::Result<Vec<u8>> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(9))
        .last_modified_time(zip::DateTime::default())
        .unix_permissions(0o644);
    for (name, bytes) in files {
        zip.start_file(name.as_str(), options)?;
        zip.write_all(bytes)?;
    }
    Ok(zip.finish()?.into_inner())
}
