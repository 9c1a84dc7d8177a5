//! `wasi:nn` as every verge host presents it, written once.
//!
//! This crate knows no engine, no Wasm runtime and no file format. It holds
//! what a component can observe through `wasi:nn`: element types, tensors, a
//! model's signature, every check on what a component hands in (names and
//! indices, element types, dimensions against the signature, byte lengths,
//! inputs not set), the widening of outputs `wasi:nn` cannot carry as they
//! are, the error codes with one wording, and the policy (models come by name
//! from the deployment; bytes from a component are refused).
//!
//! An engine implements two things (see [`Engine`] and [`Model`]): load bytes
//! into a [`Signature`], and run tensors that have already passed every check.
//! The device host's wasmtime glue, the provider component's glue and the
//! engines (tract natively and in Wasm, ONNX Runtime, the compact engine) all
//! sit on this crate, so the same mistake gives the same code and message
//! everywhere.

#[cfg(not(target_arch = "wasm32"))]
pub mod batch;
mod check;
mod kind;
mod signature;
mod tensor;

use std::fmt;
use std::sync::Arc;

pub use check::Context;
pub use kind::EngineKind;
pub use signature::{Dim, Port, Signature};
pub use tensor::{Datum, ElementType, RawTensor, Tensor};

/// The `wasi:nn` error codes (`wasi:nn/errors.error-code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidArgument,
    InvalidEncoding,
    Timeout,
    RuntimeError,
    UnsupportedOperation,
    TooLarge,
    NotFound,
    Security,
    Unknown,
}

impl ErrorCode {
    /// The code as WIT spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid-argument",
            ErrorCode::InvalidEncoding => "invalid-encoding",
            ErrorCode::Timeout => "timeout",
            ErrorCode::RuntimeError => "runtime-error",
            ErrorCode::UnsupportedOperation => "unsupported-operation",
            ErrorCode::TooLarge => "too-large",
            ErrorCode::NotFound => "not-found",
            ErrorCode::Security => "security",
            ErrorCode::Unknown => "unknown",
        }
    }

    /// The inverse of [`ErrorCode::as_str`].
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub const ALL: [ErrorCode; 9] = [
        ErrorCode::InvalidArgument,
        ErrorCode::InvalidEncoding,
        ErrorCode::Timeout,
        ErrorCode::RuntimeError,
        ErrorCode::UnsupportedOperation,
        ErrorCode::TooLarge,
        ErrorCode::NotFound,
        ErrorCode::Security,
        ErrorCode::Unknown,
    ];
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `wasi:nn` error: its code, a message worded by this crate (the same on
/// every engine and host), and, where an engine refused something in its own
/// words, that detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {}", self.data())]
pub struct NnError {
    pub code: ErrorCode,
    pub message: String,
    /// The engine's own words, when the failure is the engine's.
    pub detail: Option<String>,
}

impl NnError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        NnError {
            code,
            message: message.into(),
            detail: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::UnsupportedOperation, message)
    }

    pub fn runtime(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::RuntimeError, message)
    }

    /// The same error with the engine's own words attached.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// What `wasi:nn/errors.error.data` returns: the message, then the
    /// engine's detail after ": " when there is one.
    pub fn data(&self) -> String {
        match &self.detail {
            Some(d) => format!("{}: {d}", self.message),
            None => self.message.clone(),
        }
    }
}

pub type Result<T, E = NnError> = std::result::Result<T, E>;

/// Identifies an input or output: by name (the WIT API) or by index (WITX).
#[derive(Debug, Clone, Copy)]
pub enum Id<'a> {
    Index(u32),
    Name(&'a str),
}

impl fmt::Display for Id<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Index(i) => write!(f, "at index {i}"),
            Id::Name(n) => write!(f, "named '{n}'"),
        }
    }
}

/// A model loaded by an engine: what it declares, and how to run it.
pub trait Model: Send + Sync {
    /// The inputs and outputs, in the model's order.
    fn signature(&self) -> &Signature;

    /// Runs the model. `inputs` are in signature order and each has passed
    /// [`Context`]'s checks (element type, dimensions against the port, byte
    /// length). Returns the outputs in signature order, in whatever element
    /// type the engine computed them; the core widens what `wasi:nn` cannot
    /// carry as is.
    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<RawTensor>>;

    /// What batching did, for a model whose calls are batched.
    #[cfg(not(target_arch = "wasm32"))]
    fn batch_stats(&self) -> Option<batch::BatchStats> {
        None
    }
}

/// An engine: turns model bytes into a [`Model`].
pub trait Engine: Send + Sync {
    /// A short name for messages and metrics (`tract`, `onnxruntime`, …).
    fn name(&self) -> &str;

    /// Parses and prepares a model. A failure carries the engine's own words
    /// in its message; [`Graph::load`] words the error the same for every engine.
    fn load(&self, bytes: &[u8]) -> Result<Box<dyn Model>>;
}

struct Loaded {
    name: String,
    engine: String,
    model: Box<dyn Model>,
}

/// A model loaded under a name, shared by every execution context on it
/// (cloning is cheap).
#[derive(Clone)]
pub struct Graph(Arc<Loaded>);

impl fmt::Debug for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Graph")
            .field("name", &self.0.name)
            .field("engine", &self.0.engine)
            .field("signature", &self.signature().to_string())
            .finish()
    }
}

impl Graph {
    /// Loads `bytes` under `name` with `engine`, and refuses a model whose
    /// inputs or outputs `wasi:nn` cannot carry, at load rather than at
    /// every call.
    pub fn load(name: &str, engine: &dyn Engine, bytes: &[u8]) -> Result<Graph> {
        if bytes.is_empty() {
            return Err(NnError::new(
                ErrorCode::InvalidEncoding,
                format!("model '{name}' cannot be loaded: the file is empty"),
            ));
        }
        let model = engine
            .load(bytes)
            .map_err(|e| load_failed(name, engine.name(), e))?;
        Graph::new(name, engine.name(), model)
    }

    /// A model an engine loaded by other means (by name, outside this
    /// process), checked as [`Graph::load`] checks it.
    pub fn new(name: &str, engine: &str, model: Box<dyn Model>) -> Result<Graph> {
        model
            .signature()
            .check_carried()
            .map_err(|e| NnError::unsupported(format!("model '{name}': {e}")))?;
        Ok(Graph(Arc::new(Loaded {
            name: name.to_string(),
            engine: engine.to_string(),
            model,
        })))
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The engine that loaded it.
    pub fn engine(&self) -> &str {
        &self.0.engine
    }

    pub fn signature(&self) -> &Signature {
        self.0.model.signature()
    }

    /// A new execution context (`graph.init-execution-context`).
    pub fn context(&self) -> Context {
        Context::new(self.clone())
    }

    /// What batching did, if this model's calls are batched.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn batch_stats(&self) -> Option<batch::BatchStats> {
        self.model().batch_stats()
    }

    fn model(&self) -> &dyn Model {
        self.0.model.as_ref()
    }
}

/// What a caught panic said (engines catch their libraries' panics on broken
/// models and inputs, so a model error never takes a host down).
pub fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// An engine's refusal to load a model, worded the same for every engine:
/// the engine's own words become the detail.
pub fn load_failed(name: &str, engine: &str, e: NnError) -> NnError {
    NnError {
        code: e.code,
        message: format!("model '{name}' cannot be loaded"),
        detail: Some(format!("{engine}: {}", e.data())),
    }
}

/// The policy every host applies.
pub mod policy {
    use super::{ErrorCode, NnError};

    /// `graph.load` with bytes from the component: refused on every host.
    /// Models come from the deployment, by name, and never cross the
    /// component boundary.
    pub fn guest_bytes_refused() -> NnError {
        NnError::new(
            ErrorCode::Security,
            "graph.load is refused: this host loads the models its deployment names (graph.load-by-name), never model bytes from a component",
        )
    }

    /// `graph.load-by-name` for a name the deployment does not have.
    pub fn not_deployed(name: &str) -> NnError {
        NnError::new(
            ErrorCode::NotFound,
            format!("no model named '{name}' is deployed"),
        )
    }
}

#[cfg(test)]
mod tests;
