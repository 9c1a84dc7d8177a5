//! The compact engine for `verge-nn`: tabular and small neural models (tree
//! ensembles, linear models, scalers, MLPs) in a few hundred kilobytes of
//! Wasm, for Lambda@Edge viewer triggers where nothing larger fits.
//!
//! It reads ONNX with its own small protobuf reader ([`onnx`]), checks every
//! node at load (an operator or attribute it does not run refuses the model,
//! naming each one), and runs the graph in order on plain vectors. Every
//! `wasi:nn` check and error wording is the core's, as for the other engines.

mod onnx;
mod ops;
mod value;

use std::collections::HashMap;
use std::sync::Arc;

use verge_nn::{Datum, Dim, ErrorCode, Model, NnError, Port, RawTensor, Result, Signature, Tensor};

pub use ops::OPERATORS;
use ops::{Node, Op};
use value::Value;

/// The engine: `verge_nn::Graph::load(name, &Compact, bytes)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Compact;

impl verge_nn::Engine for Compact {
    fn name(&self) -> &str {
        "compact"
    }

    fn load(&self, bytes: &[u8]) -> Result<Box<dyn Model>> {
        Ok(Box::new(Plan::load(bytes)?))
    }
}

/// What in a model this engine does not run, one line each (`ZipMap
/// (ai.onnx.ml)`, `Gemm node 'g1': attribute 'broadcast' is not
/// supported`), empty when it runs all of it; an error when the bytes are
/// not a model. The packer asks this at pack time.
pub fn unsupported(bytes: &[u8]) -> Result<Vec<String>> {
    match Plan::load(bytes) {
        Ok(_) => Ok(Vec::new()),
        Err(Refusal::Unsupported(list)) => Ok(list),
        Err(Refusal::Error(e)) => Err(e),
    }
}

enum Refusal {
    Unsupported(Vec<String>),
    Error(NnError),
}

impl From<Refusal> for NnError {
    fn from(r: Refusal) -> NnError {
        match r {
            Refusal::Error(e) => e,
            Refusal::Unsupported(list) => NnError::unsupported(format!(
                "the compact engine cannot run: {}",
                list.join("; ")
            )),
        }
    }
}

fn encoding(message: impl Into<String>) -> Refusal {
    Refusal::Error(NnError::new(ErrorCode::InvalidEncoding, message))
}

/// One node, ready: its operator and where its values live.
struct Step {
    op: Box<dyn Op>,
    /// A slot per node input, `None` for an optional input left out.
    inputs: Vec<Option<usize>>,
    /// A slot per node output, `None` for one the node leaves unnamed.
    outputs: Vec<Option<usize>>,
    /// `Add node 'n1'`, for messages.
    label: String,
}

/// A loaded model: values live in numbered slots; initializers are filled
/// once, inputs per call, the rest by the steps in order.
struct Plan {
    signature: Signature,
    slots: usize,
    constants: Vec<(usize, Arc<Value>)>,
    inputs: Vec<usize>,
    outputs: Vec<usize>,
    steps: Vec<Step>,
}

fn port(v: &onnx::ValueInfo) -> Port {
    match &v.ty {
        onnx::TypeInfo::Tensor { elem_type, dims } => {
            let datum = match elem_type {
                0 => Datum::Other,
                code => Datum::from_onnx(*code),
            };
            let dims = dims.as_ref().map(|d| {
                d.iter()
                    .map(|d| match d {
                        onnx::DimInfo::Value(n) if *n >= 0 => Dim::Fixed(*n as u64),
                        onnx::DimInfo::Param(p) => Dim::symbolic(p),
                        _ => Dim::Any,
                    })
                    .collect()
            });
            Port::new(&v.name, datum, dims)
        }
        onnx::TypeInfo::NotATensor => Port::new(&v.name, Datum::NotATensor, None),
        onnx::TypeInfo::Unset => Port::new(&v.name, Datum::Other, None),
    }
}

impl Plan {
    fn load(bytes: &[u8]) -> std::result::Result<Plan, Refusal> {
        let model =
            onnx::decode_model(bytes).map_err(|e| encoding(format!("not an ONNX model: {e}")))?;
        let graph = model
            .graph
            .as_ref()
            .ok_or_else(|| encoding("not an ONNX model: it has no graph"))?;
        let opset = |domain: &str| {
            let d = if domain == "ai.onnx" { "" } else { domain };
            model
                .opsets
                .iter()
                .find(|(od, _)| od == d || (d.is_empty() && od == "ai.onnx"))
                .map(|(_, v)| *v)
        };
        let mut unsupported: Vec<String> = Vec::new();
        let mut note = |s: String| {
            if !unsupported.contains(&s) {
                unsupported.push(s);
            }
        };
        if graph.sparse_initializers > 0 {
            note("sparse initializers".into());
        }

        let mut slot_of: HashMap<&str, usize> = HashMap::new();
        let mut constants = Vec::new();
        for t in &graph.initializers {
            match Value::from_proto(t) {
                Ok(v) => {
                    let s = slot_of.len();
                    slot_of.insert(&t.name, s);
                    constants.push((s, Arc::new(v)));
                }
                Err(e) => note(e),
            }
        }
        let initialised: std::collections::HashSet<&str> =
            graph.initializers.iter().map(|t| t.name.as_str()).collect();
        let mut signature = Signature::default();
        let mut inputs = Vec::new();
        for i in graph
            .inputs
            .iter()
            .filter(|i| !initialised.contains(i.name.as_str()))
        {
            let p = port(i);
            if p.datum == Datum::Bf16 {
                note(format!("input '{}' of type bf16", p.name));
            }
            let s = slot_of.len();
            slot_of.insert(&i.name, s);
            inputs.push(s);
            signature.inputs.push(p);
        }

        let mut steps = Vec::new();
        for n in &graph.nodes {
            let label = if n.name.is_empty() {
                n.op_type.clone()
            } else {
                format!("{} node '{}'", n.op_type, n.name)
            };
            let domain = if n.domain == "ai.onnx" {
                ""
            } else {
                n.domain.as_str()
            };
            let qualified = if domain.is_empty() {
                n.op_type.clone()
            } else {
                format!("{} ({domain})", n.op_type)
            };
            let node = Node::new(n, opset(domain).unwrap_or(1));
            let op = match ops::build(domain, &node) {
                None => {
                    note(qualified);
                    None
                }
                Some(built) => {
                    let problems = node.finish(&built);
                    for p in &problems {
                        note(format!("{label}: {p}"));
                    }
                    built.ok().filter(|_| problems.is_empty())
                }
            };
            let mut ins = Vec::new();
            for name in &n.inputs {
                if name.is_empty() {
                    ins.push(None);
                    continue;
                }
                let s = *slot_of.get(name.as_str()).ok_or_else(|| {
                    encoding(format!(
                        "{label} reads '{name}', which nothing before it produces"
                    ))
                })?;
                ins.push(Some(s));
            }
            let mut outs = Vec::new();
            for name in &n.outputs {
                if name.is_empty() {
                    outs.push(None);
                    continue;
                }
                let s = slot_of.len();
                if slot_of.insert(name, s).is_some() {
                    return Err(encoding(format!("'{name}' is produced twice")));
                }
                outs.push(Some(s));
            }
            if let Some(op) = op {
                steps.push(Step {
                    op,
                    inputs: ins,
                    outputs: outs,
                    label,
                });
            }
        }
        if !unsupported.is_empty() {
            return Err(Refusal::Unsupported(unsupported));
        }
        let mut outputs = Vec::new();
        for o in &graph.outputs {
            let s = *slot_of
                .get(o.name.as_str())
                .ok_or_else(|| encoding(format!("output '{}' is produced by nothing", o.name)))?;
            outputs.push(s);
            signature.outputs.push(port(o));
        }
        Ok(Plan {
            signature,
            slots: slot_of.len(),
            constants,
            inputs,
            outputs,
            steps,
        })
    }
}

impl Model for Plan {
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<RawTensor>> {
        let mut slots: Vec<Option<Arc<Value>>> = vec![None; self.slots];
        for (s, v) in &self.constants {
            slots[*s] = Some(v.clone());
        }
        for (&s, t) in self.inputs.iter().zip(inputs) {
            let v = Value::from_tensor(t)
                .ok_or_else(|| NnError::runtime("an input's bytes do not match its dimensions"))?;
            slots[s] = Some(Arc::new(v));
        }
        for step in &self.steps {
            let args: Vec<Option<&Value>> = step
                .inputs
                .iter()
                .map(|s| s.and_then(|s| slots[s].as_deref()))
                .collect();
            let results = step
                .op
                .run(&args)
                .map_err(|e| NnError::runtime(format!("{} failed", step.label)).with_detail(e))?;
            for (s, v) in step.outputs.iter().zip(results) {
                if let Some(s) = s {
                    slots[*s] = Some(Arc::new(v));
                }
            }
        }
        self.outputs
            .iter()
            .zip(&self.signature.outputs)
            .map(|(&s, port)| {
                let v = slots[s].take().ok_or_else(|| {
                    NnError::runtime(format!("output '{}' was not computed", port.name))
                })?;
                let v = Arc::try_unwrap(v).unwrap_or_else(|shared| (*shared).clone());
                v.into_raw().ok_or_else(|| {
                    NnError::runtime(format!("output '{}' has a dimension over 2^32", port.name))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
