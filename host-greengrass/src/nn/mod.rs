//! `wasi:nn` for the device: the models a deployment names, each loaded once
//! by the backend it asks for (tract, or ONNX Runtime with the device's
//! execution providers), plugged into wasmtime-wasi-nn through its public
//! backend traits and shared by every instance.
//!
//! Both backends speak the same tensors and errors (those of
//! `verge-nn-tract`), so a component cannot tell which one serves it except
//! by speed.

mod onnxruntime;
mod tract;

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

pub use verge_nn_tract::{ElementType, ErrorCode, Id, NnError, Tensor};
use wasmtime_wasi_nn::backend::{
    BackendError, BackendExecutionContext, BackendGraph, Id as WasiId, NamedTensor,
};
use wasmtime_wasi_nn::wit::TensorType;
use wasmtime_wasi_nn::wit::WasiNnCtx;
use wasmtime_wasi_nn::{Backend as WasiBackend, ExecutionContext, Graph, GraphRegistry};

pub use onnxruntime::{available_providers, library_candidates};

/// The engine that runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// tract, compiled into the host: always there, pure Rust.
    #[default]
    Tract,
    /// ONNX Runtime, loaded from the device's `libonnxruntime` at start-up.
    Onnxruntime,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Tract => "tract",
            Backend::Onnxruntime => "onnxruntime",
        })
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Backend, String> {
        match s {
            "tract" => Ok(Backend::Tract),
            "onnxruntime" => Ok(Backend::Onnxruntime),
            _ => Err(format!("unknown backend '{s}' (tract or onnxruntime)")),
        }
    }
}

/// `wasi:nn`'s execution target, chosen by the deployment for each model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
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
    /// ONNX Runtime execution providers to try, in order, for `Target::Gpu`
    /// (e.g. `tensorrt`, `cuda`, `openvino`); empty means TensorRT then CUDA.
    pub providers: Vec<String>,
    /// The `libonnxruntime` to load; `None` searches the usual places.
    pub library: Option<PathBuf>,
    /// When ONNX Runtime (or a provider) is missing or refuses the model,
    /// run the model on tract instead of failing to start.
    pub fallback_to_tract: bool,
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
        if self.backend == Backend::Tract {
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
        for p in &self.providers {
            if !onnxruntime::PROVIDERS.contains(&p.to_lowercase().as_str()) {
                return Err(format!(
                    "unknown execution provider '{p}' (tensorrt, cuda, openvino or cpu)"
                ));
            }
        }
        Ok(())
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

/// One execution context of a loaded model.
pub trait Session: Send + Sync {
    fn set_input(&mut self, id: Id<'_>, tensor: &Tensor) -> Result<(), NnError>;
    /// Runs the model on the inputs set so far.
    fn compute(&mut self) -> Result<(), NnError>;
    fn get_output(&self, id: Id<'_>) -> Result<Tensor, NnError>;
    /// The `wasi:nn` WIT style: named inputs in, every output out by name.
    fn run(&mut self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, NnError>;
}

/// A model loaded by a backend, shared by all its sessions.
pub trait Engine: Send + Sync {
    fn session(&self) -> Box<dyn Session>;
}

/// How a model ended up being loaded.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub name: String,
    pub backend: Backend,
    /// The execution provider registered for it (ONNX Runtime only; nodes
    /// that provider cannot run still run on ONNX Runtime's CPU provider).
    pub providers: Vec<String>,
    /// Why the configured backend was replaced by tract, if it was.
    pub fallback: Option<String>,
}

thread_local! {
    /// wasmtime-wasi-nn 48 hands every backend failure to the guest as
    /// `runtime-error` with the text "Failed while accessing backend": the
    /// message is lost at its WIT glue. The host runs each call on one thread,
    /// so it keeps the last backend message here to put in its own report.
    static LAST_ERROR: RefCell<Option<NnError>> = const { RefCell::new(None) };
}

/// Takes the message of the last backend failure on this thread, if any.
pub fn take_last_error() -> Option<NnError> {
    LAST_ERROR.with(|e| e.borrow_mut().take())
}

fn fail(e: NnError) -> BackendError {
    let err = BackendError::BackendAccess(wasmtime::format_err!("{e}"));
    LAST_ERROR.with(|slot| *slot.borrow_mut() = Some(e));
    err
}

fn element_type(t: TensorType) -> ElementType {
    match t {
        TensorType::Fp16 => ElementType::F16,
        TensorType::Fp32 => ElementType::F32,
        TensorType::Fp64 => ElementType::F64,
        TensorType::Bf16 => ElementType::Bf16,
        TensorType::U8 => ElementType::U8,
        TensorType::I32 => ElementType::I32,
        TensorType::I64 => ElementType::I64,
    }
}

fn tensor_type(t: ElementType) -> TensorType {
    match t {
        ElementType::F16 => TensorType::Fp16,
        ElementType::F32 => TensorType::Fp32,
        ElementType::F64 => TensorType::Fp64,
        ElementType::Bf16 => TensorType::Bf16,
        ElementType::U8 => TensorType::U8,
        ElementType::I32 => TensorType::I32,
        ElementType::I64 => TensorType::I64,
    }
}

fn to_ours(t: &wasmtime_wasi_nn::Tensor) -> Tensor {
    Tensor::new(t.dimensions.clone(), element_type(t.ty), t.data.clone())
}

fn to_wasi(t: Tensor) -> wasmtime_wasi_nn::Tensor {
    wasmtime_wasi_nn::Tensor::new(t.dims, tensor_type(t.ty), t.data)
}

fn id(id: &WasiId) -> Id<'_> {
    match id {
        WasiId::Index(i) => Id::Index(*i),
        WasiId::Name(n) => Id::Name(n),
    }
}

/// A model as wasmtime-wasi-nn sees it.
struct WasiGraph(Arc<dyn Engine>);

impl BackendGraph for WasiGraph {
    fn init_execution_context(&self) -> Result<ExecutionContext, BackendError> {
        let ctx: Box<dyn BackendExecutionContext> = Box::new(WasiContext(self.0.session()));
        Ok(ctx.into())
    }
}

struct WasiContext(Box<dyn Session>);

impl BackendExecutionContext for WasiContext {
    fn set_input(
        &mut self,
        which: WasiId,
        tensor: &wasmtime_wasi_nn::Tensor,
    ) -> Result<(), BackendError> {
        self.0.set_input(id(&which), &to_ours(tensor)).map_err(fail)
    }

    fn get_output(&mut self, which: WasiId) -> Result<wasmtime_wasi_nn::Tensor, BackendError> {
        self.0.get_output(id(&which)).map(to_wasi).map_err(fail)
    }

    fn compute(
        &mut self,
        inputs: Option<Vec<NamedTensor>>,
    ) -> Result<Option<Vec<NamedTensor>>, BackendError> {
        let Some(inputs) = inputs else {
            // The WITX style: inputs were set one by one.
            return self.0.compute().map(|()| None).map_err(fail);
        };
        let inputs: Vec<(String, Tensor)> = inputs
            .into_iter()
            .map(|n| (n.name, to_ours(&n.tensor)))
            .collect();
        let outputs = self.0.run(&inputs).map_err(fail)?;
        Ok(Some(
            outputs
                .into_iter()
                .map(|(name, t)| NamedTensor {
                    name,
                    tensor: to_wasi(t),
                })
                .collect(),
        ))
    }
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
    engine: Arc<dyn Engine>,
    graph: Graph,
    loaded: Loaded,
}

/// Models by name, loaded once; cloning shares them.
#[derive(Clone, Default)]
pub struct Graphs(Arc<HashMap<String, Entry>>);

impl Graphs {
    /// Loads and optimises each model with the backend it asks for.
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
            let (engine, loaded) = load_one(spec, bytes)?;
            let graph: Box<dyn BackendGraph> = Box::new(WasiGraph(engine.clone()));
            let entry = Entry {
                engine,
                graph: graph.into(),
                loaded,
            };
            if map.insert(spec.name.clone(), entry).is_some() {
                return Err(LoadError::Duplicate(spec.name.clone()));
            }
        }
        Ok(Graphs(Arc::new(map)))
    }

    /// The model behind a name, for callers that run it without a component.
    pub fn engine(&self, name: &str) -> Option<&Arc<dyn Engine>> {
        self.0.get(name).map(|e| &e.engine)
    }

    /// How each model was loaded, sorted by name.
    pub fn loaded(&self) -> Vec<Loaded> {
        let mut v: Vec<Loaded> = self.0.values().map(|e| e.loaded.clone()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// A `wasi:nn` context for one instance: these graphs by name, and no
    /// backend to load model bytes from the guest (models come from the
    /// deployment, never across the component boundary).
    pub fn context(&self) -> WasiNnCtx {
        WasiNnCtx::new(Vec::<WasiBackend>::new(), self.clone().into())
    }
}

impl GraphRegistry for Graphs {
    fn get(&self, name: &str) -> Option<&Graph> {
        self.0.get(name).map(|e| &e.graph)
    }

    fn get_mut(&mut self, _: &str) -> Option<&mut Graph> {
        None
    }
}

fn read(spec: &ModelSpec) -> Result<Vec<u8>, LoadError> {
    std::fs::read(&spec.path).map_err(|error| LoadError::Read {
        name: spec.name.clone(),
        path: spec.path.clone(),
        error,
    })
}

fn load_one(spec: &ModelSpec, bytes: &[u8]) -> Result<(Arc<dyn Engine>, Loaded), LoadError> {
    let model_error = |backend, error| LoadError::Model {
        name: spec.name.clone(),
        path: spec.path.clone(),
        backend,
        error,
    };
    let mut loaded = Loaded {
        name: spec.name.clone(),
        backend: spec.engine.backend,
        providers: Vec::new(),
        fallback: None,
    };
    if spec.engine.backend == Backend::Onnxruntime {
        match onnxruntime::load(bytes, &spec.engine) {
            Ok((engine, providers)) => {
                loaded.providers = providers;
                return Ok((engine, loaded));
            }
            // A mistake in the configuration is not the device's fault: no fallback.
            Err(e) if spec.engine.fallback_to_tract && e.code != ErrorCode::InvalidArgument => {
                loaded.backend = Backend::Tract;
                loaded.fallback = Some(e.to_string());
            }
            Err(e) => return Err(model_error(Backend::Onnxruntime, e)),
        }
    }
    let engine =
        tract::load(bytes, spec.engine.threads).map_err(|e| model_error(Backend::Tract, e))?;
    Ok((engine, loaded))
}
