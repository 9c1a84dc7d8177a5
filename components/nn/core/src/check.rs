//! The execution context, and every check on what a component hands in.

use std::collections::HashMap;

use crate::signature::list;
use crate::tensor::element_count;
use crate::{Dim, Graph, Id, NnError, Port, Result, Tensor};

/// One execution context (`wasi:nn/inference.graph-execution-context`):
/// inputs set, computed, outputs read.
pub struct Context {
    graph: Graph,
    inputs: Vec<Option<Tensor>>,
    outputs: Option<Vec<Tensor>>,
}

fn lookup(ports: &[Port], id: Id<'_>, kind: &str) -> Result<usize> {
    match id {
        Id::Index(i) if (i as usize) < ports.len() => Some(i as usize),
        Id::Name(n) => ports.iter().position(|p| p.name == n),
        Id::Index(_) => None,
    }
    .ok_or_else(|| {
        NnError::invalid(format!(
            "no {kind} {id}; the model's {kind}s are {}",
            list(ports)
        ))
    })
}

/// Checks a tensor against the port it is set to.
pub(crate) fn check(port: &Port, t: &Tensor) -> Result<()> {
    let dims_fit = port.dims.as_ref().is_none_or(|dims| {
        dims.len() == t.dims.len()
            && dims
                .iter()
                .zip(&t.dims)
                .all(|(want, &got)| !matches!(want, Dim::Fixed(w) if *w != u64::from(got)))
    });
    if port.datum.carried() != Some(t.ty) || !dims_fit {
        return Err(NnError::invalid(format!(
            "input {port} cannot take {}",
            t.describe()
        )));
    }
    let bytes = element_count(&t.dims).and_then(|n| n.checked_mul(t.ty.size()));
    if bytes != Some(t.data.len()) {
        return Err(NnError::invalid(format!(
            "input '{}': {} needs {}, got {} bytes",
            port.name,
            t.describe(),
            bytes.map_or("more bytes than memory holds".into(), |b| format!(
                "{b} bytes"
            )),
            t.data.len()
        )));
    }
    Ok(())
}

impl Context {
    pub(crate) fn new(graph: Graph) -> Context {
        let n = graph.signature().inputs.len();
        Context {
            graph,
            inputs: vec![None; n],
            outputs: None,
        }
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Sets one input, checked against the signature.
    pub fn set_input(&mut self, id: Id<'_>, tensor: Tensor) -> Result<()> {
        let ports = &self.graph.signature().inputs;
        let ix = lookup(ports, id, "input")?;
        check(&ports[ix], &tensor)?;
        self.inputs[ix] = Some(tensor);
        Ok(())
    }

    /// Runs the model on the inputs set so far; every input must be set, and
    /// a symbol must have one value across all of them.
    pub fn compute(&mut self) -> Result<()> {
        self.outputs = None;
        self.check_all()?;
        let inputs = self.inputs.iter().flatten().cloned().collect();
        self.outputs = Some(self.run(inputs)?);
        Ok(())
    }

    fn check_all(&self) -> Result<()> {
        let sig = self.graph.signature();
        let missing: Vec<String> = sig
            .inputs
            .iter()
            .zip(&self.inputs)
            .filter(|(_, v)| v.is_none())
            .map(|(p, _)| p.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(NnError::invalid(format!(
                "inputs not set: {}",
                missing.join(", ")
            )));
        }
        let mut symbols: HashMap<&str, (u32, &str)> = HashMap::new();
        for (port, t) in sig.inputs.iter().zip(self.inputs.iter().flatten()) {
            for (dim, &got) in port.dims.iter().flatten().zip(&t.dims) {
                let Dim::Symbol(s) = dim else { continue };
                match symbols.get(s.as_str()) {
                    Some(&(value, from)) if value != got => {
                        return Err(NnError::invalid(format!(
                            "input {port} cannot take {}: {s} is {value} in input '{from}'",
                            t.describe()
                        )));
                    }
                    Some(_) => {}
                    None => {
                        symbols.insert(s, (got, &port.name));
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs checked inputs through the engine; widens its outputs.
    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        let sig = self.graph.signature();
        let raw = self.graph.model().run(inputs)?;
        if raw.len() != sig.outputs.len() {
            return Err(NnError::runtime(format!(
                "the engine returned {} outputs; the model declares {}",
                raw.len(),
                list(&sig.outputs)
            )));
        }
        raw.into_iter()
            .zip(&sig.outputs)
            .map(|(t, port)| t.into_tensor(&port.name))
            .collect()
    }

    /// One output of the last `compute`.
    pub fn get_output(&self, id: Id<'_>) -> Result<Tensor> {
        let ports = &self.graph.signature().outputs;
        let ix = lookup(ports, id, "output")?;
        let outputs = self
            .outputs
            .as_ref()
            .ok_or_else(|| NnError::invalid("no outputs yet: call compute first"))?;
        Ok(outputs[ix].clone())
    }

    /// The WIT `compute`: these inputs by name (and only these), every output
    /// back by name, in the model's order.
    pub fn compute_named(
        &mut self,
        inputs: Vec<(String, Tensor)>,
    ) -> Result<Vec<(String, Tensor)>> {
        self.inputs.iter_mut().for_each(|i| *i = None);
        let ports = &self.graph.signature().inputs;
        for (name, t) in inputs {
            let ix = lookup(ports, Id::Name(&name), "input")?;
            if self.inputs[ix].is_some() {
                return Err(NnError::invalid(format!("input '{name}' is given twice")));
            }
            check(&ports[ix], &t)?;
            self.inputs[ix] = Some(t);
        }
        self.outputs = None;
        self.check_all()?;
        let inputs = self.inputs.iter_mut().flat_map(Option::take).collect();
        let outputs = self.run(inputs)?;
        let named = self
            .graph
            .signature()
            .outputs
            .iter()
            .map(|p| p.name.clone())
            .zip(outputs)
            .collect();
        Ok(named)
    }
}
