//! Mutated ONNX model files loaded by ONNX Runtime (the `libonnxruntime` of
//! `VERGE_ONNXRUNTIME_LIB`) as the device host loads them
//! (`Graphs::load_bytes`), then, when they load, run once on zeros. Any
//! outcome but a panic, an abort or a hang is fine: an error is the answer a
//! broken model must get.
#![no_main]

#[path = "common.rs"]
mod common;

use verge_device::nn::Backend;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    common::host_catches_panics();
    let Ok(graph) = common::load(Backend::Onnxruntime, data) else {
        return;
    };
    if let Some(inputs) = common::zero_inputs(graph.signature(), 1 << 12) {
        let _ = graph.context().compute_named(inputs);
    }
});
