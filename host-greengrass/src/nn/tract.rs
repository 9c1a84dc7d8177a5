//! The tract backend: `verge-nn-tract` models behind the host's traits.

use std::sync::Arc;

use verge_nn_tract::{Id, Model, NnError, Options, Tensor};

use super::{Engine, Session};

pub(super) fn load(onnx: &[u8], threads: usize) -> Result<Arc<dyn Engine>, NnError> {
    Ok(Arc::new(TractEngine(Arc::new(Model::load_with(
        onnx,
        Options { threads },
    )?))))
}

struct TractEngine(Arc<Model>);

impl Engine for TractEngine {
    fn session(&self) -> Box<dyn Session> {
        Box::new(self.0.session())
    }
}

impl Session for verge_nn_tract::Session {
    fn set_input(&mut self, id: Id<'_>, tensor: &Tensor) -> Result<(), NnError> {
        verge_nn_tract::Session::set_input(self, id, tensor)
    }
    fn compute(&mut self) -> Result<(), NnError> {
        verge_nn_tract::Session::compute(self)
    }
    fn get_output(&self, id: Id<'_>) -> Result<Tensor, NnError> {
        verge_nn_tract::Session::get_output(self, id)
    }
    fn run(&mut self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, NnError> {
        verge_nn_tract::Session::run(self, inputs)
    }
}
