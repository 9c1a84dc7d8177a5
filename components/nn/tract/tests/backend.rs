//! The tract engine against small ONNX graphs built here: what is tract's own
//! (arithmetic in every type, symbols bound per call, sharing across
//! threads, refusing operators it lacks). The checks and wording every engine
//! shares are the behaviour suite's (components/nn/suite), which the device
//! host's tests run on this engine too.

use prost::Message;
use tract_onnx::pb::{self, tensor_proto::DataType, tensor_shape_proto::dimension};
use verge_nn::{ElementType, ErrorCode, Graph, Tensor};
use verge_nn_tract::{Options, Tract, TractModel};

/// A dimension: a number, or a symbol fixed per call.
enum D {
    N(i64),
    S(&'static str),
}

fn value(name: &str, ty: DataType, dims: &[D]) -> pb::ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| pb::tensor_shape_proto::Dimension {
            value: Some(match d {
                D::N(n) => dimension::Value::DimValue(*n),
                D::S(s) => dimension::Value::DimParam(s.to_string()),
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: ty as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: output.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

fn model_bytes(
    nodes: Vec<pb::NodeProto>,
    inputs: Vec<pb::ValueInfoProto>,
    outputs: Vec<pb::ValueInfoProto>,
) -> Vec<u8> {
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(pb::GraphProto {
            name: "test".into(),
            node: nodes,
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// sum = a + b and prod = a * b, both [n, 3] with n symbolic.
fn sum_prod(ty: DataType) -> Graph {
    let dims = [D::S("n"), D::N(3)];
    let bytes = model_bytes(
        vec![
            node("Add", &["a", "b"], "sum"),
            node("Mul", &["a", "b"], "prod"),
        ],
        vec![value("a", ty, &dims), value("b", ty, &dims)],
        vec![value("sum", ty, &dims), value("prod", ty, &dims)],
    );
    Graph::load("sum_prod", &Tract::default(), &bytes).expect("model loads")
}

fn f32s(dims: &[u32], v: &[f32]) -> Tensor {
    Tensor::new(
        dims.to_vec(),
        ElementType::F32,
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

fn as_f32(t: &Tensor) -> Vec<f32> {
    assert_eq!(t.ty, ElementType::F32);
    t.data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn named_inputs_and_outputs_with_symbolic_dims() {
    let model = sum_prod(DataType::Float);
    assert_eq!(
        model.signature().to_string(),
        "('a' fp32[n, 3], 'b' fp32[n, 3]) -> ('sum' fp32[n, 3], 'prod' fp32[n, 3])"
    );
    let mut s = model.context();
    // The symbolic dimension takes a different value on every call.
    for n in [1u32, 2, 5] {
        let a: Vec<f32> = (0..n * 3).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..n * 3).map(|i| 0.5 * i as f32).collect();
        let out = s
            .compute_named(vec![
                ("a".into(), f32s(&[n, 3], &a)),
                ("b".into(), f32s(&[n, 3], &b)),
            ])
            .unwrap();
        assert_eq!(out[0].0, "sum");
        assert_eq!(out[1].0, "prod");
        assert_eq!(out[0].1.dims, vec![n, 3]);
        let want_sum: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        let want_prod: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x * y).collect();
        assert_eq!(as_f32(&out[0].1), want_sum);
        assert_eq!(as_f32(&out[1].1), want_prod);
    }
}

/// Each integer and float type round-trips through Add with its own bytes.
#[test]
fn every_element_type() {
    fn check<T: Copy + PartialEq + std::fmt::Debug>(
        dt: DataType,
        ty: ElementType,
        vals: [T; 3],
        twice: [T; 3],
        to_bytes: fn(T) -> Vec<u8>,
    ) {
        let model = sum_prod(dt);
        let t = Tensor::new(
            vec![1, 3],
            ty,
            vals.iter().flat_map(|&v| to_bytes(v)).collect(),
        );
        let out = model
            .context()
            .compute_named(vec![("a".into(), t.clone()), ("b".into(), t)])
            .unwrap();
        let want: Vec<u8> = twice.iter().flat_map(|&v| to_bytes(v)).collect();
        assert_eq!(out[0].1.ty, ty, "{ty}");
        assert_eq!(out[0].1.data, want, "{ty}");
    }
    check(
        DataType::Float,
        ElementType::F32,
        [1.5f32, -2., 3.],
        [3., -4., 6.],
        |v| v.to_le_bytes().to_vec(),
    );
    check(
        DataType::Double,
        ElementType::F64,
        [1.5f64, -2., 3.],
        [3., -4., 6.],
        |v| v.to_le_bytes().to_vec(),
    );
    check(
        DataType::Uint8,
        ElementType::U8,
        [1u8, 2, 100],
        [2, 4, 200],
        |v| vec![v],
    );
    check(
        DataType::Int32,
        ElementType::I32,
        [1i32, -2, 1 << 20],
        [2, -4, 1 << 21],
        |v| v.to_le_bytes().to_vec(),
    );
    check(
        DataType::Int64,
        ElementType::I64,
        [1i64, -2, 1 << 40],
        [2, -4, 1 << 41],
        |v| v.to_le_bytes().to_vec(),
    );
    // fp16: 1.5 = 0x3E00, 3.0 = 0x4200, -2 = 0xC000, -4 = 0xC400, 6 = 0x4600.
    check(
        DataType::Float16,
        ElementType::F16,
        [0x3E00u16, 0xC000, 0x4200],
        [0x4200, 0xC400, 0x4600],
        |v| v.to_le_bytes().to_vec(),
    );
}

#[test]
fn an_operator_tract_lacks_is_refused_at_load_by_name() {
    let unknown = model_bytes(
        vec![node("NoSuchOperator", &["a"], "y")],
        vec![value("a", DataType::Float, &[D::N(2)])],
        vec![value("y", DataType::Float, &[D::N(2)])],
    );
    let e = Graph::load("m", &Tract::default(), &unknown).expect_err("an error");
    assert_eq!(e.code, ErrorCode::UnsupportedOperation, "{e}");
    assert_eq!(e.message, "model 'm' cannot be loaded");
    assert!(e.data().contains("NoSuchOperator"), "{e}");
}

#[test]
fn sessions_share_one_model_across_threads() {
    let model = sum_prod(DataType::Float);
    let handles: Vec<_> = (0..4)
        .map(|k| {
            let model = model.clone();
            std::thread::spawn(move || {
                let mut s = model.context();
                let a = f32s(&[1, 3], &[k as f32; 3]);
                let out = s
                    .compute_named(vec![("a".into(), a.clone()), ("b".into(), a)])
                    .unwrap();
                as_f32(&out[0].1)[0]
            })
        })
        .collect();
    let got: Vec<f32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(got, [0., 2., 4., 6.]);
}

/// A LayerNormalization axis below minus its input's rank is refused at
/// once: tract itself would spend minutes and gigabytes on it (a fuzzed model).
#[test]
fn a_layer_normalization_axis_below_the_rank_is_refused_at_once() {
    let bytes = include_bytes!(
        "../../../../fuzz/regressions/onnx_tract/layer-normalization-axis-below-rank"
    );
    let started = std::time::Instant::now();
    let Err(err) = TractModel::load(bytes, Options::default()) else {
        panic!("the model loaded");
    };
    assert!(
        err.to_string()
            .contains("axis -327683 is outside its rank-4 input"),
        "{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

/// A Transpose whose perm repeats an axis is refused at once: tract itself
/// runs out of memory on it (a fuzzed model).
#[test]
fn a_transpose_whose_perm_repeats_an_axis_is_refused_at_once() {
    let bytes =
        include_bytes!("../../../../fuzz/regressions/onnx_tract/transpose-perm-repeats-an-axis");
    let Err(err) = TractModel::load(bytes, Options::default()) else {
        panic!("the model loaded");
    };
    assert!(
        err.to_string()
            .contains("perm [0, 2, 0] is not a permutation"),
        "{err}"
    );
}
