//! The TensorFlow Lite backend: TFLite's C API (`libtensorflowlite_c`),
//! loaded at run time like ONNX Runtime's library, so the binary links
//! nothing of it and a device without it still runs its ONNX models.
//!
//! A TFLite interpreter is not safe to call from two threads, so a model
//! keeps a small pool of interpreters over one shared `TfLiteModel`: one made
//! at load (which checks the model), more only when calls overlap.
//!
//! The ports are the model's signature (`serving_default`, or its only one)
//! where it has one, as converters write it; otherwise the subgraph's
//! input and output tensors, by tensor name.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use libloading::Library;
use verge_nn::{Datum, Dim, Model, Port, RawTensor, Signature};

use super::{ErrorCode, NnError, Tensor};

/// The environment variable naming the library when the deployment does not.
pub const LIBRARY_VAR: &str = "VERGE_TENSORFLOWLITE_LIB";

/// How the deployment wants TFLite models run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TfliteSpec {
    /// The `libtensorflowlite_c` to load; `None` searches the usual places.
    pub library: Option<PathBuf>,
    /// Run what it can on the XNNPack delegate (TFLite's fast CPU kernels).
    pub xnnpack: bool,
}

impl Default for TfliteSpec {
    fn default() -> Self {
        TfliteSpec {
            library: None,
            xnnpack: true,
        }
    }
}

/// Where the library is looked for: the configured path, `$VERGE_TENSORFLOWLITE_LIB`,
/// beside the executable (where the Greengrass recipe puts artifacts), the
/// dynamic loader's path, then the usual install prefixes.
pub fn library_candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_path_buf()];
    }
    let name = "libtensorflowlite_c.so";
    let mut v = Vec::new();
    if let Some(p) = std::env::var_os(LIBRARY_VAR).filter(|p| !p.is_empty()) {
        v.push(PathBuf::from(p));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.to_path_buf()))
    {
        v.push(dir.join(name));
    }
    v.push(PathBuf::from(name));
    for prefix in ["/usr/local/lib", "/usr/lib"] {
        v.push(Path::new(prefix).join(name));
    }
    v
}

/// The C API's opaque handles.
type TfModel = c_void;
type TfOptions = c_void;
type TfInterpreter = c_void;
type TfTensor = c_void;
type TfRunner = c_void;
type TfDelegate = c_void;
type Reporter = unsafe extern "C" fn(*mut c_void, *const c_char, *mut c_void);

/// `TfLiteQuantizationParams`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Quantization {
    scale: f32,
    zero_point: i32,
}

/// Room for `TfLiteXNNPackDelegateOptions`, whose size grows between
/// releases: the library fills what it has (returned through a hidden
/// pointer on x86_64 and aarch64 alike, the struct being over 16 bytes), and
/// `num_threads` is its first field in every release.
#[repr(C, align(8))]
struct XnnpackOptions([u8; 512]);

/// The entry points verge calls, resolved once.
struct Api {
    _lib: Library,
    path: PathBuf,
    model_create: unsafe extern "C" fn(*const c_void, usize) -> *mut TfModel,
    model_delete: unsafe extern "C" fn(*mut TfModel),
    options_create: unsafe extern "C" fn() -> *mut TfOptions,
    options_delete: unsafe extern "C" fn(*mut TfOptions),
    options_threads: unsafe extern "C" fn(*mut TfOptions, i32),
    options_delegate: unsafe extern "C" fn(*mut TfOptions, *mut TfDelegate),
    options_reporter: unsafe extern "C" fn(*mut TfOptions, Reporter, *mut c_void),
    create: unsafe extern "C" fn(*const TfModel, *const TfOptions) -> *mut TfInterpreter,
    delete: unsafe extern "C" fn(*mut TfInterpreter),
    allocate: unsafe extern "C" fn(*mut TfInterpreter) -> c_int,
    invoke: unsafe extern "C" fn(*mut TfInterpreter) -> c_int,
    input_count: unsafe extern "C" fn(*const TfInterpreter) -> i32,
    input: unsafe extern "C" fn(*const TfInterpreter, i32) -> *mut TfTensor,
    output_count: unsafe extern "C" fn(*const TfInterpreter) -> i32,
    output: unsafe extern "C" fn(*const TfInterpreter, i32) -> *const TfTensor,
    signature_count: unsafe extern "C" fn(*const TfInterpreter) -> i32,
    signature_key: unsafe extern "C" fn(*const TfInterpreter, i32) -> *const c_char,
    runner: unsafe extern "C" fn(*const TfInterpreter, *const c_char) -> *mut TfRunner,
    runner_delete: unsafe extern "C" fn(*mut TfRunner),
    runner_allocate: unsafe extern "C" fn(*mut TfRunner) -> c_int,
    runner_invoke: unsafe extern "C" fn(*mut TfRunner) -> c_int,
    runner_input_count: unsafe extern "C" fn(*const TfRunner) -> usize,
    runner_input_name: unsafe extern "C" fn(*const TfRunner, i32) -> *const c_char,
    runner_input: unsafe extern "C" fn(*mut TfRunner, *const c_char) -> *mut TfTensor,
    runner_output_count: unsafe extern "C" fn(*const TfRunner) -> usize,
    runner_output_name: unsafe extern "C" fn(*const TfRunner, i32) -> *const c_char,
    runner_output: unsafe extern "C" fn(*const TfRunner, *const c_char) -> *const TfTensor,
    tensor_type: unsafe extern "C" fn(*const TfTensor) -> c_int,
    tensor_rank: unsafe extern "C" fn(*const TfTensor) -> i32,
    tensor_dim: unsafe extern "C" fn(*const TfTensor, i32) -> i32,
    tensor_bytes: unsafe extern "C" fn(*const TfTensor) -> usize,
    tensor_name: unsafe extern "C" fn(*const TfTensor) -> *const c_char,
    tensor_quantization: unsafe extern "C" fn(*const TfTensor) -> Quantization,
    tensor_write: unsafe extern "C" fn(*mut TfTensor, *const c_void, usize) -> c_int,
    tensor_read: unsafe extern "C" fn(*const TfTensor, *mut c_void, usize) -> c_int,
    xnnpack_defaults: unsafe extern "C" fn() -> XnnpackOptions,
    xnnpack_create: unsafe extern "C" fn(*const XnnpackOptions) -> *mut TfDelegate,
    xnnpack_delete: unsafe extern "C" fn(*mut TfDelegate),
}

impl Api {
    /// # Safety
    /// `path` must be a TensorFlow Lite C library: its symbols are called
    /// with the C API's signatures.
    unsafe fn open(path: &Path) -> Result<Api, String> {
        // SAFETY: loading runs the library's initialisers; a TFLite C library has no unusual ones.
        let lib = unsafe { Library::new(path) }.map_err(|e| e.to_string())?;
        macro_rules! f {
            ($name:literal) => {
                // SAFETY: the symbol is the C API's, with the signature of the field it fills.
                *unsafe { lib.get(concat!($name, "\0").as_bytes()) }.map_err(|e| {
                    format!("{} is not a TensorFlow Lite C library: {e}", path.display())
                })?
            };
        }
        Ok(Api {
            path: path.to_path_buf(),
            model_create: f!("TfLiteModelCreate"),
            model_delete: f!("TfLiteModelDelete"),
            options_create: f!("TfLiteInterpreterOptionsCreate"),
            options_delete: f!("TfLiteInterpreterOptionsDelete"),
            options_threads: f!("TfLiteInterpreterOptionsSetNumThreads"),
            options_delegate: f!("TfLiteInterpreterOptionsAddDelegate"),
            options_reporter: f!("TfLiteInterpreterOptionsSetErrorReporter"),
            create: f!("TfLiteInterpreterCreate"),
            delete: f!("TfLiteInterpreterDelete"),
            allocate: f!("TfLiteInterpreterAllocateTensors"),
            invoke: f!("TfLiteInterpreterInvoke"),
            input_count: f!("TfLiteInterpreterGetInputTensorCount"),
            input: f!("TfLiteInterpreterGetInputTensor"),
            output_count: f!("TfLiteInterpreterGetOutputTensorCount"),
            output: f!("TfLiteInterpreterGetOutputTensor"),
            signature_count: f!("TfLiteInterpreterGetSignatureCount"),
            signature_key: f!("TfLiteInterpreterGetSignatureKey"),
            runner: f!("TfLiteInterpreterGetSignatureRunner"),
            runner_delete: f!("TfLiteSignatureRunnerDelete"),
            runner_allocate: f!("TfLiteSignatureRunnerAllocateTensors"),
            runner_invoke: f!("TfLiteSignatureRunnerInvoke"),
            runner_input_count: f!("TfLiteSignatureRunnerGetInputCount"),
            runner_input_name: f!("TfLiteSignatureRunnerGetInputName"),
            runner_input: f!("TfLiteSignatureRunnerGetInputTensor"),
            runner_output_count: f!("TfLiteSignatureRunnerGetOutputCount"),
            runner_output_name: f!("TfLiteSignatureRunnerGetOutputName"),
            runner_output: f!("TfLiteSignatureRunnerGetOutputTensor"),
            tensor_type: f!("TfLiteTensorType"),
            tensor_rank: f!("TfLiteTensorNumDims"),
            tensor_dim: f!("TfLiteTensorDim"),
            tensor_bytes: f!("TfLiteTensorByteSize"),
            tensor_name: f!("TfLiteTensorName"),
            tensor_quantization: f!("TfLiteTensorQuantizationParams"),
            tensor_write: f!("TfLiteTensorCopyFromBuffer"),
            tensor_read: f!("TfLiteTensorCopyToBuffer"),
            xnnpack_defaults: f!("TfLiteXNNPackDelegateOptionsDefault"),
            xnnpack_create: f!("TfLiteXNNPackDelegateCreate"),
            xnnpack_delete: f!("TfLiteXNNPackDelegateDelete"),
            _lib: lib,
        })
    }
}

/// The process's TFLite library: loaded once, kept for the process's life.
static API: Mutex<Option<&'static Api>> = Mutex::new(None);

fn api(library: Option<&Path>) -> Result<&'static Api, NnError> {
    let mut slot = API.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(api) = *slot {
        return match library {
            Some(want) if want != api.path => Err(NnError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "TensorFlow Lite is already loaded from {}; a process loads one library, not also {}",
                    api.path.display(),
                    want.display()
                ),
            )),
            _ => Ok(api),
        };
    }
    let mut tried = Vec::new();
    for candidate in library_candidates(library) {
        // SAFETY: a file named as the TFLite C library; `open` resolves every
        // symbol before any is called, and refuses a library that lacks one.
        match unsafe { Api::open(&candidate) } {
            Ok(api) => {
                let api: &'static Api = Box::leak(Box::new(api));
                *slot = Some(api);
                return Ok(api);
            }
            Err(e) => tried.push(format!("{}: {e}", candidate.display())),
        }
    }
    Err(NnError::new(
        ErrorCode::NotFound,
        format!(
            "no TensorFlow Lite library could be loaded ({}); set `library` under [tensorflowlite] (or ${LIBRARY_VAR}) to a libtensorflowlite_c of TensorFlow Lite 2.17 or newer",
            tried.join("; ")
        ),
    ))
}

unsafe extern "C" {
    // The C library's, through a `va_list` the reporter was handed (a pointer
    // at the ABI level on x86_64 and aarch64 Linux alike).
    fn vsnprintf(buf: *mut c_char, size: usize, format: *const c_char, args: *mut c_void) -> c_int;
}

/// TFLite's error reporter: appends each message to the `Mutex<String>` the
/// interpreter was created with, so errors carry the library's own words.
unsafe extern "C" fn report(user: *mut c_void, format: *const c_char, args: *mut c_void) {
    let mut buf = [0 as c_char; 1024];
    // SAFETY: `format` and `args` are the reporter's arguments as TFLite passes them.
    let n = unsafe { vsnprintf(buf.as_mut_ptr(), buf.len(), format, args) };
    if n < 0 || user.is_null() {
        return;
    }
    // SAFETY: vsnprintf wrote a NUL-terminated string into `buf`.
    let text = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
    // SAFETY: `user` is the `Messages` the interpreter's options were given; it outlives the interpreter.
    let messages = unsafe { &*(user as *const Messages) };
    let mut m = messages.0.lock().unwrap_or_else(|p| p.into_inner());
    if m.len() < 4096 {
        if !m.is_empty() {
            m.push_str("; ");
        }
        // One line: TFLite's messages run over several.
        m.push_str(&text.split_whitespace().collect::<Vec<_>>().join(" "));
    }
}

#[derive(Default)]
struct Messages(Mutex<String>);

impl Messages {
    fn take(&self) -> String {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A `TfLiteModel` over bytes the model keeps alive (the C API does not copy them).
struct SharedModel {
    api: &'static Api,
    ptr: *mut TfModel,
    _bytes: Box<[u8]>,
}

// SAFETY: a TfLiteModel is immutable once built and may be shared by
// interpreters on any thread (the C API's documented use).
unsafe impl Send for SharedModel {}
unsafe impl Sync for SharedModel {}

impl Drop for SharedModel {
    fn drop(&mut self) {
        // SAFETY: made by TfLiteModelCreate; every interpreter over it is gone (they borrow `self`).
        unsafe { (self.api.model_delete)(self.ptr) }
    }
}

/// One interpreter, its delegate, and its ports in signature order.
struct Interpreter {
    api: &'static Api,
    ptr: *mut TfInterpreter,
    runner: *mut TfRunner,
    delegate: *mut TfDelegate,
    inputs: Vec<*mut TfTensor>,
    outputs: Vec<*const TfTensor>,
    /// The signature's names of `inputs` and `outputs` (none without one).
    input_names: Vec<String>,
    output_names: Vec<String>,
    messages: Box<Messages>,
}

/// Sorts `a` by `key`, and `b` alongside it.
fn sort_together<T: Copy>(a: &mut [T], b: &mut [String], key: impl Fn(&T) -> usize) {
    let mut pairs: Vec<(T, String)> = a.iter().copied().zip(b.iter().cloned()).collect();
    pairs.sort_by_key(|(t, _)| key(t));
    for (i, (t, n)) in pairs.into_iter().enumerate() {
        a[i] = t;
        b[i] = n;
    }
}

// SAFETY: an interpreter is used by one thread at a time (the pool hands it
// out under a lock) and has no thread affinity.
unsafe impl Send for Interpreter {}

impl Drop for Interpreter {
    fn drop(&mut self) {
        // SAFETY: each pointer was made by the C API and is deleted once, the
        // runner before its interpreter, the delegate after it.
        unsafe {
            if !self.runner.is_null() {
                (self.api.runner_delete)(self.runner);
            }
            if !self.ptr.is_null() {
                (self.api.delete)(self.ptr);
            }
            if !self.delegate.is_null() {
                (self.api.xnnpack_delete)(self.delegate);
            }
        }
    }
}

fn c_text(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the C API returns NUL-terminated names that live as long as the interpreter.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// A tensor's dimensions as they are now.
///
/// # Safety
/// `t` is a live tensor of `api`'s library.
unsafe fn dims_of(api: &Api, t: *const TfTensor) -> Vec<u32> {
    // SAFETY: the caller's.
    let rank = unsafe { (api.tensor_rank)(t) }.max(0);
    (0..rank)
        // SAFETY: i < rank.
        .map(|i| unsafe { (api.tensor_dim)(t, i) }.max(0) as u32)
        .collect()
}

/// TFLite's `TfLiteType` as verge's datum.
fn datum_of(t: c_int) -> Datum {
    match t {
        1 => Datum::F32,
        2 => Datum::I32,
        3 => Datum::U8,
        4 => Datum::I64,
        5 => Datum::String,
        6 => Datum::Bool,
        7 => Datum::I16,
        8 => Datum::Complex64,
        9 => Datum::I8,
        10 => Datum::F16,
        11 => Datum::F64,
        12 => Datum::Complex128,
        13 => Datum::U64,
        14 | 15 => Datum::NotATensor,
        16 => Datum::U32,
        17 => Datum::U16,
        19 => Datum::Bf16,
        _ => Datum::Other,
    }
}

pub struct TfliteModel {
    // Fields drop in this order: the interpreters before the model whose
    // bytes they read.
    idle: Mutex<Vec<Interpreter>>,
    threads: usize,
    xnnpack: bool,
    signature: Signature,
    shared: SharedModel,
}

impl TfliteModel {
    fn new_interpreter(&self) -> Result<Interpreter, NnError> {
        let api = self.shared.api;
        let messages = Box::new(Messages::default());
        let fail = |code, what: &str, messages: &Messages| {
            let said = messages.take();
            let detail = if said.is_empty() {
                String::new()
            } else {
                format!(": {said}")
            };
            NnError::new(code, format!("{what}{detail}"))
        };
        // SAFETY: plain C API calls on pointers it made; `messages` and the
        // delegate outlive the interpreter (both are dropped after it).
        unsafe {
            let options = (api.options_create)();
            if options.is_null() {
                return Err(fail(
                    ErrorCode::RuntimeError,
                    "could not create interpreter options",
                    &messages,
                ));
            }
            let threads = i32::try_from(self.threads).unwrap_or(i32::MAX);
            (api.options_threads)(options, if threads == 0 { -1 } else { threads });
            (api.options_reporter)(
                options,
                report,
                &*messages as *const Messages as *mut c_void,
            );
            let mut delegate = std::ptr::null_mut();
            if self.xnnpack {
                let mut o = (api.xnnpack_defaults)();
                // num_threads, the first field: 0 or 1 runs on the calling thread.
                o.0[..4].copy_from_slice(&threads.max(1).to_ne_bytes());
                delegate = (api.xnnpack_create)(&o);
                if !delegate.is_null() {
                    (api.options_delegate)(options, delegate);
                }
            }
            let ptr = (api.create)(self.shared.ptr, options);
            (api.options_delete)(options);
            let mut interpreter = Interpreter {
                api,
                ptr,
                runner: std::ptr::null_mut(),
                delegate,
                inputs: Vec::new(),
                outputs: Vec::new(),
                input_names: Vec::new(),
                output_names: Vec::new(),
                messages,
            };
            if ptr.is_null() {
                // Dropping it deletes the delegate; there is no interpreter.
                return Err(fail(
                    ErrorCode::UnsupportedOperation,
                    "the model cannot be prepared",
                    &interpreter.messages,
                ));
            }
            interpreter.bind()?;
            Ok(interpreter)
        }
    }
}

impl Interpreter {
    fn error(&self, code: ErrorCode, what: &str) -> NnError {
        let said = self.messages.take();
        if said.is_empty() {
            NnError::new(code, what.to_string())
        } else {
            NnError::new(code, format!("{what}: {said}"))
        }
    }

    /// Allocates tensors and finds the ports: the signature's where the
    /// model has one (`serving_default`, else the first), else the subgraph's.
    ///
    /// # Safety
    /// `self.ptr` is a live interpreter.
    unsafe fn bind(&mut self) -> Result<(), NnError> {
        let api = self.api;
        // SAFETY: calls on the live interpreter and the runner it hands out.
        unsafe {
            let count = (api.signature_count)(self.ptr);
            if count > 0 {
                let keys: Vec<String> = (0..count)
                    .map(|i| c_text((api.signature_key)(self.ptr, i)))
                    .collect();
                let key = keys
                    .iter()
                    .find(|k| *k == "serving_default")
                    .unwrap_or(&keys[0]);
                let key = CString::new(key.as_str()).unwrap_or_default();
                self.runner = (api.runner)(self.ptr, key.as_ptr());
            }
            if self.runner.is_null() {
                if (api.allocate)(self.ptr) != 0 {
                    return Err(
                        self.error(ErrorCode::UnsupportedOperation, "allocating tensors failed")
                    );
                }
                self.inputs = (0..(api.input_count)(self.ptr))
                    .map(|i| (api.input)(self.ptr, i))
                    .collect();
                self.outputs = (0..(api.output_count)(self.ptr))
                    .map(|i| (api.output)(self.ptr, i))
                    .collect();
            } else {
                if (api.runner_allocate)(self.runner) != 0 {
                    return Err(
                        self.error(ErrorCode::UnsupportedOperation, "allocating tensors failed")
                    );
                }
                let n = (api.runner_input_count)(self.runner) as i32;
                for i in 0..n {
                    let name = (api.runner_input_name)(self.runner, i);
                    self.inputs.push((api.runner_input)(self.runner, name));
                    self.input_names.push(c_text(name));
                }
                let n = (api.runner_output_count)(self.runner) as i32;
                for i in 0..n {
                    let name = (api.runner_output_name)(self.runner, i);
                    self.outputs.push((api.runner_output)(self.runner, name));
                    self.output_names.push(c_text(name));
                }
                // The runner lists its names sorted; the model's order is its
                // subgraph's, where the signature's tensors are found there.
                let order = |count: i32, get: &dyn Fn(i32) -> *const TfTensor| {
                    let model: Vec<*const TfTensor> = (0..count).map(get).collect();
                    move |t: &*const TfTensor| {
                        model.iter().position(|m| m == t).unwrap_or(usize::MAX)
                    }
                };
                let ptr = self.ptr;
                let key = order((api.input_count)(ptr), &|i| {
                    (api.input)(ptr, i).cast_const()
                });
                sort_together(&mut self.inputs, &mut self.input_names, |t| {
                    key(&t.cast_const())
                });
                let key = order((api.output_count)(ptr), &|i| (api.output)(ptr, i));
                sort_together(&mut self.outputs, &mut self.output_names, |t| key(t));
            }
        }
        if self.inputs.iter().any(|p| p.is_null()) || self.outputs.iter().any(|p| p.is_null()) {
            return Err(self.error(
                ErrorCode::InvalidEncoding,
                "the model names a tensor it does not have",
            ));
        }
        Ok(())
    }

    /// The ports as the model declares them; with a signature, by its names.
    fn signature(&self) -> Signature {
        let api = self.api;
        let name = |i: usize, input: bool, t: *const TfTensor| {
            let names = if input {
                &self.input_names
            } else {
                &self.output_names
            };
            match names.get(i) {
                Some(n) => n.clone(),
                // SAFETY: a live tensor of this interpreter.
                None => c_text(unsafe { (api.tensor_name)(t) }),
            }
        };
        let port = |n: String, t: *const TfTensor| {
            // SAFETY: a live tensor of this interpreter.
            let ty = unsafe { (api.tensor_type)(t) };
            // SAFETY: as above.
            let dims = unsafe { dims_of(api, t) };
            let dims = dims.into_iter().map(|d| Dim::Fixed(d.into())).collect();
            Port::new(n, datum_of(ty), Some(dims))
        };
        Signature {
            inputs: self
                .inputs
                .iter()
                .enumerate()
                .map(|(i, &t)| port(name(i, true, t), t))
                .collect(),
            outputs: self
                .outputs
                .iter()
                .enumerate()
                .map(|(i, &t)| port(name(i, false, t), t))
                .collect(),
        }
    }

    fn run(&mut self, inputs: &[Tensor], signature: &Signature) -> Result<Vec<RawTensor>, NnError> {
        let api = self.api;
        // What the library said during earlier calls is not this call's.
        self.messages.take();
        for ((t, &port), p) in inputs.iter().zip(&self.inputs).zip(&signature.inputs) {
            // SAFETY: a live input tensor; the byte count is checked against its size.
            let size = unsafe { (api.tensor_bytes)(port) };
            if size != t.data.len() {
                return Err(NnError::invalid(format!(
                    "input '{}' is {} bytes; the model's tensor is {size}",
                    p.name,
                    t.data.len()
                )));
            }
            // SAFETY: as above.
            if unsafe { (api.tensor_write)(port, t.data.as_ptr().cast(), size) } != 0 {
                return Err(self.error(
                    ErrorCode::RuntimeError,
                    &format!("writing input '{}'", p.name),
                ));
            }
        }
        // SAFETY: a live interpreter (or its runner) with every input written.
        let status = unsafe {
            if self.runner.is_null() {
                (api.invoke)(self.ptr)
            } else {
                (api.runner_invoke)(self.runner)
            }
        };
        if status != 0 {
            return Err(self.error(ErrorCode::RuntimeError, "inference failed"));
        }
        self.outputs
            .iter()
            .zip(&signature.outputs)
            .map(|(&t, p)| {
                // SAFETY: a live output tensor, read into a buffer of its own size.
                let size = unsafe { (api.tensor_bytes)(t) };
                let mut data = vec![0u8; size];
                if unsafe { (api.tensor_read)(t, data.as_mut_ptr().cast(), size) } != 0 {
                    return Err(self.error(
                        ErrorCode::RuntimeError,
                        &format!("reading output '{}'", p.name),
                    ));
                }
                // SAFETY: as above.
                let dims = unsafe { dims_of(api, t) };
                Ok(RawTensor::new(dims, p.datum, data))
            })
            .collect()
    }
}

impl Model for TfliteModel {
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<RawTensor>, NnError> {
        let taken = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut interpreter = match taken {
            Some(i) => i,
            None => self.new_interpreter()?,
        };
        let result = interpreter.run(&inputs, &self.signature);
        // A failed call may leave the interpreter mid-way: only a good one goes back.
        if result.is_ok() {
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(interpreter);
        }
        result
    }
}

/// The engine, for one model's settings.
pub struct Tensorflowlite {
    pub spec: TfliteSpec,
    pub threads: usize,
}

impl verge_nn::Engine for Tensorflowlite {
    fn name(&self) -> &str {
        "tensorflowlite"
    }

    fn load(&self, bytes: &[u8]) -> Result<Box<dyn Model>, NnError> {
        let api = api(self.spec.library.as_deref())?;
        if !verge_nn::EngineKind::runs_tflite(bytes) {
            return Err(NnError::new(
                ErrorCode::InvalidEncoding,
                "not a TensorFlow Lite model (no TFL3 file identifier)",
            ));
        }
        let bytes: Box<[u8]> = bytes.into();
        // SAFETY: the bytes are kept alive by the model; the C API verifies
        // the flatbuffer before it reads it.
        let ptr = unsafe { (api.model_create)(bytes.as_ptr().cast(), bytes.len()) };
        if ptr.is_null() {
            return Err(NnError::new(
                ErrorCode::InvalidEncoding,
                "the TensorFlow Lite flatbuffer does not verify (corrupt or truncated)",
            ));
        }
        let mut model = TfliteModel {
            shared: SharedModel {
                api,
                ptr,
                _bytes: bytes,
            },
            threads: self.threads,
            xnnpack: self.spec.xnnpack,
            signature: Signature::default(),
            idle: Mutex::new(Vec::new()),
        };
        let first = model.new_interpreter()?;
        model.signature = first.signature();
        refuse_quantized_int8(&first, &model.signature)?;
        model
            .idle
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .push(first);
        Ok(Box::new(model))
    }
}

/// An int8 tensor is a quantized one: its integers are not its values (they
/// need the scale and zero point), and `wasi:nn` has no int8 to hand them over
/// as they are. Inputs are refused by verge-nn for every engine; outputs here,
/// rather than widened to i32 as an ONNX int8 output is.
fn refuse_quantized_int8(first: &Interpreter, signature: &Signature) -> Result<(), NnError> {
    for (&t, p) in first.outputs.iter().zip(&signature.outputs) {
        if p.datum == Datum::I8 {
            // SAFETY: a live output tensor.
            let q = unsafe { (first.api.tensor_quantization)(t) };
            return Err(NnError::unsupported(format!(
                "output {p} is int8, quantized (scale {}, zero point {}): wasi:nn has no int8; convert the model with float32 or uint8 outputs",
                q.scale, q.zero_point
            )));
        }
    }
    Ok(())
}
