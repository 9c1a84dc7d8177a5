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
use tract_onnx::tract_hir::infer::Factoid;

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
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
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
            .ok_or_else(|| {
                NnError::invalid(format!("{what}: dimensions {:?} overflow", self.dims))
            })?;
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

/// The graph a model keeps to specialise for concrete input shapes, when
/// tract cannot optimise it with its symbolic dimensions.
enum Graph {
    /// Typed with symbols: bind them and optimise.
    Typed(TypedModel),
    /// Not even typeable with symbols (Magika's one-hot needs a known batch
    /// size): set concrete input facts, then type and optimise.
    Inference(InferenceModel),
}

/// A loaded, optimised model. Share it with `Arc`; every [`Session`] on it is independent.
pub struct Model {
    inputs: Vec<InputSpec>,
    outputs: Vec<String>,
    /// The plan for every input shape, when tract could optimise the symbolic graph.
    general: Option<Plan>,
    /// Kept to specialise when `general` is `None`.
    graph: Option<Graph>,
    /// Plans per concrete input shapes, oldest first.
    specialised: Mutex<Vec<(Vec<Vec<usize>>, Plan)>>,
    /// The thread pool for matrix kernels, when more than one thread is asked for.
    #[cfg(feature = "multithread")]
    executor: Option<tract_linalg::multithread::Executor>,
}

/// How a model runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Threads for matrix kernels; 0 and 1 mean the calling thread only.
    /// Honoured with the `multithread` feature (native hosts); otherwise ignored.
    pub threads: usize,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field(
                "inputs",
                &self
                    .inputs
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>(),
            )
            .field("outputs", &self.outputs)
            .field("specialised_per_shape", &self.general.is_none())
            .finish()
    }
}

fn runtime(e: impl fmt::Display) -> NnError {
    NnError::new(ErrorCode::RuntimeError, e.to_string())
}

fn unsupported(what: &str, e: &TractError) -> NnError {
    NnError::new(
        ErrorCode::UnsupportedOperation,
        format!("tract cannot {what}: {}", chain(e)),
    )
}

impl Model {
    /// Parses, types and optimises an ONNX model, to run on the calling thread.
    pub fn load(onnx: &[u8]) -> Result<Model> {
        Self::load_with(onnx, Options::default())
    }

    /// Parses, types and optimises an ONNX model.
    pub fn load_with(onnx: &[u8], options: Options) -> Result<Model> {
        if onnx.is_empty() {
            return Err(NnError::new(
                ErrorCode::InvalidEncoding,
                "the model is empty",
            ));
        }
        let inference = tract_onnx::onnx()
            .model_for_read(&mut &onnx[..])
            .map_err(|e| {
                NnError::new(
                    ErrorCode::InvalidEncoding,
                    format!("not a model tract can load as ONNX: {}", chain(&e)),
                )
            })?;
        let inputs = input_specs(&inference)?;
        let symbolic = inputs.iter().any(|i| i.dims.iter().any(Option::is_none));
        let mut model = Model {
            inputs,
            outputs: Vec::new(),
            general: None,
            graph: None,
            specialised: Mutex::new(Vec::new()),
            #[cfg(feature = "multithread")]
            executor: (options.threads > 1).then(|| {
                tract_linalg::multithread::Executor::multithread_with_name(
                    options.threads,
                    "verge-tract",
                )
            }),
        };
        #[cfg(not(feature = "multithread"))]
        let _ = options;
        match inference
            .clone()
            .into_typed()
            .and_then(|m| m.into_decluttered())
        {
            Ok(typed) => {
                model.outputs = output_names(&typed)?;
                match typed
                    .clone()
                    .into_optimized()
                    .and_then(|m| m.into_runnable())
                {
                    Ok(plan) => model.general = Some(plan),
                    Err(e) if !symbolic => return Err(unsupported("optimise this model", &e)),
                    Err(_) => model.graph = Some(Graph::Typed(typed)),
                }
            }
            Err(e) if !symbolic => return Err(unsupported("type this model", &e)),
            Err(e) => {
                // Specialise now for the usual case, every symbol = 1 (a batch
                // of one), so the first call does not pay for it.
                model.graph = Some(Graph::Inference(inference));
                let shapes: Vec<Vec<usize>> = model
                    .inputs
                    .iter()
                    .map(|i| i.dims.iter().map(|d| d.unwrap_or(1)).collect())
                    .collect();
                let plan = model
                    .specialise(&shapes)
                    .map_err(|_| unsupported("type this model", &e))?;
                model.outputs = output_names(plan.model())?;
                model.specialised.get_mut().unwrap().push((shapes, plan));
            }
        }
        Ok(model)
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
            Id::Index(i) if (i as usize) < self.inputs.len() => Some(i as usize),
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
            Id::Index(i) if (i as usize) < self.outputs.len() => Some(i as usize),
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
        if t.ty.datum().ok() != Some(spec.ty) {
            let want = ElementType::of(spec.ty)
                .map(|w| w.to_string())
                .unwrap_or_else(|| format!("{:?}", spec.ty));
            return Err(NnError::invalid(format!(
                "input {spec} expects {want} elements, got {}",
                t.ty
            )));
        }
        let shape_ok = t.dims.len() == spec.dims.len()
            && t.dims
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

    /// Builds a plan for these concrete input shapes.
    fn specialise(&self, shapes: &[Vec<usize>]) -> TractResult<Plan> {
        match self
            .graph
            .as_ref()
            .expect("a model without a general plan keeps its graph")
        {
            Graph::Typed(typed) => {
                let mut values = HashMap::new();
                for (spec, shape) in self.inputs.iter().zip(shapes) {
                    for (sym, &d) in spec.symbols.iter().zip(shape) {
                        if let Some(sym) = sym {
                            values.insert(sym.clone(), TDim::Val(d as i64));
                        }
                    }
                }
                typed
                    .set_symbols(&values)?
                    .into_optimized()?
                    .into_runnable()
            }
            Graph::Inference(inference) => {
                let mut m = inference.clone();
                for (ix, (spec, shape)) in self.inputs.iter().zip(shapes).enumerate() {
                    m = m.with_input_fact(ix, InferenceFact::dt_shape(spec.ty, shape.clone()))?;
                }
                m.into_optimized()?.into_runnable()
            }
        }
    }

    fn plan_for(&self, inputs: &[TValue]) -> Result<Plan> {
        if let Some(plan) = &self.general {
            return Ok(plan.clone());
        }
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
        let mut cache = self.specialised.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, plan)) = cache.iter().find(|(k, _)| *k == shapes) {
            return Ok(plan.clone());
        }
        let plan = self
            .specialise(&shapes)
            .map_err(|e| unsupported(&format!("run this model for input shapes {shapes:?}"), &e))?;
        if cache.len() == MAX_SPECIALISED_PLANS {
            cache.remove(0);
        }
        cache.push((shapes, plan.clone()));
        Ok(plan)
    }
}

fn input_specs(model: &InferenceModel) -> Result<Vec<InputSpec>> {
    let outlets = model.input_outlets().map_err(runtime)?;
    outlets
        .iter()
        .enumerate()
        .map(|(ix, outlet)| {
            let name = model.node(outlet.node).name.clone();
            let fact = model.input_fact(ix).map_err(runtime)?;
            let ty = fact.datum_type.concretize().ok_or_else(|| {
                NnError::new(
                    ErrorCode::UnsupportedOperation,
                    format!("input '{name}' declares no element type"),
                )
            })?;
            if fact.shape.is_open() {
                return Err(NnError::new(
                    ErrorCode::UnsupportedOperation,
                    format!("input '{name}' declares no rank"),
                ));
            }
            let (dims, symbols) = fact
                .shape
                .dims()
                .map(|d| match d.concretize() {
                    Some(TDim::Val(v)) => (Some(v as usize), None),
                    Some(TDim::Sym(s)) => (None, Some(s)),
                    _ => (None, None),
                })
                .unzip();
            Ok(InputSpec {
                name,
                ty,
                dims,
                symbols,
            })
        })
        .collect()
}

fn output_names(model: &TypedModel) -> Result<Vec<String>> {
    Ok(model
        .output_outlets()
        .map_err(runtime)?
        .iter()
        .map(|&o| {
            model
                .outlet_label(o)
                .unwrap_or(&model.node(o.node).name)
                .to_string()
        })
        .collect())
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
        let run = || plan.run(inputs);
        #[cfg(feature = "multithread")]
        let outputs = match &self.model.executor {
            Some(pool) => tract_linalg::multithread::multithread_tract_scope(pool.clone(), run),
            None => run(),
        };
        #[cfg(not(feature = "multithread"))]
        let outputs = run();
        self.outputs = outputs
            .map_err(|e| runtime(format!("inference failed: {}", chain(&e))))?
            .into_vec();
        Ok(())
    }

    pub fn get_output(&self, id: Id<'_>) -> Result<Tensor> {
        let ix = self.model.output_index(id)?;
        let value = self
            .outputs
            .get(ix)
            .ok_or_else(|| NnError::invalid("no outputs yet: call compute first".to_string()))?;
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
