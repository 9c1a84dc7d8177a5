//! `file-type`: Google's Magika model as a verge component. The Magika logic
//! lives in the `magika` crate (plain Rust, also built natively for
//! benchmarks); this crate binds it to `wit/`.

#![cfg(target_arch = "wasm32")]

mod component;
