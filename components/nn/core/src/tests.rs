//! The core's own checks, on an engine that echoes its inputs. The behaviour
//! suite (`components/nn/suite`) runs the same checks on every real engine.

use super::*;

/// Outputs input 0 as each declared output, in the output's declared type
/// (so a u32 or bool output exercises widening).
struct Echo(Signature);

impl Model for Echo {
    fn signature(&self) -> &Signature {
        &self.0
    }
    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<RawTensor>> {
        Ok(self
            .0
            .outputs
            .iter()
            .map(|p| {
                let t = &inputs[0];
                let n = t.count().unwrap();
                let size = p.datum.size().unwrap_or(1);
                let data = (0..n).flat_map(|i| {
                    let mut b = vec![0u8; size];
                    b[0] = (i as u8) | 0x80;
                    b
                });
                RawTensor::new(t.dims.clone(), p.datum, data.collect())
            })
            .collect())
    }
}

struct EchoEngine(Signature);

impl Engine for EchoEngine {
    fn name(&self) -> &str {
        "echo"
    }
    fn load(&self, bytes: &[u8]) -> Result<Box<dyn Model>> {
        if bytes == b"bad" {
            return Err(NnError::new(ErrorCode::InvalidEncoding, "not a model"));
        }
        Ok(Box::new(Echo(self.0.clone())))
    }
}

fn port(name: &str, datum: Datum, dims: &[Dim]) -> Port {
    Port::new(name, datum, Some(dims.to_vec()))
}

fn sym(s: &str) -> Dim {
    Dim::Symbol(s.into())
}

fn graph(outputs: Vec<Port>) -> Graph {
    let sig = Signature {
        inputs: vec![
            port("a", Datum::F32, &[sym("n"), Dim::Fixed(2)]),
            port("b", Datum::F32, &[sym("n"), Dim::Any]),
        ],
        outputs,
    };
    Graph::load("m", &EchoEngine(sig), b"ok").unwrap()
}

fn f32s(dims: &[u32]) -> Tensor {
    let n: u32 = dims.iter().product();
    Tensor::new(dims.to_vec(), ElementType::F32, vec![0; n as usize * 4])
}

fn err(r: Result<impl std::fmt::Debug>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn every_check_has_one_wording() {
    let g = graph(vec![port("y", Datum::F32, &[sym("n"), Dim::Fixed(2)])]);
    let mut c = g.context();
    assert_eq!(
        err(c.set_input(Id::Name("x"), f32s(&[1, 2]))),
        "invalid-argument: no input named 'x'; the model's inputs are 'a' fp32[n, 2], 'b' fp32[n, ?]"
    );
    assert_eq!(
        err(c.set_input(Id::Index(2), f32s(&[1, 2]))),
        "invalid-argument: no input at index 2; the model's inputs are 'a' fp32[n, 2], 'b' fp32[n, ?]"
    );
    assert_eq!(
        err(c.set_input(Id::Name("a"), f32s(&[1, 3]))),
        "invalid-argument: input 'a' fp32[n, 2] cannot take fp32[1, 3]"
    );
    assert_eq!(
        err(c.set_input(Id::Name("a"), f32s(&[2]))),
        "invalid-argument: input 'a' fp32[n, 2] cannot take fp32[2]"
    );
    let ints = Tensor::new(vec![1, 2], ElementType::I32, vec![0; 8]);
    assert_eq!(
        err(c.set_input(Id::Name("a"), ints)),
        "invalid-argument: input 'a' fp32[n, 2] cannot take i32[1, 2]"
    );
    let short = Tensor::new(vec![1, 2], ElementType::F32, vec![0; 7]);
    assert_eq!(
        err(c.set_input(Id::Name("a"), short)),
        "invalid-argument: input 'a': fp32[1, 2] needs 8 bytes, got 7 bytes"
    );
    let huge = Tensor::new(vec![u32::MAX, u32::MAX, u32::MAX], ElementType::F32, vec![]);
    let b = Port::new("a", Datum::F32, None);
    assert_eq!(
        check_msg(&b, &huge),
        "input 'a': fp32[4294967295, 4294967295, 4294967295] needs more bytes than memory holds, got 0 bytes"
    );
    c.set_input(Id::Name("a"), f32s(&[1, 2])).unwrap();
    assert_eq!(
        err(c.compute()),
        "invalid-argument: inputs not set: 'b' fp32[n, ?]"
    );
    c.set_input(Id::Index(1), f32s(&[3, 5])).unwrap();
    assert_eq!(
        err(c.compute()),
        "invalid-argument: input 'b' fp32[n, ?] cannot take fp32[3, 5]: n is 1 in input 'a'"
    );
    assert_eq!(
        err(c.get_output(Id::Name("y"))),
        "invalid-argument: no outputs yet: call compute first"
    );
    c.set_input(Id::Index(1), f32s(&[1, 5])).unwrap();
    c.compute().unwrap();
    assert_eq!(c.get_output(Id::Index(0)).unwrap().dims, vec![1, 2]);
    assert_eq!(
        err(c.get_output(Id::Name("z"))),
        "invalid-argument: no output named 'z'; the model's outputs are 'y' fp32[n, 2]"
    );
    assert_eq!(
        err(c.compute_named(vec![
            ("a".into(), f32s(&[1, 2])),
            ("a".into(), f32s(&[1, 2]))
        ])),
        "invalid-argument: input 'a' is given twice"
    );
    // compute_named takes exactly the inputs it is given.
    assert_eq!(
        err(c.compute_named(vec![("a".into(), f32s(&[1, 2]))])),
        "invalid-argument: inputs not set: 'b' fp32[n, ?]"
    );
}

fn check_msg(p: &Port, t: &Tensor) -> String {
    super::check::check(p, t).unwrap_err().message
}

#[test]
fn narrow_outputs_widen() {
    let g = graph(vec![
        port("bool", Datum::Bool, &[]),
        port("i8", Datum::I8, &[]),
        port("u16", Datum::U16, &[]),
        port("u32", Datum::U32, &[]),
        port("f32", Datum::F32, &[]),
    ]);
    let out = g
        .context()
        .compute_named(vec![
            ("a".into(), f32s(&[1, 2])),
            ("b".into(), f32s(&[1, 1])),
        ])
        .unwrap();
    let types: Vec<(&str, ElementType, usize)> = out
        .iter()
        .map(|(n, t)| (n.as_str(), t.ty, t.data.len()))
        .collect();
    assert_eq!(
        types,
        vec![
            ("bool", ElementType::I32, 8),
            ("i8", ElementType::I32, 8),
            ("u16", ElementType::I32, 8),
            ("u32", ElementType::I64, 16),
            ("f32", ElementType::F32, 8),
        ]
    );
    // bool: any non-zero byte is 1; i8 0x80 is -128; u16 0x0080 is 128; u32 0x80 is 128.
    assert_eq!(&out[0].1.data[..4], &1i32.to_le_bytes());
    assert_eq!(&out[1].1.data[..4], &(-128i32).to_le_bytes());
    assert_eq!(&out[2].1.data[..4], &128i32.to_le_bytes());
    assert_eq!(&out[3].1.data[..8], &128i64.to_le_bytes());
}

#[test]
fn load_refuses_what_wasi_nn_cannot_carry() {
    let sig = |inp: Datum, out: Datum| Signature {
        inputs: vec![port("x", inp, &[Dim::Fixed(1)])],
        outputs: vec![port("y", out, &[Dim::Fixed(1)])],
    };
    let e = Graph::load("m", &EchoEngine(sig(Datum::Bool, Datum::F32)), b"ok").unwrap_err();
    assert_eq!(
        e.to_string(),
        "unsupported-operation: model 'm': input 'x' bool[1] is a type wasi:nn cannot carry (it carries fp16, fp32, fp64, bf16, u8, i32, i64)"
    );
    let e = Graph::load("m", &EchoEngine(sig(Datum::F32, Datum::String)), b"ok").unwrap_err();
    assert_eq!(
        e.to_string(),
        "unsupported-operation: model 'm': output 'y' string[1] is a type wasi:nn cannot carry"
    );
    let e = Graph::load("m", &EchoEngine(sig(Datum::F32, Datum::F32)), b"bad").unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidEncoding);
    assert_eq!(e.message, "model 'm' cannot be loaded");
    assert_eq!(e.data(), "model 'm' cannot be loaded: echo: not a model");
    let e = Graph::load("m", &EchoEngine(sig(Datum::F32, Datum::F32)), b"").unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid-encoding: model 'm' cannot be loaded: the file is empty"
    );
}

#[test]
fn codes_and_types_round_trip() {
    for c in ErrorCode::ALL {
        assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
    }
    for t in ElementType::ALL {
        assert_eq!(ElementType::parse(t.as_str()), Some(t));
        assert_eq!(Datum::from(t).carried(), Some(t));
    }
    assert_eq!(Datum::from_onnx(1), Datum::F32);
    assert_eq!(Datum::from_onnx(16), Datum::Bf16);
    assert_eq!(Datum::from_onnx(17), Datum::Other);
    for code in 1..=16 {
        assert_eq!(Datum::from_onnx(code).onnx(), code);
    }
}
