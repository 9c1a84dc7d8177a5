//! The tract engine for `verge-nn`.
//!
//! It knows nothing of wasmtime or of any Wasm runtime: the device host links
//! it natively and the edge compiles it into a provider component. It only
//! loads ONNX bytes into a signature and runs tensors that `verge-nn` has
//! already checked; every check, error wording and widening rule is the core's.
//!
//! A model is parsed, typed and optimised once. Models whose inputs keep
//! symbolic dimensions (a sequence length) run with whatever concrete shape
//! each call brings; when tract cannot optimise the symbolic graph, or only a
//! batch dimension is symbolic, the model is specialised per concrete input
//! shape on first use and the plan cached.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;
use verge_nn::{
    Datum, Dim, ElementType, ErrorCode, Model, NnError, Port, RawTensor, Result, Signature,
};

/// How models run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Threads for matrix kernels; 0 and 1 mean the calling thread only.
    /// Honoured with the `multithread` feature (native hosts); otherwise ignored.
    pub threads: usize,
}

/// The engine: `verge_nn::Graph::load(name, &Tract::default(), bytes)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tract {
    pub options: Options,
}

impl Tract {
    pub fn new(options: Options) -> Tract {
        Tract { options }
    }
}

impl verge_nn::Engine for Tract {
    fn name(&self) -> &str {
        "tract"
    }

    fn load(&self, bytes: &[u8]) -> Result<Box<dyn Model>> {
        // tract panics on some broken files (an output no node makes;
        // fuzz/regressions/onnx_tract/undefined-output): refused, not a crash.
        let load = || TractModel::load(bytes, self.options);
        let model =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(load)).unwrap_or_else(|p| {
                Err(NnError::new(
                    ErrorCode::InvalidEncoding,
                    format!("tract panicked parsing the model: {}", panic_text(&*p)),
                ))
            })?;
        Ok(Box::new(model))
    }
}

use verge_nn::panic_text;

fn datum_type(t: ElementType) -> Option<DatumType> {
    Some(match t {
        ElementType::F16 => DatumType::F16,
        ElementType::F32 => DatumType::F32,
        ElementType::F64 => DatumType::F64,
        ElementType::U8 => DatumType::U8,
        ElementType::I32 => DatumType::I32,
        ElementType::I64 => DatumType::I64,
        ElementType::Bf16 => return None,
    })
}

fn datum_of(dt: DatumType) -> Datum {
    match dt {
        DatumType::Bool => Datum::Bool,
        DatumType::U8 => Datum::U8,
        DatumType::I8 => Datum::I8,
        DatumType::U16 => Datum::U16,
        DatumType::I16 => Datum::I16,
        DatumType::I32 => Datum::I32,
        DatumType::U32 => Datum::U32,
        DatumType::I64 => Datum::I64,
        DatumType::U64 => Datum::U64,
        DatumType::F16 => Datum::F16,
        DatumType::F32 => Datum::F32,
        DatumType::F64 => Datum::F64,
        DatumType::String => Datum::String,
        _ => Datum::Other,
    }
}

/// tract 0.23 turns a LayerNormalization `axis` below minus the input's rank
/// into a huge `usize` and writes an inference rule for every axis up to it:
/// gigabytes and minutes before any error (a fuzzed model, kept in
/// `fuzz/regressions/onnx_tract/`). Refused here, wherever the graph (or a
/// subgraph) declares the input's rank.
fn check_layer_norm_axes(graph: &pb::GraphProto) -> Result<()> {
    let declared = graph
        .input
        .iter()
        .chain(&graph.value_info)
        .chain(&graph.output);
    let mut ranks: HashMap<&str, usize> = declared
        .filter_map(|v| Some((v.name.as_str(), port(v).dims?.len())))
        .collect();
    ranks.extend(
        graph
            .initializer
            .iter()
            .map(|t| (t.name.as_str(), t.dims.len())),
    );
    for node in &graph.node {
        // The same for a Transpose whose perm is not a permutation: tract
        // builds it anyway and runs out of memory (a fuzzed [0, 2, 0]).
        if node.op_type == "Transpose"
            && let Some(perm) = node.attribute.iter().find(|a| a.name == "perm")
        {
            let mut seen = vec![false; perm.ints.len()];
            let permutation = perm.ints.iter().all(|&p| {
                usize::try_from(p)
                    .ok()
                    .and_then(|p| seen.get_mut(p))
                    .is_some_and(|s| !std::mem::replace(s, true))
            });
            if !permutation {
                return Err(NnError::new(
                    ErrorCode::InvalidEncoding,
                    format!(
                        "Transpose '{}': perm {:?} is not a permutation of its axes",
                        node.name, perm.ints
                    ),
                ));
            }
        }
        if node.op_type == "LayerNormalization" {
            let axis = node
                .attribute
                .iter()
                .find(|a| a.name == "axis")
                .map_or(-1, |a| a.i);
            let rank = node.input.first().and_then(|x| ranks.get(x.as_str()));
            if let Some(&rank) = rank
                && (axis < -(rank as i64) || axis >= rank as i64)
            {
                return Err(NnError::new(
                    ErrorCode::InvalidEncoding,
                    format!(
                        "LayerNormalization '{}': axis {axis} is outside its rank-{rank} input",
                        node.name
                    ),
                ));
            }
        }
        for a in &node.attribute {
            for g in a.g.iter().chain(&a.graphs) {
                check_layer_norm_axes(g)?;
            }
        }
    }
    Ok(())
}

/// A port as the ONNX file declares it, so that every engine reports the
/// same signature for the same file.
fn port(v: &pb::ValueInfoProto) -> Port {
    let tensor = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(pb::type_proto::Value::TensorType(t)) => t,
        None => return Port::new(&v.name, Datum::Other, None),
    };
    let dims = tensor.shape.as_ref().map(|s| {
        s.dim
            .iter()
            .map(|d| match &d.value {
                Some(pb::tensor_shape_proto::dimension::Value::DimValue(n)) if *n >= 0 => {
                    Dim::Fixed(*n as u64)
                }
                Some(pb::tensor_shape_proto::dimension::Value::DimParam(p)) => Dim::symbolic(p),
                _ => Dim::Any,
            })
            .collect()
    });
    let datum = match tensor.elem_type {
        0 => Datum::Other,
        code => Datum::from_onnx(code),
    };
    Port::new(&v.name, datum, dims)
}

fn signature(proto: &pb::ModelProto) -> Signature {
    let Some(g) = proto.graph.as_ref() else {
        return Signature::default();
    };
    let initialised: std::collections::HashSet<&str> =
        g.initializer.iter().map(|t| t.name.as_str()).collect();
    Signature {
        inputs: g
            .input
            .iter()
            .filter(|i| !initialised.contains(i.name.as_str()))
            .map(port)
            .collect(),
        outputs: g.output.iter().map(port).collect(),
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

/// A loaded, optimised model.
pub struct TractModel {
    signature: Signature,
    /// tract's symbol (if any) for each dimension of each input, for specialising.
    symbols: Vec<Vec<Option<Symbol>>>,
    input_types: Vec<DatumType>,
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

impl fmt::Debug for TractModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TractModel")
            .field("signature", &self.signature.to_string())
            .field("specialised_per_shape", &self.general.is_none())
            .finish()
    }
}

fn unsupported(what: &str, e: &TractError) -> NnError {
    NnError::unsupported(format!("tract cannot {what}: {}", chain(e)))
}

impl TractModel {
    /// Parses, types and optimises an ONNX model.
    pub fn load(onnx: &[u8], options: Options) -> Result<TractModel> {
        let not_onnx = |e: TractError| {
            NnError::new(
                ErrorCode::InvalidEncoding,
                format!("not an ONNX model tract can read: {}", chain(&e)),
            )
        };
        let onnx_format = tract_onnx::onnx();
        let proto = onnx_format
            .proto_model_for_read(&mut &onnx[..])
            .map_err(not_onnx)?;
        if let Some(graph) = &proto.graph {
            check_layer_norm_axes(graph)?;
        }
        let signature = signature(&proto);
        let inference = onnx_format.model_for_proto_model(&proto).map_err(|e| {
            NnError::unsupported(format!("tract cannot read this model: {}", chain(&e)))
        })?;
        let (input_types, symbols) = input_facts(&inference, &signature)?;
        let symbolic = symbols.iter().flatten().any(Option::is_some)
            || signature
                .inputs
                .iter()
                .any(|p| p.dims.iter().flatten().any(|d| !matches!(d, Dim::Fixed(_))));
        // Only a batch dimension is symbolic: tract optimises such a graph
        // into generic kernels (EfficientNet-Lite0 at batch 1: 193 ms against
        // 38 ms with N fixed), so it gets a plan per batch size instead.
        let batch_only = symbolic
            && symbols
                .iter()
                .all(|s| s.iter().skip(1).all(Option::is_none))
            && signature.inputs.iter().all(|p| {
                p.dims
                    .as_ref()
                    .is_some_and(|d| d.iter().skip(1).all(|d| matches!(d, Dim::Fixed(_))))
            });
        let mut model = TractModel {
            signature,
            symbols,
            input_types,
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
            Ok(typed) if batch_only => {
                model.graph = Some(Graph::Typed(typed));
                model
                    .specialise_for_one()
                    .map_err(|e| unsupported("optimise this model", &e))?;
            }
            Ok(typed) => match typed
                .clone()
                .into_optimized()
                .and_then(|m| m.into_runnable())
            {
                Ok(plan) => model.general = Some(plan),
                Err(e) if !symbolic => return Err(unsupported("optimise this model", &e)),
                Err(_) => model.graph = Some(Graph::Typed(typed)),
            },
            Err(e) if !symbolic => return Err(unsupported("type this model", &e)),
            Err(e) => {
                model.graph = Some(Graph::Inference(inference));
                model
                    .specialise_for_one()
                    .map_err(|_| unsupported("type this model", &e))?;
            }
        }
        Ok(model)
    }

    /// Specialises now for the usual case, every symbol = 1 (a batch of
    /// one), so the first call does not pay for it.
    fn specialise_for_one(&mut self) -> TractResult<()> {
        let shapes: Vec<Vec<usize>> = self
            .signature
            .inputs
            .iter()
            .map(|p| {
                p.dims
                    .iter()
                    .flatten()
                    .map(|d| match d {
                        Dim::Fixed(n) => *n as usize,
                        _ => 1,
                    })
                    .collect()
            })
            .collect();
        let plan = self.specialise(&shapes)?;
        self.specialised
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .push((shapes, plan));
        Ok(())
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
                for (symbols, shape) in self.symbols.iter().zip(shapes) {
                    for (sym, &d) in symbols.iter().zip(shape) {
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
                for (ix, (dt, shape)) in self.input_types.iter().zip(shapes).enumerate() {
                    m = m.with_input_fact(ix, InferenceFact::dt_shape(*dt, shape.clone()))?;
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

/// tract's element type and symbols for each input; inputs tract cannot take
/// (bf16, an open type) are refused here, at load.
#[allow(clippy::type_complexity)]
fn input_facts(
    model: &InferenceModel,
    signature: &Signature,
) -> Result<(Vec<DatumType>, Vec<Vec<Option<Symbol>>>)> {
    let runtime = |e: TractError| NnError::runtime(chain(&e));
    let outlets = model.input_outlets().map_err(runtime)?;
    if outlets.len() != signature.inputs.len() {
        return Err(NnError::unsupported(format!(
            "tract reads {} inputs where the file declares {}",
            outlets.len(),
            signature.inputs.len()
        )));
    }
    let mut types = Vec::new();
    let mut symbols = Vec::new();
    for (ix, port) in signature.inputs.iter().enumerate() {
        let fact = model.input_fact(ix).map_err(runtime)?;
        let dt = port
            .datum
            .carried()
            .and_then(datum_type)
            .or_else(|| fact.datum_type.concretize())
            .ok_or_else(|| NnError::unsupported(format!("tract cannot take input {port}")))?;
        if port
            .datum
            .carried()
            .is_some_and(|t| datum_type(t).is_none())
        {
            return Err(NnError::unsupported(format!(
                "tract cannot take input {port}: it has no {} tensors",
                port.datum
            )));
        }
        types.push(dt);
        symbols.push(if fact.shape.is_open() {
            Vec::new()
        } else {
            fact.shape
                .dims()
                .map(|d| match d.concretize() {
                    Some(TDim::Sym(s)) => Some(s),
                    _ => None,
                })
                .collect()
        });
    }
    Ok((types, symbols))
}

fn to_tract(t: &verge_nn::Tensor) -> Result<TValue> {
    let dt = datum_type(t.ty).ok_or_else(|| NnError::unsupported("tract has no bf16 tensors"))?;
    let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
    // SAFETY: verge-nn checked the byte length against the shape and element
    // size, and every type here is plain old data.
    let value = unsafe { tract_onnx::prelude::Tensor::from_raw_dt(dt, &shape, &t.data) }
        .map_err(|e| NnError::runtime(chain(&e)))?;
    Ok(value.into_tvalue())
}

fn from_tract(value: &tract_onnx::prelude::Tensor) -> RawTensor {
    let datum = datum_of(value.datum_type());
    let dims = value.shape().iter().map(|&d| d as u32).collect();
    let data = if datum.size().is_some() {
        value.as_bytes().to_vec()
    } else {
        Vec::new()
    };
    RawTensor::new(dims, datum, data)
}

impl Model for TractModel {
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn run(&self, inputs: Vec<verge_nn::Tensor>) -> Result<Vec<RawTensor>> {
        let inputs: TVec<TValue> = inputs.iter().map(to_tract).collect::<Result<_>>()?;
        let plan = self.plan_for(&inputs)?;
        // tract panics on some inputs (an integer Mod by zero divides by zero;
        // fuzz/regressions/onnx_tract/mod-uint8-zeros): a component's data gets
        // an error, it does not take the host down.
        let run = || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| plan.run(inputs)))
                .unwrap_or_else(|p| {
                    Err(TractError::msg(format!(
                        "tract panicked: {}",
                        panic_text(&*p)
                    )))
                })
        };
        #[cfg(feature = "multithread")]
        let outputs = match &self.executor {
            Some(pool) => tract_linalg::multithread::multithread_tract_scope(pool.clone(), run),
            None => run(),
        };
        #[cfg(not(feature = "multithread"))]
        let outputs = run();
        let outputs =
            outputs.map_err(|e| NnError::runtime(format!("inference failed: {}", chain(&e))))?;
        Ok(outputs.iter().map(|t| from_tract(t)).collect())
    }
}

/// tract's errors carry a context chain; show all of it in one line.
fn chain(e: &TractError) -> String {
    format!("{e:#}")
}
