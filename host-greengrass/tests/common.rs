//! Where the tests find the built components and the fetched models: see
//! [`verge_device::testkit`].

#![allow(dead_code)]

use std::path::PathBuf;

pub use verge_device::testkit::wasm;

/// Magika's model, extracted by `models/fetch.py`.
pub fn magika() -> PathBuf {
    verge_device::testkit::model(
        "magika-standard-v3-3",
        "model.onnx",
        "python3 models/fetch.py",
    )
}
