//! The deployable package: shim, transpiled component, models, manifest, in a
//! deterministic zip (same inputs, same bytes).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::json;
use zip::write::SimpleFileOptions;

use crate::quota::{self, Misfit, Trigger};
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
];

/// What to do when the component fails or traps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Let the request (or response) go on unchanged.
    Pass,
    /// Answer 503.
    Fail,
}

pub struct PackOptions {
    pub component: PathBuf,
    /// The wasi:nn provider component (nn_provider.wasm).
    pub provider: Vec<u8>,
    pub models: Vec<(String, PathBuf)>,
    pub trigger: Trigger,
    pub include_body: bool,
    pub memory_mb: u32,
    pub timeout_s: u32,
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

/// Builds the package and checks it against the trigger's quotas.
pub fn pack(opts: &PackOptions) -> Result<Package, PackError> {
    quota::check_settings(
        opts.trigger,
        opts.memory_mb,
        opts.timeout_s,
        opts.include_body,
    )?;
    let component = read(&opts.component)?;
    let composed = compose::plug_nn(&component, &opts.provider)?;
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
    for (name, path) in &opts.models {
        let bytes = read(path)?;
        let file = format!("models/{name}.onnx");
        let entry = json!({ "file": file, "sha256": sha256(&bytes), "bytes": bytes.len() });
        if models.insert(name.clone(), entry).is_some() {
            return Err(PackError::DuplicateModel(name.clone()));
        }
        files.insert(file, bytes);
    }
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
        "limits": limits,
        "models": models,
        "config": opts.config.iter().cloned().collect::<BTreeMap<_, _>>(),
        "imports": js.imports,
    });
    let mut text = serde_json::to_vec_pretty(&manifest).expect("a JSON value serialises");
    text.push(b'\n');
    files.insert("verge.json".into(), text);

    let zip = deterministic_zip(&files)?;
    quota::check_zip(opts.trigger, zip.len() as u64)?;
    Ok(Package {
        zip,
        manifest,
        imports: js.imports,
    })
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
