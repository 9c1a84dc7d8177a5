//! `wasi:nn` semantics on tract-onnx.
//!
//! This crate knows nothing of wasmtime or of any Wasm runtime: the device host
//! wraps it in wasmtime-wasi-nn's backend traits, and the edge compiles it to a
//! provider component. Tensors are exchanged the `wasi:nn` way (dimensions, an
//! element type and little-endian bytes) so both wrappers stay thin.
//!
//! A [`Model`] is parsed, typed and optimised once and is cheap to share
//! (`Arc`). Models whose inputs keep symbolic dimensions (a sequence length)
//! run with whatever concrete shape each call brings; when tract cannot
//! optimise the symbolic graph, the model is specialised per concrete input
//! shape on first use and the plan cached.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use tract_onnx::prelude::*;

/// The `wasi:nn` error codes this backend produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    InvalidEncoding,
    RuntimeError,
    UnsupportedOperation,
    TooLarge,
    NotFound,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorCode::InvalidArgument => "invalid-argument",
            ErrorCode::InvalidEncoding => "invalid-encoding",
            ErrorCode::RuntimeError => "runtime-error",
            ErrorCode::UnsupportedOperation => "unsupported-operation",
            ErrorCode::TooLarge => "too-large",
            ErrorCode::NotFound => "not-found",
        })
    }
}

/// An error with its `wasi:nn` code and a message that says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct NnError {
    pub code: ErrorCode,
    pub message: String,
}

impl NnError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }
}

pub type Result<T, E = NnError> = std::result::Result<T, E>;

/// Element types of `wasi:nn` tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementType {
    F16,
    F32,
    F64,
    Bf16,
    U8,
    I32,
    I64,
}

impl ElementType {
    pub fn size(self) -> usize {
        match self {
            ElementType::U8 => 1,
            ElementType::F16 | ElementType::Bf16 => 2,
            ElementType::F32 | ElementType::I32 => 4,
            ElementType::F64 | ElementType::I64 => 8,
        }
    }

    fn datum(self) -> Result<DatumType> {
        Ok(match self {
            ElementType::F16 => DatumType::F16,
            ElementType::F32 => DatumType::F32,
            ElementType::F64 => DatumType::F64,
            ElementType::U8 => DatumType::U8,
            ElementType::I32 => DatumType::I32,
            ElementType::I64 => DatumType::I64,
            ElementType::Bf16 => {
                return Err(NnError::new(
                    ErrorCode::UnsupportedOperation,
                    "bf16 tensors are not supported by the tract backend",
                ));
            }
        })
    }

    fn of(dt: DatumType) -> Option<ElementType> {
        Some(match dt {
            DatumType::F16 => ElementType::F16,
            DatumType::F32 => ElementType::F32,
            DatumType::F64 => ElementType::F64,
            DatumType::U8 => ElementType::U8,
            DatumType::I32 => ElementType::I32,
            DatumType::I64 => ElementType::I64,
            _ => return None,
        })
    }
}

impl fmt::Display for ElementType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ElementType::F16 => "fp16",
            ElementType::F32 => "fp32",
            ElementType::F64 => "fp64",
            ElementType::Bf16 => "bf16",
            ElementType::U8 => "u8",
            ElementType::I32 => "i32",
            ElementType::I64 => "i64",
        })
    }
}

/// A tensor as `wasi:nn` carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub dims: Vec<u32>,
    pub ty: ElementType,
    /// Little-endian element bytes, row-major.
    pub data: Vec<u8>,
}

impl Tensor {
    pub fn new(dims: Vec<u32>, ty: ElementType, data: Vec<u8>) -> Self {
        Self { dims, ty, data }
    }

    fn to_tract(&self, what: &str) -> Result<TValue> {
        let dt = self.ty.datum()?;
        let shape: Vec<usize> = self.dims.iter().map(|&d| d as usize).collect();
        let count = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| NnError::invalid(format!("{what}: dimensions {:?} overflow", self.dims)))?;
        let expected = count * self.ty.size();
        if self.data.len() != expected {
            return Err(NnError::invalid(format!(
                "{what}: dimensions {:?} of {} need {expected} bytes, got {}",
                self.dims,
                self.ty,
                self.data.len()
            )));
        }
        // SAFETY: the byte length was checked against shape and element size
        // above, and every supported element type is plain old data.
        let t = unsafe { tract_onnx::prelude::Tensor::from_raw_dt(dt, &shape, &self.data) }
            .map_err(|e| NnError::invalid(format!("{what}: {e}")))?;
        Ok(t.into_tvalue())
    }

    fn from_tract(value: &tract_onnx::prelude::Tensor, what: &str) -> Result<Tensor> {
        // Narrow integer and boolean outputs widen losslessly to i32 / i64,
        // the types wasi:nn can carry.
        let widened;
        let value = match value.datum_type() {
            DatumType::Bool | DatumType::I8 | DatumType::I16 | DatumType::U16 => {
                widened = value.cast_to_dt(DatumType::I32).map_err(runtime)?;
                widened.as_ref()
            }
            DatumType::U32 => {
                widened = value.cast_to_dt(DatumType::I64).map_err(runtime)?;
                widened.as_ref()
            }
            _ => value,
        };
        let ty = ElementType::of(value.datum_type()).ok_or_else(|| {
            NnError::new(
                ErrorCode::UnsupportedOperation,
                format!(
                    "{what}: element type {:?} has no wasi:nn equivalent",
                    value.datum_type()
                ),
            )
        })?;
        Ok(Tensor {
            dims: value.shape().iter().map(|&d| d as u32).collect(),
            ty,
            data: value.as_bytes().to_vec(),
        })
    }
}

/// Identifies an input or output, the way `wasi:nn` callers do.
#[derive(Debug, Clone, Copy)]
pub enum Id<'a> {
    Index(u32),
    Name(&'a str),
}

/// What a model input accepts: its name, element type and shape, where a
/// `None` dimension is symbolic (set per call).
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    pub name: String,
    pub ty: DatumType,
    pub dims: Vec<Option<usize>>,
    symbols: Vec<Option<Symbol>>,
}

impl fmt::Display for InputSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self
            .dims
            .iter()
            .zip(&self.symbols)
            .map(|(d, s)| match (d, s) {
                (Some(d), _) => d.to_string(),
                (None, Some(s)) => s.to_string(),
                (None, None) => "?".into(),
            })
            .collect();
        let ty = ElementType::of(self.ty)
            .map(|t| t.to_string())
            .unwrap_or_else(|| format!("{:?}", self.ty));
        write!(f, "'{}' {ty}[{}]", self.name, dims.join(", "))
    }
}

type Plan = Arc<TypedRunnableModel>;

/// How many per-shape specialisations a model keeps before it evicts the oldest.
const MAX_SPECIALISED_PLANS: usize = 16;

/// A loaded, optimised model. Share it with `Arc`; every [`Session`] on it is independent.
pub struct Model {
    inputs: Vec<InputSpec>,
    outputs: Vec<String>,
    /// The plan for every input shape, when tract could optimise the symbolic graph.
    general: Option<Plan>,
    /// The decluttered symbolic model, kept to specialise when `general` is `None`.
    typed: Option<TypedModel>,
    specialised: Mutex<Vec<(Vec<usize>, Plan)>>,
}

fn runtime(e: impl fmt::Display) -> NnError {
    NnError::new(ErrorCode::RuntimeError, e.to_string())
}

impl Model {
    /// Parses, types and optimises an ONNX model.
    pub fn load(onnx: &[u8]) -> Result<Model> {
        if onnx.is_empty() {
            return Err(NnError::new(ErrorCode::InvalidEncoding, "the model is empty"));
        }
        let corrupt = |e: TractError| {
            NnError::new(
                ErrorCode::InvalidEncoding,
                format!("not a model tract can load as ONNX: {}", chain(&e)),
            )
        };
        let inference = tract_onnx::onnx()
            .model_for_read(&mut &onnx[..])
            .map_err(corrupt)?;
        let typed = inference
            .into_typed()
            .and_then(|m| m.into_decluttered())
            .map_err(|e| {
                NnError::new(
                    ErrorCode::UnsupportedOperation,
                    format!("tract cannot type this model: {}", chain(&e)),
                )
            })?;
        let inputs = typed
            .input_outlets()
            .map_err(runtime)?
            .iter()
            .enumerate()
            .map(|(ix, outlet)| {
                let fact = typed.input_fact(ix).map_err(runtime)?;
                let (dims, symbols) = fact
                    .shape
                    .iter()
                    .map(|d| match d {
                        TDim::Val(v) => (Some(*v as usize), None),
                        TDim::Sym(s) => (None, Some(s.clone())),
                        _ => (None, None),
                    })
                    .unzip();
                Ok(InputSpec {
                    name: typed.node(outlet.node).name.clone(),
                    ty: fact.datum_type,
                    dims,
                    symbols,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let outputs = typed
            .output_outlets()
            .map_err(runtime)?
            .iter()
            .map(|&o| {
                typed
                    .outlet_label(o)
                    .unwrap_or(&typed.node(o.node).name)
                    .to_string()
            })
            .collect();
        let general = typed
            .clone()
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .ok();
        let symbolic = inputs.iter().any(|i| i.dims.iter().any(Option::is_none));
        if general.is_none() && !symbolic {
            // Nothing to specialise: report why the concrete graph failed.
            let e = typed
                .into_optimized()
                .and_then(|m| m.into_runnable())
                .err()
                .map(|e| chain(&e))
                .unwrap_or_default();
            return Err(NnError::new(
                ErrorCode::UnsupportedOperation,
                format!("tract cannot optimise this model: {e}"),
            ));
        }
        Ok(Model {
            typed: general.is_none().then_some(typed),
            inputs,
            outputs,
            general,
            specialised: Mutex::new(Vec::new()),
        })
    }

    pub fn inputs(&self) -> &[InputSpec] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[String] {
        &self.outputs
    }

    pub fn session(self: &Arc<Self>) -> Session {
        Session {
            model: self.clone(),
            inputs: vec![None; self.inputs.len()],
            outputs: Vec::new(),
        }
    }

    fn input_index(&self, id: Id<'_>) -> Result<usize> {
        match id {
            Id::Index(i) if (i as usize) < self.inputs.len() => Ok(i as usize),
            Id::Name(n) => self.inputs.iter().position(|s| s.name == n),
            _ => None,
        }
        .ok_or_else(|| {
            NnError::invalid(format!(
                "no input {}; the model's inputs are {}",
                describe(id),
                list(self.inputs.iter().map(|i| i.to_string()))
            ))
        })
    }

    fn output_index(&self, id: Id<'_>) -> Result<usize> {
        match id {
            Id::Index(i) if (i as usize) < self.outputs.len() => Ok(i as usize),
            Id::Name(n) => self.outputs.iter().position(|s| s == n),
            _ => None,
        }
        .ok_or_else(|| {
            NnError::invalid(format!(
                "no output {}; the model's outputs are {}",
                describe(id),
                list(self.outputs.iter().map(|o| format!("'{o}'")))
            ))
        })
    }

    /// Checks a tensor against input `ix` and converts it.
    fn check_input(&self, ix: usize, t: &Tensor) -> Result<TValue> {
        let spec = &self.inputs[ix];
        let want = ElementType::of(spec.ty);
        if t.ty.datum().ok() != Some(spec.ty) {
            let want = want
                .map(|w| w.to_string())
                .unwrap_or_else(|| format!("{:?}", spec.ty));
            return Err(NnError::invalid(format!(
                "input {spec} expects {want} elements, got {}",
                t.ty
            )));
        }
        let shape_ok = t.dims.len() == spec.dims.len()
            && t
                .dims
                .iter()
                .zip(&spec.dims)
                .all(|(&got, want)| want.is_none_or(|w| w == got as usize));
        if !shape_ok {
            return Err(NnError::invalid(format!(
                "input {spec} cannot take dimensions {:?}",
                t.dims
            )));
        }
        t.to_tract(&format!("input '{}'", spec.name))
    }

    fn plan_for(&self, inputs: &[TValue]) -> Result<Plan> {
        if let Some(plan) = &self.general {
            return Ok(plan.clone());
        }
        let key: Vec<usize> = inputs.iter().flat_map(|t| t.shape().to_vec()).collect();
        let mut cache = self.specialised.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, plan)) = cache.iter().find(|(k, _)| *k == key) {
            return Ok(plan.clone());
        }
        let typed = self.typed.as_ref().expect("a model without a general plan keeps its graph");
        let mut values = HashMap::new();
        for (spec, t) in self.inputs.iter().zip(inputs) {
            for (sym, &d) in spec.symbols.iter().zip(t.shape()) {
                if let Some(sym) = sym {
                    values.insert(sym.clone(), TDim::Val(d as i64));
                }
            }
        }
        let plan = typed
            .set_symbols(&values)
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| {
                NnError::new(
                    ErrorCode::UnsupportedOperation,
                    format!(
                        "tract cannot run this model for input shapes {key:?}: {}",
                        chain(&e)
                    ),
                )
            })?;
        if cache.len() == MAX_SPECIALISED_PLANS {
            cache.remove(0);
        }
        cache.push((key, plan.clone()));
        Ok(plan)
    }
}

fn describe(id: Id<'_>) -> String {
    match id {
        Id::Index(i) => format!("at index {i}"),
        Id::Name(n) => format!("named '{n}'"),
    }
}

fn list(items: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = items.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// One execution context: inputs set, computed, outputs read.
pub struct Session {
    model: Arc<Model>,
    inputs: Vec<Option<TValue>>,
    outputs: Vec<TValue>,
}

impl Session {
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    pub fn set_input(&mut self, id: Id<'_>, tensor: &Tensor) -> Result<()> {
        let ix = self.model.input_index(id)?;
        self.inputs[ix] = Some(self.model.check_input(ix, tensor)?);
        Ok(())
    }

    /// Runs the model on the inputs set so far; all of them must be set.
    pub fn compute(&mut self) -> Result<()> {
        let missing: Vec<String> = self
            .model
            .inputs
            .iter()
            .zip(&self.inputs)
            .filter(|(_, v)| v.is_none())
            .map(|(s, _)| s.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(NnError::invalid(format!(
                "inputs not set: {}",
                missing.join(", ")
            )));
        }
        let inputs: TVec<TValue> = self.inputs.iter().flatten().cloned().collect();
        let plan = self.model.plan_for(&inputs)?;
        self.outputs = plan
            .run(inputs)
            .map_err(|e| runtime(format!("inference failed: {}", chain(&e))))?
            .into_vec();
        Ok(())
    }

    pub fn get_output(&self, id: Id<'_>) -> Result<Tensor> {
        let ix = self.model.output_index(id)?;
        let value = self.outputs.get(ix).ok_or_else(|| {
            NnError::invalid("no outputs yet: call compute first".to_string())
        })?;
        Tensor::from_tract(value, &format!("output '{}'", self.model.outputs[ix]))
    }

    /// The `wasi:nn` WIT style: named inputs in, every output out by name.
    pub fn run(&mut self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>> {
        for (name, t) in inputs {
            self.set_input(Id::Name(name), t)?;
        }
        self.compute()?;
        (0..self.model.outputs.len())
            .map(|ix| {
                let t = self.get_output(Id::Index(ix as u32))?;
                Ok((self.model.outputs[ix].clone(), t))
            })
            .collect()
    }
}

/// tract's errors carry a context chain; show all of it in one line.
fn chain(e: &TractError) -> String {
    format!("{e:#}")
}
