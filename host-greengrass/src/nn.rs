//! `wasi:nn` for the device: the tract backend plugged into wasmtime-wasi-nn
//! through its public backend traits, and a registry of named graphs that are
//! loaded and optimised once and shared by every instance.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use verge_nn_tract::{ElementType, Id as TractId, Model, NnError, Session};
use wasmtime_wasi_nn::backend::{
    BackendError, BackendExecutionContext, BackendGraph, Id, NamedTensor,
};
use wasmtime_wasi_nn::wit::TensorType;
use wasmtime_wasi_nn::wit::WasiNnCtx;
use wasmtime_wasi_nn::{Backend, ExecutionContext, Graph, GraphRegistry, Tensor};

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

fn to_tract(t: &Tensor) -> verge_nn_tract::Tensor {
    verge_nn_tract::Tensor::new(t.dimensions.clone(), element_type(t.ty), t.data.clone())
}

fn from_tract(t: verge_nn_tract::Tensor) -> Tensor {
    Tensor::new(t.dims, tensor_type(t.ty), t.data)
}

fn graph(model: Arc<Model>) -> Graph {
    let g: Box<dyn BackendGraph> = Box::new(TractGraph(model));
    g.into()
}

struct TractGraph(Arc<Model>);

impl BackendGraph for TractGraph {
    fn init_execution_context(&self) -> Result<ExecutionContext, BackendError> {
        let ctx: Box<dyn BackendExecutionContext> = Box::new(TractContext(self.0.session()));
        Ok(ctx.into())
    }
}

struct TractContext(Session);

fn id(id: &Id) -> TractId<'_> {
    match id {
        Id::Index(i) => TractId::Index(*i),
        Id::Name(n) => TractId::Name(n),
    }
}

impl BackendExecutionContext for TractContext {
    fn set_input(&mut self, which: Id, tensor: &Tensor) -> Result<(), BackendError> {
        self.0
            .set_input(id(&which), &to_tract(tensor))
            .map_err(fail)
    }

    fn get_output(&mut self, which: Id) -> Result<Tensor, BackendError> {
        self.0.get_output(id(&which)).map(from_tract).map_err(fail)
    }

    fn compute(
        &mut self,
        inputs: Option<Vec<NamedTensor>>,
    ) -> Result<Option<Vec<NamedTensor>>, BackendError> {
        let Some(inputs) = inputs else {
            // The WITX style: inputs were set one by one.
            return self.0.compute().map(|()| None).map_err(fail);
        };
        let inputs: Vec<(String, verge_nn_tract::Tensor)> = inputs
            .into_iter()
            .map(|n| (n.name, to_tract(&n.tensor)))
            .collect();
        let outputs = self.0.run(&inputs).map_err(fail)?;
        Ok(Some(
            outputs
                .into_iter()
                .map(|(name, t)| NamedTensor {
                    name,
                    tensor: from_tract(t),
                })
                .collect(),
        ))
    }
}

/// Models by name, loaded once; cloning shares them.
#[derive(Clone, Default)]
pub struct Graphs(Arc<HashMap<String, (Arc<Model>, Graph)>>);

/// A model that could not be loaded, with the file it came from.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("model '{name}' ({}): {error}", path.display())]
    Read {
        name: String,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("model '{name}' ({}): {error}", path.display())]
    Model {
        name: String,
        path: PathBuf,
        error: NnError,
    },
    #[error("model name '{0}' is given twice")]
    Duplicate(String),
}

impl Graphs {
    /// Loads and optimises each `(name, path)` ONNX model.
    pub fn load(models: &[(String, PathBuf)]) -> Result<Graphs, LoadError> {
        let mut map = HashMap::new();
        for (name, path) in models {
            let model = Self::load_one(name, path)?;
            if map
                .insert(name.clone(), (model.clone(), graph(model)))
                .is_some()
            {
                return Err(LoadError::Duplicate(name.clone()));
            }
        }
        Ok(Graphs(Arc::new(map)))
    }

    fn load_one(name: &str, path: &Path) -> Result<Arc<Model>, LoadError> {
        let bytes = std::fs::read(path).map_err(|error| LoadError::Read {
            name: name.into(),
            path: path.into(),
            error,
        })?;
        let model = Model::load(&bytes).map_err(|error| LoadError::Model {
            name: name.into(),
            path: path.into(),
            error,
        })?;
        Ok(Arc::new(model))
    }

    /// The model behind a name, for callers that run it without a component.
    pub fn model(&self, name: &str) -> Option<&Arc<Model>> {
        self.0.get(name).map(|(m, _)| m)
    }

    /// A `wasi:nn` context for one instance: these graphs by name, and no
    /// backend to load model bytes from the guest (models come from the
    /// deployment, never across the component boundary).
    pub fn context(&self) -> WasiNnCtx {
        WasiNnCtx::new(Vec::<Backend>::new(), self.clone().into())
    }
}

impl GraphRegistry for Graphs {
    fn get(&self, name: &str) -> Option<&Graph> {
        self.0.get(name).map(|(_, g)| g)
    }

    fn get_mut(&mut self, _: &str) -> Option<&mut Graph> {
        None
    }
}
