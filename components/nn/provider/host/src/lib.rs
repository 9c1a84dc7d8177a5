//! The host-engine provider: every `wasi:nn` check, widening rule and error
//! wording is verge-nn's, compiled in here; the engine is the host's
//! (`verge:inference/engine`, which the Lambda@Edge shim implements over ONNX
//! Runtime's Node binding). So an engine outside Wasm is one small module of
//! the host that loads models by name and runs checked tensors, and the checks
//! are never rewritten in JavaScript.

#![cfg(target_arch = "wasm32")]

use verge_nn::{
    Datum, Dim, ErrorCode, Graph, Model, NnError, Port, RawTensor, Signature, Tensor, policy,
};
use verge_nn_provider::Source;
use verge_nn_provider::bindings::verge::inference::engine;

struct HostModel {
    /// The host's id of the model (`engine.load`).
    id: u32,
    signature: Signature,
}

fn port(p: engine::Port) -> Port {
    let dims = p.dims.map(|dims| {
        dims.into_iter()
            .map(|d| match d {
                engine::Dim::Fixed(n) => Dim::Fixed(n),
                engine::Dim::Symbol(s) => Dim::symbolic(&s),
                engine::Dim::Any => Dim::Any,
            })
            .collect()
    });
    Port::new(p.name, Datum::from_onnx(p.datum), dims)
}

fn failure(f: engine::Failure) -> NnError {
    NnError::new(
        ErrorCode::parse(&f.code).unwrap_or(ErrorCode::RuntimeError),
        f.message,
    )
}

impl Model for HostModel {
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<RawTensor>, NnError> {
        let inputs: Vec<engine::RawTensor> = inputs
            .into_iter()
            .map(|t| engine::RawTensor {
                datum: Datum::from(t.ty).onnx(),
                dims: t.dims,
                data: t.data,
            })
            .collect();
        let outputs = engine::run(self.id, &inputs).map_err(failure)?;
        Ok(outputs
            .into_iter()
            .map(|t| RawTensor::new(t.dims, Datum::from_onnx(t.datum), t.data))
            .collect())
    }
}

struct HostEngine;

impl Source for HostEngine {
    fn load(name: &str) -> Result<Graph, NnError> {
        let engine_name = engine::name();
        match engine::load(name) {
            Ok(Some(model)) => {
                let signature = Signature {
                    inputs: model.inputs.into_iter().map(port).collect(),
                    outputs: model.outputs.into_iter().map(port).collect(),
                };
                let model = HostModel {
                    id: model.id,
                    signature,
                };
                Graph::new(name, &engine_name, Box::new(model))
            }
            Ok(None) => Err(policy::not_deployed(name)),
            Err(f) => Err(verge_nn::load_failed(name, &engine_name, failure(f))),
        }
    }
}

verge_nn_provider::export_provider!(HostEngine);
