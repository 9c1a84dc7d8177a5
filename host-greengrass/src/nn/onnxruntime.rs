//! The ONNX Runtime backend, through the `ort` crate with the library loaded
//! at run time: the device brings its own `libonnxruntime` (CPU, CUDA,
//! TensorRT, OpenVINO builds alike) and nothing is downloaded or linked at
//! build time.
//!
//! Models at the default thread count share one intra-op thread pool, sized
//! to the cores; a model given `threads` gets a pool of its own.
//!
//! An `ort` session runs with `&mut self`, so a model keeps a small pool of
//! sessions: one made at load (which checks the model), more only when calls
//! overlap, each returned to the pool after its call.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ort::environment::{Environment, GlobalThreadPoolOptions};
use ort::ep::{self, ExecutionProvider, ExecutionProviderDispatch};
use ort::session::Session as OrtSession;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{DynValue, PrimitiveTensorElementType, TensorElementType, ValueType};

use super::{ElementType, Engine, EngineSpec, ErrorCode, Id, NnError, Session, Target, Tensor};

/// The process's ONNX Runtime: one library, loaded once.
static RUNTIME: Mutex<Option<(PathBuf, &'static Environment)>> = Mutex::new(None);

/// Where the library is looked for when the deployment does not say: the
/// `ORT_DYLIB_PATH` variable (`ort`'s convention), next to the executable or on
/// the dynamic loader's path, then the usual install prefixes.
pub fn library_candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_path_buf()];
    }
    let name = format!(
        "{}onnxruntime{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let mut v = Vec::new();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        v.push(PathBuf::from(p));
    }
    // The wheel and the npm package ship the versioned name only.
    let names = [name.clone(), format!("{name}.1")];
    v.extend(names.iter().map(PathBuf::from));
    for prefix in ["/usr/local/lib", "/usr/lib", "/opt/onnxruntime/lib"] {
        v.extend(names.iter().map(|n| Path::new(prefix).join(n)));
    }
    v
}

fn error(code: ErrorCode, message: impl Into<String>) -> NnError {
    NnError::new(code, message)
}

/// ONNX Runtime's error codes in `wasi:nn` terms.
fn ort_error<R>(what: &str, e: ort::Error<R>) -> NnError {
    use ort::error::ErrorCode as E;
    let code = match e.code() {
        E::InvalidArgument => ErrorCode::InvalidArgument,
        E::NoSuchFile | E::NoModel | E::InvalidProtobuf | E::InvalidGraph => {
            ErrorCode::InvalidEncoding
        }
        E::NotImplemented => ErrorCode::UnsupportedOperation,
        E::NotFound => ErrorCode::NotFound,
        _ => ErrorCode::RuntimeError,
    };
    error(code, format!("onnxruntime: {what}: {}", e.message()))
}

/// Loads the library (once per process) and returns its environment.
fn runtime(library: Option<&Path>) -> Result<&'static Environment, NnError> {
    let mut slot = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((path, env)) = slot.as_ref() {
        return match library {
            Some(want) if want != path => Err(error(
                ErrorCode::InvalidArgument,
                format!(
                    "ONNX Runtime is already loaded from {}; a process loads one library, not also {}",
                    path.display(),
                    want.display()
                ),
            )),
            _ => Ok(*env),
        };
    }
    let mut tried = Vec::new();
    for candidate in library_candidates(library) {
        match ort::init_from(&candidate) {
            Ok(builder) => {
                // One intra-op pool for every model left at the default
                // thread count: calls running at once in the daemon share the
                // cores instead of each spawning one thread per core.
                let pool = GlobalThreadPoolOptions::default();
                let env = builder
                    .with_name("verge")
                    .with_telemetry(false)
                    .with_global_thread_pool(pool)
                    .build()
                    .map_err(|e| ort_error("creating the environment", e))?;
                let env: &'static Environment = Box::leak(Box::new(env));
                *slot = Some((candidate, env));
                return Ok(env);
            }
            Err(e) => tried.push(format!("{}: {e}", candidate.display())),
        }
    }
    Err(error(
        ErrorCode::NotFound,
        format!(
            "no ONNX Runtime library could be loaded ({}); set `library` under [onnxruntime] (or --onnxruntime-lib) to a libonnxruntime of version 1.22 or newer",
            tried.join("; ")
        ),
    ))
}

/// The execution providers the loaded library offers, among those verge knows.
pub fn available_providers() -> Vec<&'static str> {
    if RUNTIME.lock().map(|r| r.is_none()).unwrap_or(true) {
        return Vec::new();
    }
    type Probe = fn() -> ort::Result<bool>;
    let known: [(&str, Probe); 4] = [
        ("tensorrt", ep::TensorRT::is_available),
        ("cuda", ep::CUDA::is_available),
        ("openvino", ep::OpenVINO::is_available),
        ("cpu", ep::CPU::is_available),
    ];
    known
        .into_iter()
        .filter(|(_, available)| available().unwrap_or(false))
        .map(|(name, _)| name)
        .collect()
}

/// The execution provider names verge knows, for configuration checks.
pub const PROVIDERS: [&str; 4] = ["tensorrt", "cuda", "openvino", "cpu"];

fn dispatch(name: &str) -> Result<ExecutionProviderDispatch, NnError> {
    Ok(match name {
        "tensorrt" => ep::TensorRT::default().build(),
        "cuda" => ep::CUDA::default().build(),
        "openvino" => ep::OpenVINO::default().build(),
        "cpu" => ep::CPU::default().build(),
        other => {
            return Err(error(
                ErrorCode::InvalidArgument,
                format!("unknown execution provider '{other}' (tensorrt, cuda, openvino or cpu)"),
            ));
        }
    }
    .error_on_failure())
}

/// The providers to try for a model, in the configured order: those the
/// library was built with (it may still fail to start one, e.g. TensorRT
/// without libnvinfer, which `load` then skips).
fn candidates(spec: &EngineSpec) -> Result<Vec<(String, ExecutionProviderDispatch)>, NnError> {
    if spec.target == Target::Cpu {
        return Ok(vec![("cpu".into(), dispatch("cpu")?)]);
    }
    let wanted: Vec<String> = if spec.providers.is_empty() {
        vec!["tensorrt".into(), "cuda".into()]
    } else {
        spec.providers.iter().map(|p| p.to_lowercase()).collect()
    };
    let offered = available_providers();
    let mut chosen = Vec::new();
    for name in &wanted {
        let d = dispatch(name)?;
        if offered.contains(&name.as_str()) {
            chosen.push((name.clone(), d));
        }
    }
    if chosen.is_empty() {
        return Err(error(
            ErrorCode::NotFound,
            format!(
                "execution target gpu: this ONNX Runtime offers none of {} (it offers {})",
                wanted.join(", "),
                offered.join(", ")
            ),
        ));
    }
    Ok(chosen)
}

/// One input or output as the model declares it.
struct Port {
    name: String,
    ty: Option<TensorElementType>,
    /// Negative for a symbolic dimension.
    dims: Vec<i64>,
}

impl Port {
    fn of(name: &str, ty: &ValueType) -> Port {
        Port {
            name: name.to_string(),
            ty: ty.tensor_type(),
            dims: ty.tensor_shape().map(|s| s.to_vec()).unwrap_or_default(),
        }
    }

    fn describe(&self) -> String {
        let dims: Vec<String> = self
            .dims
            .iter()
            .map(|&d| if d < 0 { "?".into() } else { d.to_string() })
            .collect();
        let ty = self
            .ty
            .and_then(element_of)
            .map(|t| t.to_string())
            .unwrap_or_else(|| format!("{:?}", self.ty));
        format!("'{}' {ty}[{}]", self.name, dims.join(", "))
    }
}

struct Inner {
    onnx: Vec<u8>,
    env: &'static Environment,
    threads: usize,
    providers: Vec<ExecutionProviderDispatch>,
    inputs: Vec<Port>,
    outputs: Vec<Port>,
    idle: Mutex<Vec<OrtSession>>,
}

impl Inner {
    fn new_session(&self) -> Result<OrtSession, NnError> {
        let mut b = OrtSession::builder(self.env)
            .map_err(|e| ort_error("session options", e))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| ort_error("optimisation level", e))?;
        if self.threads > 0 {
            b = b
                .with_independent_thread_pool()
                .map_err(|e| ort_error("thread pool", e))?
                .with_intra_threads(self.threads)
                .map_err(|e| ort_error("intra-op threads", e))?;
        }
        if !self.providers.is_empty() {
            b = b
                .with_execution_providers(&self.providers)
                .map_err(|e| ort_error("registering execution providers", e))?;
        }
        b.commit_from_memory(&self.onnx)
            .map_err(|e| ort_error("loading the model", e))
    }
}

/// Loads a model; returns it with the execution providers that serve it.
pub(super) fn load(
    onnx: &[u8],
    spec: &EngineSpec,
) -> Result<(Arc<dyn Engine>, Vec<String>), NnError> {
    if onnx.is_empty() {
        return Err(error(ErrorCode::InvalidEncoding, "the model is empty"));
    }
    let env = runtime(spec.library.as_deref())?;
    let mut inner = Inner {
        onnx: onnx.to_vec(),
        env,
        threads: spec.threads,
        providers: Vec::new(),
        inputs: Vec::new(),
        outputs: Vec::new(),
        idle: Mutex::new(Vec::new()),
    };
    // The first provider that starts with this model wins; the CPU target
    // registers none (ONNX Runtime's own CPU provider).
    let mut failures = Vec::new();
    let mut first = None;
    for (name, d) in candidates(spec)? {
        inner.providers = if name == "cpu" { Vec::new() } else { vec![d] };
        match inner.new_session() {
            Ok(s) => {
                first = Some((s, name));
                break;
            }
            Err(e) => failures.push((name, e)),
        }
    }
    let Some((first, provider)) = first else {
        // One candidate: its own error, code and all.
        if failures.len() == 1 {
            return Err(failures.remove(0).1);
        }
        let all: Vec<String> = failures.iter().map(|(n, e)| format!("{n}: {e}")).collect();
        return Err(error(
            ErrorCode::NotFound,
            format!("no execution provider started: {}", all.join("; ")),
        ));
    };
    inner.inputs = first
        .inputs()
        .iter()
        .map(|o| Port::of(o.name(), o.dtype()))
        .collect();
    inner.outputs = first
        .outputs()
        .iter()
        .map(|o| Port::of(o.name(), o.dtype()))
        .collect();
    // A model whose inputs or outputs wasi:nn cannot carry is refused now
    // (so a configured fallback applies), not on every call.
    for (kind, ports) in [("input", &inner.inputs), ("output", &inner.outputs)] {
        for p in ports.iter() {
            let ok = match kind {
                "input" => element_of_opt(p.ty).is_some(),
                _ => {
                    p.ty.is_some_and(|t| element_of(t).is_some() || widened(t).is_some())
                }
            };
            if !ok {
                return Err(error(
                    ErrorCode::UnsupportedOperation,
                    format!(
                        "{kind} {} is not a tensor type wasi:nn can carry",
                        p.describe()
                    ),
                ));
            }
        }
    }
    inner.idle.get_mut().unwrap().push(first);
    Ok((Arc::new(OrtEngine(Arc::new(inner))), vec![provider]))
}

struct OrtEngine(Arc<Inner>);

impl Engine for OrtEngine {
    fn session(&self) -> Box<dyn Session> {
        Box::new(OrtContext {
            model: self.0.clone(),
            inputs: (0..self.0.inputs.len()).map(|_| None).collect(),
            outputs: Vec::new(),
        })
    }
}

struct OrtContext {
    model: Arc<Inner>,
    inputs: Vec<Option<DynValue>>,
    outputs: Vec<Tensor>,
}

fn list(ports: &[Port]) -> String {
    let v: Vec<String> = ports.iter().map(Port::describe).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn index(ports: &[Port], id: Id<'_>, kind: &str) -> Result<usize, NnError> {
    match id {
        Id::Index(i) if (i as usize) < ports.len() => Some(i as usize),
        Id::Name(n) => ports.iter().position(|p| p.name == n),
        _ => None,
    }
    .ok_or_else(|| {
        let which = match id {
            Id::Index(i) => format!("#{i}"),
            Id::Name(n) => format!("'{n}'"),
        };
        error(
            ErrorCode::InvalidArgument,
            format!("no {kind} {which}; the model's {kind}s are {}", list(ports)),
        )
    })
}

impl Session for OrtContext {
    fn set_input(&mut self, id: Id<'_>, tensor: &Tensor) -> Result<(), NnError> {
        let ix = index(&self.model.inputs, id, "input")?;
        let port = &self.model.inputs[ix];
        let fits = element_of_opt(port.ty) == Some(tensor.ty)
            && port.dims.len() == tensor.dims.len()
            && port
                .dims
                .iter()
                .zip(&tensor.dims)
                .all(|(&want, &got)| want < 0 || want == got as i64);
        if !fits {
            return Err(error(
                ErrorCode::InvalidArgument,
                format!(
                    "input {} cannot take {}{:?}",
                    port.describe(),
                    tensor.ty,
                    tensor.dims
                ),
            ));
        }
        self.inputs[ix] = Some(to_value(tensor, &port.name)?);
        Ok(())
    }

    fn compute(&mut self) -> Result<(), NnError> {
        let missing: Vec<String> = self
            .model
            .inputs
            .iter()
            .zip(&self.inputs)
            .filter(|(_, v)| v.is_none())
            .map(|(p, _)| p.describe())
            .collect();
        if !missing.is_empty() {
            return Err(error(
                ErrorCode::InvalidArgument,
                format!("inputs not set: {}", missing.join(", ")),
            ));
        }
        let inputs: Vec<(&str, &DynValue)> = self
            .model
            .inputs
            .iter()
            .zip(self.inputs.iter().flatten())
            .map(|(p, v)| (p.name.as_str(), v))
            .collect();
        let taken = self
            .model
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        let mut session = match taken {
            Some(s) => s,
            None => self.model.new_session()?,
        };
        let result = session
            .run(inputs)
            .map_err(|e| ort_error("inference failed", e))
            .and_then(|outputs| {
                outputs
                    .into_iter()
                    .map(|(name, value)| from_value(&value, name))
                    .collect::<Result<Vec<Tensor>, NnError>>()
            });
        self.model
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(session);
        self.outputs = result?;
        Ok(())
    }

    fn get_output(&self, id: Id<'_>) -> Result<Tensor, NnError> {
        let ix = index(&self.model.outputs, id, "output")?;
        self.outputs.get(ix).cloned().ok_or_else(|| {
            error(
                ErrorCode::InvalidArgument,
                "no outputs yet: call compute first",
            )
        })
    }

    fn run(&mut self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, NnError> {
        for (name, t) in inputs {
            self.set_input(Id::Name(name), t)?;
        }
        self.compute()?;
        Ok(self
            .model
            .outputs
            .iter()
            .map(|p| p.name.clone())
            .zip(self.outputs.iter().cloned())
            .collect())
    }
}

fn element_of(t: TensorElementType) -> Option<ElementType> {
    Some(match t {
        TensorElementType::Float32 => ElementType::F32,
        TensorElementType::Float16 => ElementType::F16,
        TensorElementType::Float64 => ElementType::F64,
        TensorElementType::Bfloat16 => ElementType::Bf16,
        TensorElementType::Uint8 => ElementType::U8,
        TensorElementType::Int32 => ElementType::I32,
        TensorElementType::Int64 => ElementType::I64,
        _ => return None,
    })
}

/// The type an output of `t` is widened to, as the tract backend widens it.
fn widened(t: TensorElementType) -> Option<ElementType> {
    match t {
        TensorElementType::Bool
        | TensorElementType::Int8
        | TensorElementType::Int16
        | TensorElementType::Uint16 => Some(ElementType::I32),
        TensorElementType::Uint32 => Some(ElementType::I64),
        _ => None,
    }
}

fn element_of_opt(t: Option<TensorElementType>) -> Option<ElementType> {
    t.and_then(element_of)
}

/// Element types as little-endian bytes.
trait Le: PrimitiveTensorElementType + Copy + std::fmt::Debug + 'static {
    const SIZE: usize;
    fn read(b: &[u8]) -> Self;
    fn write(self, out: &mut Vec<u8>);
}

macro_rules! le {
    ($($t:ty),*) => {$(
        impl Le for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn read(b: &[u8]) -> Self {
                <$t>::from_le_bytes(b.try_into().expect("chunk of SIZE bytes"))
            }
            fn write(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
le!(f32, f64, u8, i32, i64, half::f16, half::bf16);

fn tensor_of<T: Le>(dims: Vec<i64>, data: &[u8]) -> ort::Result<DynValue> {
    let values: Vec<T> = data.chunks_exact(T::SIZE).map(T::read).collect();
    Ok(ort::value::Tensor::from_array((dims, values))?.into_dyn())
}

fn to_value(t: &Tensor, name: &str) -> Result<DynValue, NnError> {
    let bytes = t
        .dims
        .iter()
        .try_fold(t.ty.size(), |n, &d| n.checked_mul(d as usize));
    if bytes != Some(t.data.len()) {
        return Err(error(
            ErrorCode::InvalidArgument,
            format!(
                "input '{name}': {} bytes do not make {}{:?} ({})",
                t.data.len(),
                t.ty,
                t.dims,
                bytes.map_or("too many".into(), |b| format!("{b} bytes"))
            ),
        ));
    }
    let dims: Vec<i64> = t.dims.iter().map(|&d| d as i64).collect();
    let value = match t.ty {
        ElementType::F32 => tensor_of::<f32>(dims, &t.data),
        ElementType::F16 => tensor_of::<half::f16>(dims, &t.data),
        ElementType::F64 => tensor_of::<f64>(dims, &t.data),
        ElementType::Bf16 => tensor_of::<half::bf16>(dims, &t.data),
        ElementType::U8 => tensor_of::<u8>(dims, &t.data),
        ElementType::I32 => tensor_of::<i32>(dims, &t.data),
        ElementType::I64 => tensor_of::<i64>(dims, &t.data),
    };
    value.map_err(|e| ort_error(&format!("input '{name}'"), e))
}

/// Copies an output out; narrow integer and boolean outputs are widened the
/// way the tract backend widens them, so components see the same types.
fn from_value(v: &DynValue, name: &str) -> Result<Tensor, NnError> {
    /// Copies the values out as `U`, converted by `f` (identity, or widening).
    fn take<T: PrimitiveTensorElementType + Copy + 'static, U: Le>(
        v: &DynValue,
        ty: ElementType,
        f: impl Fn(T) -> U,
    ) -> ort::Result<Tensor> {
        let (shape, values) = v.try_extract_tensor::<T>()?;
        let mut data = Vec::with_capacity(values.len() * U::SIZE);
        for &x in values {
            f(x).write(&mut data);
        }
        let dims = shape.iter().map(|&d| d as u32).collect();
        Ok(Tensor::new(dims, ty, data))
    }
    let Some(ty) = v.dtype().tensor_type() else {
        return Err(error(
            ErrorCode::UnsupportedOperation,
            format!("output '{name}' is not a tensor ({:?})", v.dtype()),
        ));
    };
    let out = match ty {
        TensorElementType::Float32 => take(v, ElementType::F32, |x: f32| x),
        TensorElementType::Float16 => take(v, ElementType::F16, |x: half::f16| x),
        TensorElementType::Float64 => take(v, ElementType::F64, |x: f64| x),
        TensorElementType::Bfloat16 => take(v, ElementType::Bf16, |x: half::bf16| x),
        TensorElementType::Uint8 => take(v, ElementType::U8, |x: u8| x),
        TensorElementType::Int32 => take(v, ElementType::I32, |x: i32| x),
        TensorElementType::Int64 => take(v, ElementType::I64, |x: i64| x),
        TensorElementType::Bool => take(v, ElementType::I32, |x: bool| i32::from(x)),
        TensorElementType::Int8 => take(v, ElementType::I32, |x: i8| i32::from(x)),
        TensorElementType::Int16 => take(v, ElementType::I32, |x: i16| i32::from(x)),
        TensorElementType::Uint16 => take(v, ElementType::I32, |x: u16| i32::from(x)),
        TensorElementType::Uint32 => take(v, ElementType::I64, |x: u32| i64::from(x)),
        other => {
            return Err(error(
                ErrorCode::UnsupportedOperation,
                format!("output '{name}' has element type {other:?}, which wasi:nn cannot carry"),
            ));
        }
    };
    out.map_err(|e| ort_error(&format!("output '{name}'"), e))
}
