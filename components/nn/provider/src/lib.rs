//! `wasi:nn` exported by a component, on `verge-nn`: the one glue every
//! provider shares. A provider is a [`Source`] (where a model named by the
//! component comes from, and which engine loads it) and one line,
//! `verge_nn_provider::export_provider!(MySource)`.
//!
//! Graphs are loaded by name once per instance and kept, so a warm instance
//! never loads a model twice. Model bytes from the component (`graph.load`)
//! are refused, as on every verge host.

#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;
use std::collections::HashMap;
use std::marker::PhantomData;

use verge_nn::{ErrorCode as Code, Graph as NnGraph, NnError, policy};

pub mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit",
        world: "verge:inference/nn-provider",
        pub_export_macro: true,
        default_bindings_module: "verge_nn_provider::bindings",
        generate_all,
    });
}

use bindings::exports::wasi::nn::errors::{ErrorCode, Guest as ErrorsGuest, GuestError};
use bindings::exports::wasi::nn::graph::{
    ExecutionTarget, GraphBuilder, GraphEncoding, Guest as GraphGuest, GuestGraph,
};
use bindings::exports::wasi::nn::inference::{
    Guest as InferenceGuest, GuestGraphExecutionContext, NamedTensor,
};
use bindings::exports::wasi::nn::tensor::{
    Guest as TensorGuest, GuestTensor, TensorData, TensorDimensions, TensorType,
};
use bindings::exports::wasi::nn::{errors, graph, inference, tensor};

/// Where the models a component names come from, and the engine that loads them.
pub trait Source: 'static {
    /// Loads the model deployed under `name` (called once per name and instance).
    fn load(name: &str) -> Result<NnGraph, NnError>;
}

/// The bytes of a model bundled with the package, read through
/// `verge:inference/models`; a name the package lacks is not deployed.
pub fn bundled_model(name: &str) -> Result<Vec<u8>, NnError> {
    bindings::verge::inference::models::read(name).ok_or_else(|| policy::not_deployed(name))
}

/// `wasi:nn` on the models of `S`.
pub struct Provider<S>(PhantomData<S>);

/// Exports `wasi:nn` from this component, on the models of `$source` (a [`Source`]).
#[macro_export]
macro_rules! export_provider {
    ($source:ty) => {
        type VergeNnProvider = $crate::Provider<$source>;
        $crate::bindings::export!(VergeNnProvider with_types_in $crate::bindings);
    };
}

thread_local! {
    /// Models loaded by name in this instance.
    static LOADED: RefCell<HashMap<String, NnGraph>> = RefCell::new(HashMap::new());
}

pub struct Tensor(verge_nn::Tensor);

pub struct Graph(NnGraph);

pub struct Context(RefCell<verge_nn::Context>);

pub struct Error(NnError);

fn error(e: NnError) -> errors::Error {
    errors::Error::new(Error(e))
}

verge_nn::tensor_type_conversions!(TensorType);

impl<S: Source> TensorGuest for Provider<S> {
    type Tensor = Tensor;
}

impl GuestTensor for Tensor {
    fn new(dims: TensorDimensions, ty: TensorType, data: TensorData) -> Self {
        Tensor(verge_nn::Tensor::new(dims, element_type(ty), data))
    }
    fn dimensions(&self) -> TensorDimensions {
        self.0.dims.clone()
    }
    fn ty(&self) -> TensorType {
        tensor_type(self.0.ty)
    }
    fn data(&self) -> TensorData {
        self.0.data.clone()
    }
}

impl<S: Source> ErrorsGuest for Provider<S> {
    type Error = Error;
}

impl GuestError for Error {
    fn code(&self) -> ErrorCode {
        match self.0.code {
            Code::InvalidArgument => ErrorCode::InvalidArgument,
            Code::InvalidEncoding => ErrorCode::InvalidEncoding,
            Code::Timeout => ErrorCode::Timeout,
            Code::RuntimeError => ErrorCode::RuntimeError,
            Code::UnsupportedOperation => ErrorCode::UnsupportedOperation,
            Code::TooLarge => ErrorCode::TooLarge,
            Code::NotFound => ErrorCode::NotFound,
            Code::Security => ErrorCode::Security,
            Code::Unknown => ErrorCode::Unknown,
        }
    }
    fn data(&self) -> String {
        self.0.data()
    }
}

impl<S: Source> GraphGuest for Provider<S> {
    type Graph = Graph;

    fn load(
        _: Vec<GraphBuilder>,
        _: GraphEncoding,
        _: ExecutionTarget,
    ) -> Result<graph::Graph, errors::Error> {
        Err(error(policy::guest_bytes_refused()))
    }

    fn load_by_name(name: String) -> Result<graph::Graph, errors::Error> {
        if let Some(g) = LOADED.with(|l| l.borrow().get(&name).cloned()) {
            return Ok(graph::Graph::new(Graph(g)));
        }
        let g = S::load(&name).map_err(error)?;
        LOADED.with(|l| l.borrow_mut().insert(name, g.clone()));
        Ok(graph::Graph::new(Graph(g)))
    }
}

impl GuestGraph for Graph {
    fn init_execution_context(&self) -> Result<inference::GraphExecutionContext, errors::Error> {
        Ok(inference::GraphExecutionContext::new(Context(
            RefCell::new(self.0.context()),
        )))
    }
}

impl<S: Source> InferenceGuest for Provider<S> {
    type GraphExecutionContext = Context;
}

impl GuestGraphExecutionContext for Context {
    fn compute(&self, inputs: Vec<NamedTensor>) -> Result<Vec<NamedTensor>, errors::Error> {
        let inputs = inputs
            .into_iter()
            .map(|(name, t)| (name, t.into_inner::<Tensor>().0))
            .collect();
        let outputs = self.0.borrow_mut().compute_named(inputs).map_err(error)?;
        Ok(outputs
            .into_iter()
            .map(|(name, t)| (name, tensor::Tensor::new(Tensor(t))))
            .collect())
    }
}
