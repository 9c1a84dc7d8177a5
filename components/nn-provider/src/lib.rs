//! `wasi:nn` exported by a component, on the same `verge-nn-tract` crate the
//! device host links natively: one implementation, two hosts.
//!
//! Graphs are loaded by name through `verge:inference/models` once per
//! instance and kept, so a warm instance never parses a model twice.

#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use verge_nn_tract::{ElementType, ErrorCode as Code, Model, NnError, Session};

wit_bindgen::generate!({
    path: "../../wit",
    world: "verge:inference/nn-provider",
    generate_all,
});

use exports::wasi::nn::errors::{ErrorCode, Guest as ErrorsGuest, GuestError};
use exports::wasi::nn::graph::{
    ExecutionTarget, GraphBuilder, GraphEncoding, Guest as GraphGuest, GuestGraph,
};
use exports::wasi::nn::inference::{
    Guest as InferenceGuest, GuestGraphExecutionContext, NamedTensor,
};
use exports::wasi::nn::tensor::{
    Guest as TensorGuest, GuestTensor, TensorData, TensorDimensions, TensorType,
};
use exports::wasi::nn::{errors, graph, inference, tensor};

struct Provider;

thread_local! {
    /// Models loaded by name in this instance.
    static LOADED: RefCell<HashMap<String, Arc<Model>>> = RefCell::new(HashMap::new());
}

pub struct Tensor {
    dims: Vec<u32>,
    ty: TensorType,
    data: Vec<u8>,
}

pub struct Graph(Arc<Model>);

pub struct Context(RefCell<Session>);

pub struct Error {
    code: ErrorCode,
    data: String,
}

fn error(code: ErrorCode, data: impl Into<String>) -> errors::Error {
    errors::Error::new(Error {
        code,
        data: data.into(),
    })
}

fn nn_error(e: NnError) -> errors::Error {
    let code = match e.code {
        Code::InvalidArgument => ErrorCode::InvalidArgument,
        Code::InvalidEncoding => ErrorCode::InvalidEncoding,
        Code::RuntimeError => ErrorCode::RuntimeError,
        Code::UnsupportedOperation => ErrorCode::UnsupportedOperation,
        Code::TooLarge => ErrorCode::TooLarge,
        Code::NotFound => ErrorCode::NotFound,
    };
    error(code, e.message)
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

impl TensorGuest for Provider {
    type Tensor = Tensor;
}

impl GuestTensor for Tensor {
    fn new(dims: TensorDimensions, ty: TensorType, data: TensorData) -> Self {
        Tensor { dims, ty, data }
    }
    fn dimensions(&self) -> TensorDimensions {
        self.dims.clone()
    }
    fn ty(&self) -> TensorType {
        self.ty
    }
    fn data(&self) -> TensorData {
        self.data.clone()
    }
}

impl ErrorsGuest for Provider {
    type Error = Error;
}

impl GuestError for Error {
    fn code(&self) -> ErrorCode {
        self.code
    }
    fn data(&self) -> String {
        self.data.clone()
    }
}

impl GraphGuest for Provider {
    type Graph = Graph;

    fn load(
        builders: Vec<GraphBuilder>,
        encoding: GraphEncoding,
        _: ExecutionTarget,
    ) -> Result<graph::Graph, errors::Error> {
        if encoding != GraphEncoding::Onnx && encoding != GraphEncoding::Autodetect {
            return Err(error(
                ErrorCode::InvalidEncoding,
                format!("this provider runs ONNX models, not {encoding:?}"),
            ));
        }
        let [onnx] = builders.as_slice() else {
            return Err(error(
                ErrorCode::InvalidArgument,
                format!("an ONNX model is one builder, got {}", builders.len()),
            ));
        };
        let model = Model::load(onnx).map_err(nn_error)?;
        Ok(graph::Graph::new(Graph(Arc::new(model))))
    }

    fn load_by_name(name: String) -> Result<graph::Graph, errors::Error> {
        if let Some(model) = LOADED.with(|l| l.borrow().get(&name).cloned()) {
            return Ok(graph::Graph::new(Graph(model)));
        }
        let bytes = verge::inference::models::read(&name).ok_or_else(|| {
            error(
                ErrorCode::NotFound,
                format!("no model named '{name}' is deployed"),
            )
        })?;
        let model = Arc::new(Model::load(&bytes).map_err(|e| {
            nn_error(NnError {
                message: format!("model '{name}': {}", e.message),
                ..e
            })
        })?);
        LOADED.with(|l| l.borrow_mut().insert(name, model.clone()));
        Ok(graph::Graph::new(Graph(model)))
    }
}

impl GuestGraph for Graph {
    fn init_execution_context(&self) -> Result<inference::GraphExecutionContext, errors::Error> {
        Ok(inference::GraphExecutionContext::new(Context(
            RefCell::new(self.0.session()),
        )))
    }
}

impl InferenceGuest for Provider {
    type GraphExecutionContext = Context;
}

impl GuestGraphExecutionContext for Context {
    fn compute(&self, inputs: Vec<NamedTensor>) -> Result<Vec<NamedTensor>, errors::Error> {
        let inputs: Vec<(String, verge_nn_tract::Tensor)> = inputs
            .into_iter()
            .map(|(name, t)| {
                let t: Tensor = t.into_inner();
                (
                    name,
                    verge_nn_tract::Tensor::new(t.dims, element_type(t.ty), t.data),
                )
            })
            .collect();
        let outputs = self.0.borrow_mut().run(&inputs).map_err(nn_error)?;
        Ok(outputs
            .into_iter()
            .map(|(name, t)| {
                (
                    name,
                    tensor::Tensor::new(Tensor {
                        dims: t.dims,
                        ty: tensor_type(t.ty),
                        data: t.data,
                    }),
                )
            })
            .collect())
    }
}

export!(Provider);
