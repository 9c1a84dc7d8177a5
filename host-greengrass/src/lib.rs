//! verge-device: the native device host.
//!
//! * [`nn`]: `wasi:nn` on tract through wasmtime-wasi-nn, and the named-graph registry;
//! * [`runtime`]: the engine, per-call stores with memory and deadline bounds;
//! * [`report`]: outcomes and errors as JSON.

pub mod nn;
pub mod report;
pub mod runtime;
