//! Models written byte by byte (a few protobuf fields), for what the
//! reference suites do not hold: refusals that name each problem, and
//! hostile files that must end in an error, not a panic or a hang.

use verge_nn::{ElementType, Engine, ErrorCode, Graph, Tensor};

use crate::{Compact, unsupported};

fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// A length-delimited field.
fn field(n: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(u64::from(n) << 3 | 2, &mut out);
    varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

fn int_field(n: u32, v: i64) -> Vec<u8> {
    let mut out = Vec::new();
    varint(u64::from(n) << 3, &mut out);
    varint(v as u64, &mut out);
    out
}

fn attr_int(name: &str, v: i64) -> Vec<u8> {
    [field(1, name.as_bytes()), int_field(20, 2), int_field(3, v)].concat()
}

fn attr_ints(name: &str, v: &[i64]) -> Vec<u8> {
    let mut a = [field(1, name.as_bytes()), int_field(20, 7)].concat();
    for &x in v {
        a.extend(int_field(8, x));
    }
    a
}

fn attr_strings(name: &str, v: &[&str]) -> Vec<u8> {
    let mut a = [field(1, name.as_bytes()), int_field(20, 8)].concat();
    for s in v {
        a.extend(field(9, s.as_bytes()));
    }
    a
}

fn attr_floats(name: &str, v: &[f32]) -> Vec<u8> {
    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
    [
        field(1, name.as_bytes()),
        int_field(20, 6),
        field(7, &bytes),
    ]
    .concat()
}

fn node(op: &str, domain: &str, inputs: &[&str], outputs: &[&str], attrs: &[Vec<u8>]) -> Vec<u8> {
    let mut n = Vec::new();
    for i in inputs {
        n.extend(field(1, i.as_bytes()));
    }
    for o in outputs {
        n.extend(field(2, o.as_bytes()));
    }
    n.extend(field(4, op.as_bytes()));
    if !domain.is_empty() {
        n.extend(field(7, domain.as_bytes()));
    }
    for a in attrs {
        n.extend(field(5, a));
    }
    field(1, &n)
}

/// `name: f32[N, dims…]`
fn value_info(name: &str, dims: &[i64]) -> Vec<u8> {
    value_info_in(name, "N", dims)
}

/// `name: f32[SYMBOL, dims…]`
fn value_info_in(name: &str, symbol: &str, dims: &[i64]) -> Vec<u8> {
    let mut shape = field(1, &field(2, symbol.as_bytes()));
    for &d in dims {
        shape.extend(field(1, &int_field(1, d)));
    }
    let tensor = [int_field(1, 1), field(2, &shape)].concat();
    [field(1, name.as_bytes()), field(2, &field(1, &tensor))].concat()
}

fn model(nodes: &[Vec<u8>], inputs: &[Vec<u8>], outputs: &[Vec<u8>]) -> Vec<u8> {
    let mut g = nodes.concat();
    for i in inputs {
        g.extend(field(11, i));
    }
    for o in outputs {
        g.extend(field(12, o));
    }
    let opset = |d: &str, v| [field(1, d.as_bytes()), int_field(2, v)].concat();
    [
        field(8, &opset("", 15)),
        field(8, &opset("ai.onnx.ml", 3)),
        field(7, &g),
    ]
    .concat()
}

fn f32s(dims: Vec<u32>, v: &[f32]) -> Tensor {
    Tensor::new(
        dims,
        ElementType::F32,
        v.iter().flat_map(|f| f.to_le_bytes()).collect(),
    )
}

#[test]
fn a_model_runs_end_to_end() {
    let m = model(
        &[
            node("Relu", "", &["x"], &["r"], &[]),
            node("Sigmoid", "", &["r"], &["y"], &[]),
        ],
        &[value_info("x", &[2])],
        &[value_info("y", &[2])],
    );
    assert_eq!(unsupported(&m).unwrap(), Vec::<String>::new());
    let g = Graph::load("m", &Compact, &m).unwrap();
    let out = g
        .context()
        .compute_named(vec![("x".into(), f32s(vec![1, 2], &[-1.0, 0.0]))])
        .unwrap();
    assert_eq!(
        out[0].1.data,
        [0.5f32, 0.5]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect::<Vec<_>>()
    );
}

#[test]
fn every_unsupported_operator_and_attribute_is_named_at_load() {
    let m = model(
        &[
            node("Conv", "", &["x"], &["a"], &[]),
            node("Relu", "", &["a"], &["b"], &[attr_int("alpha", 1)]),
            node("ZipMap", "ai.onnx.ml", &["b"], &["c"], &[]),
            node("Conv", "", &["c"], &["y"], &[]),
        ],
        &[value_info("x", &[2])],
        &[value_info("y", &[2])],
    );
    assert_eq!(
        unsupported(&m).unwrap(),
        [
            "Conv",
            "Relu: attribute 'alpha' is not supported",
            "ZipMap (ai.onnx.ml)"
        ]
    );
    let e = Compact.load(&m).err().expect("refused");
    assert_eq!(e.code, ErrorCode::UnsupportedOperation);
    assert!(
        e.message.contains("Conv; Relu: attribute 'alpha'"),
        "{}",
        e.message
    );
}

#[test]
fn a_tree_with_a_cycle_ends_in_an_error() {
    // Node 0 branches to 1 and 1 back to 0: no leaf is ever reached.
    let tree = node(
        "TreeEnsembleRegressor",
        "ai.onnx.ml",
        &["x"],
        &["y"],
        &[
            attr_ints("nodes_treeids", &[0, 0, 0]),
            attr_ints("nodes_nodeids", &[0, 1, 2]),
            attr_ints("nodes_featureids", &[0, 0, 0]),
            attr_strings("nodes_modes", &["BRANCH_LEQ", "BRANCH_LEQ", "LEAF"]),
            attr_floats("nodes_values", &[1.0, 1.0, 0.0]),
            attr_ints("nodes_truenodeids", &[1, 0, 0]),
            attr_ints("nodes_falsenodeids", &[1, 0, 0]),
            attr_ints("target_treeids", &[0]),
            attr_ints("target_nodeids", &[2]),
            attr_ints("target_ids", &[0]),
            attr_floats("target_weights", &[1.0]),
        ],
    );
    let m = model(&[tree], &[value_info("x", &[1])], &[value_info("y", &[1])]);
    let g = Graph::load("m", &Compact, &m).unwrap();
    let e = g
        .context()
        .compute_named(vec![("x".into(), f32s(vec![1, 1], &[0.0]))])
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::RuntimeError);
    assert!(e.data().contains("cycle"), "{}", e.data());
}

#[test]
fn a_product_too_large_is_refused_not_allocated() {
    // [N, 0] x [0, 1<<20] with N = 1<<20: 2^40 elements from empty operands.
    let m = model(
        &[node("MatMul", "", &["a", "b"], &["y"], &[])],
        &[value_info("a", &[0]), value_info_in("b", "K", &[1 << 20])],
        &[value_info("y", &[1 << 20])],
    );
    let g = Graph::load("m", &Compact, &m).unwrap();
    let a = Tensor::new(vec![1 << 20, 0], ElementType::F32, vec![]);
    let b = Tensor::new(vec![0, 1 << 20], ElementType::F32, vec![]);
    let e = g
        .context()
        .compute_named(vec![("a".into(), a), ("b".into(), b)])
        .unwrap_err();
    assert!(e.data().contains("over the engine's"), "{}", e.data());
}

#[test]
fn garbage_and_truncation_are_invalid_encoding() {
    let good = model(
        &[node("Relu", "", &["x"], &["y"], &[])],
        &[value_info("x", &[2])],
        &[value_info("y", &[2])],
    );
    for cut in 1..good.len() {
        // Every prefix is refused or loads; none panics.
        let _ = Compact.load(&good[..cut]);
    }
    let e = Compact.load(b"\xff\xff\xff\xff garbage").err().unwrap();
    assert_eq!(e.code, ErrorCode::InvalidEncoding);
    let e = Compact.load(&good[..good.len() / 2]).err().unwrap();
    assert_eq!(e.code, ErrorCode::InvalidEncoding);
}

#[test]
fn an_axis_of_a_scalar_is_an_error_not_a_panic() {
    for (op, attrs) in [
        ("ArgMax", vec![]),
        ("Softmax", vec![]),
        ("Concat", vec![attr_int("axis", 0)]),
        ("Squeeze", vec![]),
    ] {
        let m = model(
            &[node(op, "", &["x"], &["y"], &attrs)],
            &[scalar_info("x")],
            &[scalar_info("y")],
        );
        let g = Graph::load("m", &Compact, &m).unwrap();
        let got = g
            .context()
            .compute_named(vec![("x".into(), f32s(vec![], &[1.0]))]);
        if op != "Squeeze" {
            let e = got.unwrap_err();
            assert_eq!(e.code, ErrorCode::RuntimeError, "{op}: {e}");
        }
    }
}

/// `name: f32[]`
fn scalar_info(name: &str) -> Vec<u8> {
    let tensor = [int_field(1, 1), field(2, &[])].concat();
    [field(1, name.as_bytes()), field(2, &field(1, &tensor))].concat()
}
