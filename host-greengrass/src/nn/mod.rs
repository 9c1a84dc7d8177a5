//! `wasi:nn` for the device: the models a deployment names, each loaded once
//! by the engine it asks for (tract, or ONNX Runtime with the device's
//! execution providers) and shared by every instance.
//!
//! Everything a component can observe (checks, widening, error codes and
//! messages, the by-name policy) is `verge-nn`'s, the same as at the edge;
//! this module only chooses and loads engines, and `wit.rs` is the wasmtime
//! glue that hands components the real error codes.

mod onnxruntime;
mod tensorflowlite;
pub mod wit;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use verge_nn::Engine;
pub use verge_nn::batch::{BatchPolicy, BatchStats, Batching};
pub use verge_nn::{ElementType, ErrorCode, Graph, Id, NnError, Tensor};

pub use onnxruntime::{available_providers, library_candidates};
pub use tensorflowlite::TfliteSpec;

/// Whether a model file is TensorFlow Lite's (else ONNX).
pub fn is_tflite(bytes: &[u8]) -> bool {
    Backend::runs_tflite(bytes)
}

/// Where the TensorFlow Lite C library is looked for (see [`tensorflowlite`]).
pub fn tensorflowlite_library_candidates(explicit: Option<&std::path::Path>) -> Vec<PathBuf> {
    tensorflowlite::library_candidates(explicit)
}

/// The engine that runs a model (`backend` in the configuration).
pub use verge_nn::EngineKind as Backend;

/// An ONNX Runtime execution provider, for the `gpu` target (and `cpu`,
/// ONNX Runtime's own).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Tensorrt,
    Cuda,
    Openvino,
    Cpu,
}

impl Provider {
    pub const ALL: [Provider; 4] = [
        Provider::Tensorrt,
        Provider::Cuda,
        Provider::Openvino,
        Provider::Cpu,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Tensorrt => "tensorrt",
            Provider::Cuda => "cuda",
            Provider::Openvino => "openvino",
            Provider::Cpu => "cpu",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `wasi:nn`'s execution target, chosen by the deployment for each model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    #[default]
    Cpu,
    /// An accelerator through ONNX Runtime's execution providers.
    Gpu,
}

/// How the deployment wants one model run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineSpec {
    pub backend: Backend,
    /// Intra-op threads; 0 is the backend's default (tract: the calling
    /// thread; ONNX Runtime: one pool, a thread per core, shared by every
    /// model left at 0). N > 0 on ONNX Runtime is a pool of N per session.
    pub threads: usize,
    pub target: Target,
    /// ONNX Runtime execution providers to try, in order, for `Target::Gpu`;
    /// empty means TensorRT then CUDA.
    pub providers: Vec<Provider>,
    /// The `libonnxruntime` to load; `None` searches the usual places.
    pub library: Option<PathBuf>,
    /// When ONNX Runtime (or a provider) is missing or refuses the model,
    /// run the model on tract instead of failing to start.
    pub fallback_to_tract: bool,
    /// The provider's device: OpenVINO's `device_type` (`CPU`, `GPU`, `GPU.1`,
    /// `NPU`, `AUTO:GPU,CPU`, `HETERO:GPU,CPU`, …), CUDA's and TensorRT's
    /// device id (`0`, `1`, …); `None` is the provider's default. Checked by
    /// [`EngineSpec::validate`] against every provider it may reach.
    pub device: Option<String>,
    /// Where execution providers keep what they compile, so a restart loads it
    /// instead of compiling again: `DIR/<provider>/<model>-<sha256 prefix>/`
    /// (OpenVINO's compiled blobs, TensorRT's engines and timing cache). The
    /// daemon's is `state_dir/cache`; `None` keeps nothing.
    pub cache_dir: Option<PathBuf>,
    /// Writes ONNX Runtime's profile of every session to `PREFIX_<time>.json`
    /// when the session ends: each node's time and the provider that ran it.
    pub profile: Option<PathBuf>,
    /// Concurrent calls batched along the model's leading dimension
    /// ([`verge_nn::batch`]); `None` runs each call on its own.
    pub batch: Option<BatchPolicy>,
    /// Whether the configuration named the backend; when it did not, the
    /// file decides: a TensorFlow Lite flatbuffer runs on `tensorflowlite`.
    pub named: bool,
    /// The TensorFlow Lite library and delegate, for TFLite models.
    pub tensorflowlite: TfliteSpec,
}

/// `[models.NAME] batch = { max = 8, wait_us = 500 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSettings {
    /// Rows in one batch at most (2 or more).
    pub max: usize,
    /// How long a batch waits for more calls, in microseconds, while calls
    /// have been arriving together (a lone call never waits).
    #[serde(default)]
    pub wait_us: u64,
}

impl BatchSettings {
    pub fn policy(self) -> BatchPolicy {
        BatchPolicy {
            max: self.max,
            wait: std::time::Duration::from_micros(self.wait_us),
        }
    }
}

/// The largest batch a model may be configured with.
pub const MAX_BATCH: usize = 256;
/// The longest a batch may wait for company: 100 ms.
pub const MAX_BATCH_WAIT_US: u64 = 100_000;

/// `[models.NAME]`: a model the deployment ships, checked by digest, and
/// how to run it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    pub path: PathBuf,
    pub sha256: String,
    /// None: the deployment's default ([`ModelSettings::backend`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<Backend>,
    #[serde(default)]
    pub threads: usize,
    #[serde(default)]
    pub target: Target,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<Provider>,
    /// The providers' device: OpenVINO's device type ("CPU", "GPU", "NPU",
    /// "AUTO:GPU,CPU", …), CUDA's and TensorRT's device id ("0"). What they
    /// compile is kept under `state_dir/cache/<provider>/`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The only fallback is tract, which is always there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Backend>,
    /// Batch concurrent calls (off by default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchSettings>,
    /// TensorFlow Lite only: run on the XNNPack delegate (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xnnpack: Option<bool>,
}

/// `[tensorflowlite]`: the library every TensorFlow Lite model shares.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorflowLiteSettings {
    /// The `libtensorflowlite_c` to load.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub library: Option<PathBuf>,
}

/// The libraries the deployment configures, which every model shares.
#[derive(Debug, Clone, Copy, Default)]
pub struct Libraries<'a> {
    pub onnxruntime: Option<&'a OnnxRuntimeSettings>,
    pub tensorflowlite: Option<&'a TensorflowLiteSettings>,
}

/// `[onnxruntime]`: the library every onnxruntime model shares.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxRuntimeSettings {
    /// The `libonnxruntime` to load.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub library: Option<PathBuf>,
}

impl ModelSettings {
    /// The engine the model runs on, and whether it falls back to tract. A
    /// model that names none runs on ONNX Runtime where the deployment ships
    /// its library (`[onnxruntime] library`), falling back to tract on a
    /// device where the library is absent or refuses the model; on tract
    /// where no library is configured.
    pub fn backend(&self, onnxruntime: Option<&OnnxRuntimeSettings>) -> (Backend, bool) {
        match self.backend {
            Some(b) => (b, self.fallback == Some(Backend::Tract)),
            None if onnxruntime.is_some_and(|o| o.library.is_some()) => {
                (Backend::Onnxruntime, true)
            }
            None => (Backend::Tract, false),
        }
    }

    /// The model as the engines load it.
    pub fn spec(&self, name: &str, libraries: Libraries, cache_dir: PathBuf) -> ModelSpec {
        let onnxruntime = libraries.onnxruntime;
        let (backend, fallback_to_tract) = self.backend(onnxruntime);
        ModelSpec {
            name: name.to_string(),
            path: self.path.clone(),
            engine: EngineSpec {
                backend,
                threads: self.threads,
                target: self.target,
                providers: self.providers.clone(),
                library: onnxruntime.and_then(|o| o.library.clone()),
                fallback_to_tract,
                device: self.device.clone(),
                cache_dir: Some(cache_dir),
                profile: None,
                batch: self.batch.map(BatchSettings::policy),
                named: self.backend.is_some(),
                tensorflowlite: TfliteSpec {
                    library: libraries.tensorflowlite.and_then(|t| t.library.clone()),
                    xnnpack: self.xnnpack.unwrap_or(true),
                },
            },
        }
    }

    /// The section's own checks, with the deployment's `[onnxruntime]`.
    pub fn check(&self, name: &str, libraries: Libraries) -> Result<(), String> {
        if self.fallback == Some(Backend::Onnxruntime) {
            return Err(format!("model '{name}': the only fallback is \"tract\""));
        }
        if self.batch.is_some_and(|b| b.max < 2 || b.max > MAX_BATCH) {
            return Err(format!(
                "model '{name}': batch.max is from 2 to {MAX_BATCH}"
            ));
        }
        if self.batch.is_some_and(|b| b.wait_us > MAX_BATCH_WAIT_US) {
            return Err(format!(
                "model '{name}': batch.wait_us is at most {MAX_BATCH_WAIT_US} (a batch's wait is spent by every call in it)"
            ));
        }
        if self.backend.is_none() && self.fallback.is_some() {
            return Err(format!(
                "model '{name}': a fallback applies to backend = \"onnxruntime\" (a model that names no backend already falls back to tract)"
            ));
        }
        if self.xnnpack.is_some() && self.backend.is_some_and(|b| b != Backend::Tensorflowlite) {
            return Err(format!(
                "model '{name}': xnnpack applies to TensorFlow Lite models (backend \"tensorflowlite\", or none)"
            ));
        }
        self.spec(name, libraries, PathBuf::new())
            .engine
            .validate()
            .map_err(|e| format!("model '{name}': {e}"))
    }
}

/// One model of the deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    pub name: String,
    pub path: PathBuf,
    pub engine: EngineSpec,
}

impl EngineSpec {
    /// Combinations that cannot be meant, said before anything loads.
    pub fn validate(&self) -> Result<(), String> {
        if self.backend != Backend::Onnxruntime {
            if self.target == Target::Gpu {
                return Err("the gpu target needs the onnxruntime backend".into());
            }
            if self.fallback_to_tract {
                return Err("a fallback to tract only applies to the onnxruntime backend".into());
            }
        }
        if !self.providers.is_empty() && self.target != Target::Gpu {
            return Err("execution providers apply to the gpu target only".into());
        }
        if let Some(device) = &self.device {
            if self.target != Target::Gpu {
                return Err("a device applies to the gpu target's providers only".into());
            }
            for p in self.gpu_providers() {
                p.check_device(device)?;
            }
        }
        Ok(())
    }

    /// The providers the gpu target tries, in order: the configured ones, or
    /// TensorRT then CUDA.
    pub fn gpu_providers(&self) -> Vec<Provider> {
        if self.providers.is_empty() {
            vec![Provider::Tensorrt, Provider::Cuda]
        } else {
            self.providers.clone()
        }
    }
}

impl Provider {
    /// Whether `device` names a device of this provider: OpenVINO a device
    /// type (`CPU`, `GPU`, `GPU.N`, `NPU`, or `AUTO:`/`HETERO:`/`MULTI:` and a
    /// comma-separated list of those), CUDA and TensorRT a device id. ONNX
    /// Runtime's CPU provider, a last resort in a list, has no device.
    pub fn check_device(self, device: &str) -> Result<(), String> {
        let ok = match self {
            Provider::Openvino => {
                let list = ["AUTO:", "HETERO:", "MULTI:"]
                    .iter()
                    .find_map(|p| device.strip_prefix(p));
                let one = |d: &str| {
                    matches!(d, "CPU" | "GPU" | "NPU")
                        || d.strip_prefix("GPU.")
                            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                };
                match list {
                    Some(l) => !l.is_empty() && l.split(',').all(one),
                    None => device == "AUTO" || one(device),
                }
            }
            Provider::Cuda | Provider::Tensorrt => {
                !device.is_empty() && device.len() < 4 && device.bytes().all(|b| b.is_ascii_digit())
            }
            Provider::Cpu => true,
        };
        if ok {
            return Ok(());
        }
        Err(match self {
            Provider::Openvino => format!(
                "device '{device}' is not an OpenVINO device type: CPU, GPU, GPU.N, NPU, or AUTO:/HETERO:/MULTI: and a comma-separated list of them (e.g. \"HETERO:GPU,CPU\")"
            ),
            _ => format!("device '{device}' is not a {self} device id: a number such as \"0\""),
        })
    }
}

impl ModelSpec {
    /// A model on tract with default settings.
    pub fn tract(name: impl Into<String>, path: impl Into<PathBuf>) -> ModelSpec {
        ModelSpec {
            name: name.into(),
            path: path.into(),
            engine: EngineSpec::default(),
        }
    }
}

/// How a model ended up being loaded.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub name: String,
    pub backend: Backend,
    /// The execution provider registered for it (ONNX Runtime only; nodes
    /// that provider cannot run still run on ONNX Runtime's CPU provider).
    pub providers: Vec<String>,
    /// The folder that provider keeps its compiled form of the model in.
    pub cache: Option<PathBuf>,
    /// Why the configured backend was replaced by tract, if it was.
    pub fallback: Option<String>,
}

/// A model that could not be loaded, with the file it came from.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("model '{name}' ({}): {error}", path.display())]
    Read {
        name: String,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("model '{name}' ({}) on {backend}: {error}", path.display())]
    Model {
        name: String,
        path: PathBuf,
        backend: Backend,
        error: NnError,
    },
    #[error("model name '{0}' is given twice")]
    Duplicate(String),
}

struct Entry {
    graph: Graph,
    loaded: Loaded,
}

/// Models by name, loaded once; cloning shares them.
#[derive(Clone, Default)]
pub struct Graphs(Arc<HashMap<String, Entry>>);

impl Graphs {
    /// Loads and optimises each model with the engine it asks for.
    pub fn load(models: &[ModelSpec]) -> Result<Graphs, LoadError> {
        let read = models
            .iter()
            .map(|spec| Ok((spec.clone(), read(spec)?)))
            .collect::<Result<Vec<_>, LoadError>>()?;
        Self::load_bytes(read)
    }

    /// [`Graphs::load`] for models already read (and checked) by the caller.
    pub fn load_bytes(models: Vec<(ModelSpec, Vec<u8>)>) -> Result<Graphs, LoadError> {
        let mut map = HashMap::new();
        for (spec, bytes) in &models {
            let (graph, loaded) = load_one(spec, bytes)?;
            if map
                .insert(spec.name.clone(), Entry { graph, loaded })
                .is_some()
            {
                return Err(LoadError::Duplicate(spec.name.clone()));
            }
        }
        Ok(Graphs(Arc::new(map)))
    }

    /// The model deployed under a name.
    pub fn get(&self, name: &str) -> Option<&Graph> {
        self.0.get(name).map(|e| &e.graph)
    }

    /// `graph.load-by-name`: the model, or `not-found` worded as every host words it.
    pub fn by_name(&self, name: &str) -> Result<Graph, NnError> {
        self.get(name)
            .cloned()
            .ok_or_else(|| verge_nn::policy::not_deployed(name))
    }

    /// What each batched model's batcher did, sorted by name.
    pub fn batch_stats(&self) -> Vec<(String, BatchStats)> {
        let mut v: Vec<_> = self
            .0
            .iter()
            .filter_map(|(name, e)| Some((name.clone(), e.graph.batch_stats()?)))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// How each model was loaded, sorted by name.
    pub fn loaded(&self) -> Vec<Loaded> {
        let mut v: Vec<Loaded> = self.0.values().map(|e| e.loaded.clone()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}

fn read(spec: &ModelSpec) -> Result<Vec<u8>, LoadError> {
    std::fs::read(&spec.path).map_err(|error| LoadError::Read {
        name: spec.name.clone(),
        path: spec.path.clone(),
        error,
    })
}

fn load_one(spec: &ModelSpec, bytes: &[u8]) -> Result<(Graph, Loaded), LoadError> {
    let model_error = |backend, error| LoadError::Model {
        name: spec.name.clone(),
        path: spec.path.clone(),
        backend,
        error,
    };
    let tflite = is_tflite(bytes);
    let backend = match spec.engine.backend {
        _ if tflite && !spec.engine.named => Backend::Tensorflowlite,
        b if tflite && b != Backend::Tensorflowlite => {
            return Err(model_error(
                b,
                NnError::new(
                    ErrorCode::InvalidEncoding,
                    format!(
                        "the file is a TensorFlow Lite model, which {b} does not run: name backend = \"tensorflowlite\" (or none, and the file decides)"
                    ),
                ),
            ));
        }
        b => b,
    };
    let mut loaded = Loaded {
        name: spec.name.clone(),
        backend,
        providers: Vec::new(),
        cache: None,
        fallback: None,
    };
    if backend == Backend::Tensorflowlite {
        let engine = tensorflowlite::Tensorflowlite {
            spec: spec.engine.tensorflowlite.clone(),
            threads: spec.engine.threads,
        };
        let graph = load_graph(spec, &engine, bytes)
            .map_err(|e| model_error(Backend::Tensorflowlite, e))?;
        return Ok((graph, loaded));
    }
    if backend == Backend::Onnxruntime {
        let engine = onnxruntime::Onnxruntime::new(&spec.name, spec.engine.clone());
        match load_graph(spec, &engine, bytes) {
            Ok(graph) => {
                if let Some(chosen) = engine.chosen() {
                    loaded.providers = vec![chosen.provider];
                    loaded.cache = chosen.cache;
                }
                return Ok((graph, loaded));
            }
            // A mistake in the configuration is not the device's fault: no fallback.
            Err(e) if spec.engine.fallback_to_tract && e.code != ErrorCode::InvalidArgument => {
                loaded.backend = Backend::Tract;
                loaded.fallback = Some(e.to_string());
            }
            Err(e) => return Err(model_error(Backend::Onnxruntime, e)),
        }
    }
    if backend == Backend::Compact {
        let graph = load_graph(spec, &verge_nn_compact::Compact, bytes)
            .map_err(|e| model_error(Backend::Compact, e))?;
        return Ok((graph, loaded));
    }
    let engine = verge_nn_tract::Tract::new(verge_nn_tract::Options {
        threads: spec.engine.threads,
    });
    let graph = load_graph(spec, &engine, bytes).map_err(|e| model_error(Backend::Tract, e))?;
    Ok((graph, loaded))
}

/// Loads with `engine`, batching calls when the spec says so.
fn load_graph(spec: &ModelSpec, engine: &dyn Engine, bytes: &[u8]) -> Result<Graph, NnError> {
    match spec.engine.batch {
        Some(policy) => Graph::load(&spec.name, &Batching { engine, policy }, bytes),
        None => Graph::load(&spec.name, engine, bytes),
    }
}
