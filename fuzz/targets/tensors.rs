//! The tensor checks of `verge-nn`, as both engines of the device host meet
//! them: random dimensions, element types and bytes set on real small models
//! (the behaviour suite's: two inputs sharing a symbol, every element type,
//! an unnamed dimension), loaded once by tract and once by ONNX Runtime, and
//! computed. Checked: both engines give the same answer to every step (the
//! checks are one crate's), an accepted input fits its port, and a compute
//! both engines accept gives the same outputs.
#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::OnceLock;

use common::Bytes;
use verge_device::nn::{Backend, ElementType, Graph, Id, Tensor};
use verge_nn::{Context, Dim, Port};

const MODELS: [&str; 3] = ["add.onnx", "types.onnx", "unnamed.onnx"];

fn graphs() -> &'static Vec<(Graph, Graph)> {
    static GRAPHS: OnceLock<Vec<(Graph, Graph)>> = OnceLock::new();
    GRAPHS.get_or_init(|| {
        MODELS
            .iter()
            .map(|name| {
                let bytes = common::suite_model(name);
                let tract =
                    common::load(Backend::Tract, &bytes).expect("tract loads the suite model");
                let ort = common::load(Backend::Onnxruntime, &bytes)
                    .expect("onnxruntime loads the suite model");
                (tract, ort)
            })
            .collect()
    })
}

fn tensor(b: &mut Bytes) -> Tensor {
    let rank = b.u8() % 5;
    let dims: Vec<u32> = (0..rank)
        .map(|_| match b.u8() {
            x if x < 250 => u32::from(x % 5),
            _ => b.u32(),
        })
        .collect();
    let ty = ElementType::ALL[usize::from(b.u8()) % ElementType::ALL.len()];
    let needed = dims
        .iter()
        .try_fold(ty.size(), |n, &d| n.checked_mul(d as usize))
        .filter(|&n| n <= 4096);
    let len = match (b.u8(), needed) {
        (m, Some(n)) if m < 200 => n,
        (m, Some(n)) if m < 220 => n.saturating_sub(1),
        (m, Some(n)) if m < 240 => n + 1,
        (m, _) => usize::from(m),
    };
    let mut data = b.take(len).to_vec();
    data.resize(len, 0);
    // NaN inputs are zeroed: the engines' kernels differ on them (tract's Relu
    // gives 0 for NaN, ONNX Runtime's NaN; fuzz/regressions/tensors/relu-nan),
    // and the checks never look at values.
    let size = ty.size();
    for x in data.chunks_mut(size) {
        if x.len() == size && is_nan(ty, x) {
            x.fill(0);
        }
    }
    Tensor::new(dims, ty, data)
}

fn id<'a>(b: &mut Bytes, ports: &'a [Port]) -> Id<'a> {
    let x = b.u8();
    match x >> 6 {
        0 => Id::Index(u32::from(x & 7)),
        1 => Id::Index(u32::MAX - u32::from(x & 7)),
        2 | 3 if !ports.is_empty() => Id::Name(&ports[usize::from(x) % ports.len()].name),
        _ => Id::Name("no-such-port"),
    }
}

/// An input the checks accepted fits its port.
fn fits(port: &Port, t: &Tensor) {
    assert_eq!(
        port.datum.carried(),
        Some(t.ty),
        "{port} took {}",
        t.describe()
    );
    if let Some(dims) = &port.dims {
        assert_eq!(dims.len(), t.dims.len(), "{port} took {}", t.describe());
        for (want, &got) in dims.iter().zip(&t.dims) {
            if let Dim::Fixed(w) = want {
                assert_eq!(*w, u64::from(got), "{port} took {}", t.describe());
            }
        }
    }
    let n: usize = t.dims.iter().map(|&d| d as usize).product();
    assert_eq!(
        n * t.ty.size(),
        t.data.len(),
        "{port} took {}",
        t.describe()
    );
}

fn same_tensor(a: &Tensor, b: &Tensor) {
    assert_eq!((a.ty, &a.dims), (b.ty, &b.dims));
    let size = a.ty.size();
    for (x, y) in a.data.chunks(size).zip(b.data.chunks(size)) {
        assert!(
            x == y || (is_nan(a.ty, x) && is_nan(a.ty, y)),
            "tract and onnxruntime differ: {a:?} vs {b:?}"
        );
    }
}

fn is_nan(ty: ElementType, v: &[u8]) -> bool {
    match ty {
        ElementType::F32 => f32::from_le_bytes(v.try_into().unwrap()).is_nan(),
        ElementType::F64 => f64::from_le_bytes(v.try_into().unwrap()).is_nan(),
        ElementType::F16 | ElementType::Bf16 => {
            let bits = u16::from_le_bytes(v.try_into().unwrap());
            let exponent = if ty == ElementType::F16 {
                0x7c00
            } else {
                0x7f80
            };
            bits & exponent == exponent && bits & !(exponent | 0x8000) != 0
        }
        _ => false,
    }
}

fn step(b: &mut Bytes, graph: &Graph, ctx: [&mut Context; 2]) {
    let sig = graph.signature();
    let [tract, ort] = ctx;
    match b.u8() % 4 {
        0 => {
            let id = id(b, &sig.inputs);
            let t = tensor(b);
            let r = tract.set_input(id, t.clone());
            assert_eq!(r, ort.set_input(id, t.clone()), "set_input");
            if r.is_ok() {
                let port = match id {
                    Id::Index(i) => &sig.inputs[i as usize],
                    Id::Name(n) => sig.inputs.iter().find(|p| p.name == n).unwrap(),
                };
                fits(port, &t);
            }
        }
        1 => compare(tract.compute(), ort.compute(), || {
            for i in 0..sig.outputs.len() as u32 {
                same_tensor(
                    &tract.get_output(Id::Index(i)).unwrap(),
                    &ort.get_output(Id::Index(i)).unwrap(),
                );
            }
        }),
        2 => {
            let n = b.u8() % 8;
            let inputs: Vec<(String, Tensor)> = (0..n)
                .map(|_| {
                    let name = match id(b, &sig.inputs) {
                        Id::Name(n) => n.to_string(),
                        Id::Index(i) => sig
                            .inputs
                            .get(i as usize)
                            .map_or("".into(), |p| p.name.clone()),
                    };
                    (name, tensor(b))
                })
                .collect();
            let (x, y) = (
                tract.compute_named(inputs.clone()),
                ort.compute_named(inputs),
            );
            match (&x, &y) {
                (Ok(x), Ok(y)) => {
                    assert_eq!(x.len(), y.len());
                    for ((nx, tx), (ny, ty)) in x.iter().zip(y) {
                        assert_eq!(nx, ny);
                        same_tensor(tx, ty);
                    }
                }
                _ => compare(x.map(drop), y.map(drop), || {}),
            }
        }
        _ => {
            let id = id(b, &sig.outputs);
            match (tract.get_output(id), ort.get_output(id)) {
                (Ok(x), Ok(y)) => same_tensor(&x, &y),
                (x, y) => assert_eq!(x.map(drop), y.map(drop), "get_output"),
            }
        }
    }
}

/// The checks are one crate's: the same refusal from both. An engine's own
/// failure (with its detail) may differ in words, not in whether it failed.
fn compare(x: verge_nn::Result<()>, y: verge_nn::Result<()>, same_outputs: impl FnOnce()) {
    match (&x, &y) {
        (Ok(()), Ok(())) => same_outputs(),
        (Err(a), Err(b)) if a.detail.is_some() || b.detail.is_some() => {}
        _ => assert_eq!(x, y, "tract and onnxruntime answer differently"),
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    common::host_catches_panics();
    let mut b = Bytes(data);
    let (tract, ort) = &graphs()[usize::from(b.u8()) % MODELS.len()];
    let (mut x, mut y) = (tract.context(), ort.context());
    for _ in 0..8 {
        if b.0.is_empty() {
            break;
        }
        step(&mut b, tract, [&mut x, &mut y]);
    }
});
