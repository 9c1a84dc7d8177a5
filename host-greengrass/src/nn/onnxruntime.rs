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

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::environment::{Environment, GlobalThreadPoolOptions};
use ort::ep::{self, ExecutionProvider, ExecutionProviderDispatch};
use ort::session::Session as OrtSession;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{DynValue, PrimitiveTensorElementType, TensorElementType, ValueType};
use verge_nn::{Datum, Dim, Model, Port, RawTensor, Signature};

use super::{ElementType, EngineSpec, ErrorCode, NnError, Provider, Target, Tensor};

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
pub fn available_providers() -> Vec<Provider> {
    if RUNTIME.lock().map(|r| r.is_none()).unwrap_or(true) {
        return Vec::new();
    }
    Provider::ALL
        .into_iter()
        .filter(|p| {
            match p {
                Provider::Tensorrt => ep::TensorRT::is_available(),
                Provider::Cuda => ep::CUDA::is_available(),
                Provider::Openvino => ep::OpenVINO::is_available(),
                Provider::Cpu => ep::CPU::is_available(),
            }
            .unwrap_or(false)
        })
        .collect()
}

/// The folder a provider keeps its compiled form of one model in:
/// `<cache_dir>/<provider>/<model>-<first 16 hex digits of the model's sha256>`,
/// so a new model file never meets an old model's blobs.
fn cache_folder(spec: &EngineSpec, provider: Provider, name: &str, onnx: &[u8]) -> Option<PathBuf> {
    use sha2::{Digest, Sha256};
    let root = spec.cache_dir.as_ref()?;
    if !matches!(provider, Provider::Openvino | Provider::Tensorrt) {
        return None;
    }
    let digest = format!("{:x}", Sha256::digest(onnx));
    let prefix = &digest[..16];
    Some(
        root.join(provider.as_str())
            .join(format!("{name}-{prefix}")),
    )
}

/// A provider with the deployment's settings: its device, its threads
/// (OpenVINO keeps a pool of its own) and its cache folder.
fn dispatch(p: Provider, spec: &EngineSpec, cache: Option<&Path>) -> ExecutionProviderDispatch {
    let device = spec.device.as_deref();
    // Checked by EngineSpec::validate; a number either way.
    let id = device.and_then(|d| d.parse::<i32>().ok());
    let cache = cache.map(|c| c.display().to_string());
    match p {
        Provider::Tensorrt => {
            let mut e = ep::TensorRT::default();
            if let Some(id) = id {
                e = e.with_device_id(id);
            }
            if let Some(dir) = cache {
                e = e
                    .with_engine_cache(true)
                    .with_engine_cache_path(&dir)
                    .with_timing_cache(true)
                    .with_timing_cache_path(&dir);
            }
            e.build()
        }
        Provider::Cuda => {
            let mut e = ep::CUDA::default();
            if let Some(id) = id {
                e = e.with_device_id(id);
            }
            e.build()
        }
        Provider::Openvino => {
            let mut e = ep::OpenVINO::default();
            if let Some(d) = device {
                e = e.with_device_type(d);
            }
            if spec.threads > 0 {
                e = e.with_num_threads(spec.threads);
            }
            if let Some(dir) = cache {
                e = e.with_cache_dir(dir);
            }
            e.build()
        }
        Provider::Cpu => ep::CPU::default().build(),
    }
    .error_on_failure()
}

/// The providers to try for a model, in the configured order: those the
/// library was built with (it may still fail to start one, e.g. TensorRT
/// without libnvinfer, which `load` then skips).
fn candidates(spec: &EngineSpec) -> Result<Vec<Provider>, NnError> {
    if spec.target == Target::Cpu {
        return Ok(vec![Provider::Cpu]);
    }
    let wanted = spec.gpu_providers();
    let offered = available_providers();
    let chosen: Vec<Provider> = wanted
        .iter()
        .copied()
        .filter(|p| offered.contains(p))
        .collect();
    if chosen.is_empty() {
        let names = |v: &[Provider]| v.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ");
        return Err(error(
            ErrorCode::NotFound,
            format!(
                "execution target gpu: this ONNX Runtime offers none of {} (it offers {})",
                names(&wanted),
                names(&offered)
            ),
        ));
    }
    Ok(chosen)
}

fn datum_of(t: TensorElementType) -> Datum {
    match t {
        TensorElementType::Float32 => Datum::F32,
        TensorElementType::Uint8 => Datum::U8,
        TensorElementType::Int8 => Datum::I8,
        TensorElementType::Uint16 => Datum::U16,
        TensorElementType::Int16 => Datum::I16,
        TensorElementType::Int32 => Datum::I32,
        TensorElementType::Int64 => Datum::I64,
        TensorElementType::String => Datum::String,
        TensorElementType::Bool => Datum::Bool,
        TensorElementType::Float16 => Datum::F16,
        TensorElementType::Float64 => Datum::F64,
        TensorElementType::Uint32 => Datum::U32,
        TensorElementType::Uint64 => Datum::U64,
        TensorElementType::Bfloat16 => Datum::Bf16,
        TensorElementType::Complex64 => Datum::Complex64,
        TensorElementType::Complex128 => Datum::Complex128,
        _ => Datum::Other,
    }
}

/// A port as ONNX Runtime reports it: the file's names, types and symbols.
fn port(name: &str, ty: &ValueType) -> Port {
    match ty {
        ValueType::Tensor {
            ty,
            shape,
            dimension_symbols,
        } => {
            let dims = shape
                .iter()
                .enumerate()
                .map(|(i, &d)| match d {
                    d if d >= 0 => Dim::Fixed(d as u64),
                    _ => Dim::symbolic(dimension_symbols.get(i).map_or("", String::as_str)),
                })
                .collect();
            Port::new(name, datum_of(*ty), Some(dims))
        }
        _ => Port::new(name, Datum::NotATensor, None),
    }
}

struct OrtModel {
    onnx: Vec<u8>,
    env: &'static Environment,
    threads: usize,
    profile: Option<PathBuf>,
    providers: Vec<ExecutionProviderDispatch>,
    signature: Signature,
    idle: Mutex<Vec<OrtSession>>,
}

impl OrtModel {
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
        if let Some(prefix) = &self.profile {
            b = b
                .with_profiling(prefix)
                .map_err(|e| ort_error("profiling", e))?;
        }
        if !self.providers.is_empty() {
            b = b
                .with_execution_providers(&self.providers)
                .map_err(|e| ort_error("registering execution providers", e))?;
        }
        // `ort` panics on some broken files (an output dimension below -1:
        // fuzz/regressions/onnx_ort/negative-output-dim): refused, not a crash.
        let commit = || {
            b.commit_from_memory(&self.onnx)
                .map_err(|e| ort_error("loading the model", e))
        };
        catch_unwind(AssertUnwindSafe(commit)).unwrap_or_else(|p| {
            Err(NnError::new(
                ErrorCode::InvalidEncoding,
                format!(
                    "ONNX Runtime's binding panicked loading the model: {}",
                    verge_nn::panic_text(&*p)
                ),
            ))
        })
    }
}

/// The engine for one model's settings; it remembers which execution
/// provider the last model it loaded started on.
pub(super) struct Onnxruntime {
    name: String,
    spec: EngineSpec,
    chosen: Mutex<Option<Chosen>>,
}

/// The provider a model started on, and the folder of its compiled form.
#[derive(Clone)]
pub(super) struct Chosen {
    pub provider: String,
    pub cache: Option<PathBuf>,
}

impl Onnxruntime {
    /// The engine for the model deployed as `name` (which names its cache folder).
    pub(super) fn new(name: &str, spec: EngineSpec) -> Onnxruntime {
        Onnxruntime {
            name: name.to_string(),
            spec,
            chosen: Mutex::new(None),
        }
    }

    pub(super) fn chosen(&self) -> Option<Chosen> {
        self.chosen.lock().ok()?.clone()
    }
}

impl verge_nn::Engine for Onnxruntime {
    fn name(&self) -> &str {
        "onnxruntime"
    }

    fn load(&self, bytes: &[u8]) -> Result<Box<dyn Model>, NnError> {
        let (model, provider) = load(bytes, &self.name, &self.spec)?;
        if let Ok(mut chosen) = self.chosen.lock() {
            *chosen = Some(provider);
        }
        Ok(model)
    }
}

/// Loads a model; returns it with the execution provider that serves it.
fn load(onnx: &[u8], name: &str, spec: &EngineSpec) -> Result<(Box<dyn Model>, Chosen), NnError> {
    let env = runtime(spec.library.as_deref())?;
    let mut model = OrtModel {
        onnx: onnx.to_vec(),
        env,
        threads: spec.threads,
        profile: spec.profile.clone(),
        providers: Vec::new(),
        signature: Signature::default(),
        idle: Mutex::new(Vec::new()),
    };
    if let Some(folder) = spec.profile.as_ref().and_then(|p| p.parent()) {
        std::fs::create_dir_all(folder).map_err(|e| {
            error(
                ErrorCode::RuntimeError,
                format!("the profile's folder {}: {e}", folder.display()),
            )
        })?;
    }
    // The first provider that starts with this model wins; the CPU target
    // registers none (ONNX Runtime's own CPU provider).
    let mut failures = Vec::new();
    let mut first = None;
    for provider in candidates(spec)? {
        let cache = cache_folder(spec, provider, name, onnx);
        if let Some(dir) = &cache {
            std::fs::create_dir_all(dir).map_err(|e| {
                error(
                    ErrorCode::RuntimeError,
                    format!("{provider}'s cache folder {}: {e}", dir.display()),
                )
            })?;
        }
        model.providers = match provider {
            Provider::Cpu => Vec::new(),
            other => vec![dispatch(other, spec, cache.as_deref())],
        };
        match model.new_session() {
            Ok(s) => {
                let provider = provider.as_str().to_string();
                first = Some((s, Chosen { provider, cache }));
                break;
            }
            // Say which device, when one was asked for: ONNX Runtime says only
            // that the provider failed (its log says why).
            Err(mut e) => {
                if let (Some(d), false) = (&spec.device, provider == Provider::Cpu) {
                    e.message = format!("{} (device {d})", e.message);
                }
                failures.push((provider, e))
            }
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
    model.signature = Signature {
        inputs: first
            .inputs()
            .iter()
            .map(|o| port(o.name(), o.dtype()))
            .collect(),
        outputs: first
            .outputs()
            .iter()
            .map(|o| port(o.name(), o.dtype()))
            .collect(),
    };
    model.idle.get_mut().unwrap().push(first);
    Ok((Box::new(model), provider))
}

impl Model for OrtModel {
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<RawTensor>, NnError> {
        let values = inputs
            .iter()
            .zip(&self.signature.inputs)
            .map(|(t, p)| to_value(t).map_err(|e| ort_error(&format!("input '{}'", p.name), e)))
            .collect::<Result<Vec<DynValue>, NnError>>()?;
        let inputs: Vec<(&str, &DynValue)> = self
            .signature
            .inputs
            .iter()
            .map(|p| p.name.as_str())
            .zip(&values)
            .collect();
        let taken = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut session = match taken {
            Some(s) => s,
            None => self.new_session()?,
        };
        let run = || {
            session
                .run(inputs)
                .map_err(|e| ort_error("inference failed", e))
                .and_then(|outputs| {
                    outputs
                        .into_iter()
                        .map(|(name, value)| {
                            from_value(&value)
                                .map_err(|e| ort_error(&format!("output '{name}'"), e))
                        })
                        .collect::<Result<Vec<RawTensor>, NnError>>()
                })
        };
        // A panic in the binding fails the call; its session is not reused.
        let result = catch_unwind(AssertUnwindSafe(run)).map_err(|p| {
            NnError::new(
                ErrorCode::RuntimeError,
                format!(
                    "ONNX Runtime's binding panicked: {}",
                    verge_nn::panic_text(&*p)
                ),
            )
        })?;
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(session);
        result
    }
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
le!(
    f32,
    f64,
    u8,
    i8,
    u16,
    i16,
    i32,
    u32,
    i64,
    u64,
    half::f16,
    half::bf16
);

impl Le for bool {
    const SIZE: usize = 1;
    fn read(b: &[u8]) -> Self {
        b[0] != 0
    }
    fn write(self, out: &mut Vec<u8>) {
        out.push(u8::from(self));
    }
}

fn tensor_of<T: Le>(dims: Vec<i64>, data: &[u8]) -> ort::Result<DynValue> {
    let values: Vec<T> = data.chunks_exact(T::SIZE).map(T::read).collect();
    Ok(ort::value::Tensor::from_array((dims, values))?.into_dyn())
}

/// A checked tensor (verge-nn matched its bytes to its dimensions) as an ONNX Runtime value.
fn to_value(t: &Tensor) -> ort::Result<DynValue> {
    let dims: Vec<i64> = t.dims.iter().map(|&d| d as i64).collect();
    match t.ty {
        ElementType::F32 => tensor_of::<f32>(dims, &t.data),
        ElementType::F16 => tensor_of::<half::f16>(dims, &t.data),
        ElementType::F64 => tensor_of::<f64>(dims, &t.data),
        ElementType::Bf16 => tensor_of::<half::bf16>(dims, &t.data),
        ElementType::U8 => tensor_of::<u8>(dims, &t.data),
        ElementType::I32 => tensor_of::<i32>(dims, &t.data),
        ElementType::I64 => tensor_of::<i64>(dims, &t.data),
    }
}

/// An output as computed; verge-nn widens what wasi:nn cannot carry.
fn from_value(v: &DynValue) -> ort::Result<RawTensor> {
    fn take<T: Le>(v: &DynValue, datum: Datum) -> ort::Result<RawTensor> {
        let (shape, values) = v.try_extract_tensor::<T>()?;
        let mut data = Vec::with_capacity(values.len() * T::SIZE);
        for &x in values {
            x.write(&mut data);
        }
        let dims = shape.iter().map(|&d| d as u32).collect();
        Ok(RawTensor::new(dims, datum, data))
    }
    let Some(ty) = v.dtype().tensor_type() else {
        return Ok(RawTensor::new(Vec::new(), Datum::NotATensor, Vec::new()));
    };
    let datum = datum_of(ty);
    match datum {
        Datum::F32 => take::<f32>(v, datum),
        Datum::F16 => take::<half::f16>(v, datum),
        Datum::F64 => take::<f64>(v, datum),
        Datum::Bf16 => take::<half::bf16>(v, datum),
        Datum::U8 => take::<u8>(v, datum),
        Datum::I8 => take::<i8>(v, datum),
        Datum::U16 => take::<u16>(v, datum),
        Datum::I16 => take::<i16>(v, datum),
        Datum::I32 => take::<i32>(v, datum),
        Datum::U32 => take::<u32>(v, datum),
        Datum::I64 => take::<i64>(v, datum),
        Datum::U64 => take::<u64>(v, datum),
        Datum::Bool => take::<bool>(v, datum),
        // verge-nn refuses it by name.
        _ => Ok(RawTensor::new(Vec::new(), datum, Vec::new())),
    }
}
