//! Models by name over `wasi:nn`, loaded once per instance.

use crate::{Error, Tensor};

/// A model's outputs, by name, in the order the model gave them.
#[derive(Debug, Clone, PartialEq)]
pub struct Outputs(pub Vec<(String, Tensor)>);

impl Outputs {
    /// The output named `name`.
    pub fn get(&self, name: &str) -> Result<&Tensor, Error> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| {
                let names: Vec<&str> = self.0.iter().map(|(n, _)| n.as_str()).collect();
                Error::model(format!(
                    "the model has no output named '{name}' (it gave {names:?})"
                ))
            })
    }

    /// The first output.
    pub fn first(&self) -> Result<&Tensor, Error> {
        self.0
            .first()
            .map(|(_, t)| t)
            .ok_or_else(|| Error::model("the model returned no output"))
    }
}

/// A graph loaded by name: cheap to clone, loaded at most once per instance.
#[derive(Clone)]
pub struct Model {
    #[cfg(target_arch = "wasm32")]
    graph: std::rc::Rc<crate::bindings::wasi::nn::graph::Graph>,
    name: String,
}

impl Model {
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Outside a component there is no `wasi:nn`: a native build (a component's
/// unit tests) compiles, and any use of a model fails with `Error::Internal`.
#[cfg(not(target_arch = "wasm32"))]
impl Model {
    pub fn load(name: &str) -> Result<Model, Error> {
        Err(Error::internal(format!(
            "model '{name}': wasi:nn exists only inside a component (wasm32)"
        )))
    }

    pub fn run(&self, _inputs: &[(&str, Tensor)]) -> Result<Outputs, Error> {
        Err(Error::internal(
            "wasi:nn exists only inside a component (wasm32)",
        ))
    }
}

#[cfg(target_arch = "wasm32")]
mod wit {
    use super::{Model, Outputs};
    use crate::bindings::wasi::nn::graph::{self, Graph};
    use crate::{Error, Tensor};
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::rc::Rc;

    thread_local! {
        static LOADED: RefCell<HashMap<String, Rc<Graph>>> = RefCell::new(HashMap::new());
    }

    impl Model {
        /// The graph the host deployed under `name` (`graph.load-by-name`),
        /// loaded on first use and kept for the life of the instance.
        pub fn load(name: &str) -> Result<Model, Error> {
            if let Some(graph) = LOADED.with(|m| m.borrow().get(name).cloned()) {
                return Ok(Model {
                    graph,
                    name: name.into(),
                });
            }
            let graph = Rc::new(graph::load_by_name(name).map_err(|e| {
                let e = Error::from(e);
                Error::model(format!("loading model '{name}': {}", e.message()))
            })?);
            LOADED.with(|m| m.borrow_mut().insert(name.into(), graph.clone()));
            Ok(Model {
                graph,
                name: name.into(),
            })
        }

        /// Runs the model on named inputs.
        pub fn run(&self, inputs: &[(&str, Tensor)]) -> Result<Outputs, Error> {
            let ctx = self.graph.init_execution_context()?;
            let inputs = inputs
                .iter()
                .map(|(n, t)| (n.to_string(), t.to_nn()))
                .collect();
            let outputs = ctx.compute(inputs).map_err(|e| {
                let e = Error::from(e);
                Error::model(format!("running model '{}': {}", self.name, e.message()))
            })?;
            outputs
                .iter()
                .map(|(n, t)| Ok((n.clone(), Tensor::from_nn(t)?)))
                .collect::<Result<_, Error>>()
                .map(Outputs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_by_name() {
        let t = Tensor::new(&[1], &[1f32]).unwrap();
        let out = Outputs(vec![("probabilities".into(), t.clone())]);
        assert_eq!(out.get("probabilities").unwrap(), &t);
        assert_eq!(out.first().unwrap(), &t);
        assert!(
            matches!(out.get("label"), Err(Error::Model(m)) if m.contains("[\"probabilities\"]"))
        );
        assert!(Outputs(vec![]).first().is_err());
    }

    #[test]
    fn no_models_outside_a_component() {
        assert!(matches!(Model::load("m"), Err(Error::Internal(m)) if m.contains("'m'")));
    }
}
