//! `file-type`: Google's Magika model as a verge component.
//!
//! The Magika logic lives in [`magika`] (plain Rust, also built natively for
//! benchmarks); `component` binds it to `wit/` when built for wasm32-wasip2.

pub mod magika;

#[cfg(target_arch = "wasm32")]
mod component;
