//! What the targets share: reading choices from the fuzzer's bytes, engines
//! as the device host configures them, and inputs that fit a signature.
#![allow(dead_code)]

use std::path::PathBuf;

use verge_device::nn::{Backend, EngineSpec, Graph, Graphs, ModelSpec, Tensor};
use verge_nn::{Dim, Signature};

/// libfuzzer-sys aborts at any panic, even one the host catches (tract's,
/// turned into errors): the default hook instead, so that only a panic that
/// escapes to the target is a crash (libfuzzer-sys still aborts on those).
pub fn host_catches_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| drop(std::panic::take_hook()));
}

/// Choices taken from the front of the input; zeros once it runs out.
pub struct Bytes<'a>(pub &'a [u8]);

impl<'a> Bytes<'a> {
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
}

/// The `libonnxruntime` to load (`VERGE_ONNXRUNTIME_LIB`, as `./dev` sets it).
pub fn onnxruntime_library() -> PathBuf {
    std::env::var_os("VERGE_ONNXRUNTIME_LIB")
        .map(PathBuf::from)
        .expect("VERGE_ONNXRUNTIME_LIB must name the libonnxruntime to load")
}

pub fn spec(backend: Backend) -> ModelSpec {
    let mut spec = ModelSpec::tract("fuzzed", "fuzzed.onnx");
    spec.engine = EngineSpec {
        backend,
        library: (backend == Backend::Onnxruntime).then(onnxruntime_library),
        ..EngineSpec::default()
    };
    spec
}

/// Loads model bytes exactly as the daemon does (`Graphs::load_bytes`).
pub fn load(backend: Backend, bytes: &[u8]) -> Result<Graph, String> {
    let graphs =
        Graphs::load_bytes(vec![(spec(backend), bytes.to_vec())]).map_err(|e| e.to_string())?;
    Ok(graphs
        .get("fuzzed")
        .expect("a loaded model is there by its name")
        .clone())
}

/// A file from `VERGE_NN_SUITE_MODELS` (the behaviour suite's small models).
pub fn suite_model(name: &str) -> Vec<u8> {
    let dir = std::env::var_os("VERGE_NN_SUITE_MODELS")
        .map(PathBuf::from)
        .expect("VERGE_NN_SUITE_MODELS must name the nn-suite models");
    let path = dir.join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Zero-filled inputs that fit the signature (symbols and unknown
/// dimensions 1), or `None` when they would be large.
pub fn zero_inputs(sig: &Signature, max_elements: u64) -> Option<Vec<(String, Tensor)>> {
    let mut total = 0u64;
    let mut v = Vec::new();
    for port in &sig.inputs {
        let ty = port.datum.carried()?;
        let dims: Vec<u32> = match &port.dims {
            Some(dims) => dims
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => u32::try_from(*n).ok(),
                    Dim::Symbol(_) | Dim::Any => Some(1),
                })
                .collect::<Option<_>>()?,
            None => vec![1],
        };
        let n = dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(u64::from(d)))?;
        total = total.checked_add(n)?;
        if total > max_elements {
            return None;
        }
        v.push((
            port.name.clone(),
            Tensor::new(dims, ty, vec![0; n as usize * ty.size()]),
        ));
    }
    Some(v)
}
