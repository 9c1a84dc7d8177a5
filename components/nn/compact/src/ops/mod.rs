//! The operators, each built once at load from its node (attributes read and
//! checked there, so that a model runs only if every attribute is understood)
//! and run per call on values.

mod core;
mod linalg;
mod ml;
mod tree;

use std::cell::{Cell, RefCell};

use crate::onnx::{AttrValue, Attribute, NodeProto};
use crate::value::{Data, Value};

/// An operator ready to run. `inputs` has one entry per node input, `None`
/// for an optional input left out.
pub trait Op: Send + Sync {
    fn run(&self, inputs: &[Option<&Value>]) -> Result<Vec<Value>, String>;
}

pub type Built = Result<Box<dyn Op>, String>;

/// Builds an operator from its node at load.
type Builder = fn(&Node) -> Built;

/// The ONNX-ML domain (`""` is the default ONNX domain), short so that each
/// entry below fits one line.
const ML: &str = "ai.onnx.ml";

/// Every operator this engine runs, as `(domain, op_type, builder)`. This is
/// the one list: [`OPERATORS`] and [`build`] both come from it, so adding an
/// operator is one line here and the two cannot disagree.
const TABLE: &[(&str, &str, Builder)] = &[
    ("", "Add", core::arithmetic),
    ("", "ArgMax", core::argmax),
    ("", "Cast", core::cast),
    ("", "Clip", core::clip),
    ("", "Concat", core::concat),
    ("", "Constant", core::constant),
    ("", "Div", core::arithmetic),
    ("", "Exp", core::unary),
    ("", "Flatten", core::flatten),
    ("", "Gemm", linalg::gemm),
    ("", "Identity", core::identity),
    ("", "Log", core::unary),
    ("", "MatMul", linalg::matmul),
    ("", "Mul", core::arithmetic),
    ("", "Not", core::unary),
    ("", "Relu", core::unary),
    ("", "Reshape", core::reshape),
    ("", "Sigmoid", core::unary),
    ("", "Softmax", core::softmax),
    ("", "Squeeze", core::squeeze),
    ("", "Sub", core::arithmetic),
    ("", "Tanh", core::unary),
    ("", "Unsqueeze", core::unsqueeze),
    (ML, "ArrayFeatureExtractor", ml::array_feature_extractor),
    (ML, "Binarizer", ml::binarizer),
    (ML, "LinearClassifier", ml::linear_classifier),
    (ML, "LinearRegressor", ml::linear_regressor),
    (ML, "Normalizer", ml::normalizer),
    (ML, "Scaler", ml::scaler),
    (ML, "TreeEnsemble", tree::ensemble),
    (ML, "TreeEnsembleClassifier", tree::classifier),
    (ML, "TreeEnsembleRegressor", tree::regressor),
];

/// The operators this engine runs, by domain, as `(domain, op_type)`: the
/// [`TABLE`] less its builders, worked out at compile time.
pub const OPERATORS: &[(&str, &str)] = &{
    // A `while` loop, since iterators cannot run in a const.
    let mut names = [("", ""); TABLE.len()];
    let mut i = 0;
    while i < TABLE.len() {
        names[i] = (TABLE[i].0, TABLE[i].1);
        i += 1;
    }
    names
};

/// A node as its builder sees it: its attributes (each read marks it
/// understood), the opset of its domain, and the problems found.
pub struct Node<'a> {
    pub proto: &'a NodeProto,
    pub opset: i64,
    used: Vec<Cell<bool>>,
    problems: RefCell<Vec<String>>,
}

impl<'a> Node<'a> {
    pub fn new(proto: &'a NodeProto, opset: i64) -> Self {
        Node {
            proto,
            opset,
            used: proto.attributes.iter().map(|_| Cell::new(false)).collect(),
            problems: RefCell::new(Vec::new()),
        }
    }

    fn find(&self, name: &str) -> Option<&'a Attribute> {
        let i = self.proto.attributes.iter().position(|a| a.name == name)?;
        self.used[i].set(true);
        Some(&self.proto.attributes[i])
    }

    /// Records that the node cannot run as written.
    pub fn problem(&self, what: impl Into<String>) {
        self.problems.borrow_mut().push(what.into());
    }

    fn typed<T>(&self, name: &str, want: &str, get: impl Fn(&AttrValue) -> Option<T>) -> Option<T> {
        let a = self.find(name)?;
        let v = get(&a.value);
        if v.is_none() {
            self.problem(format!("attribute '{name}' is not {want}"));
        }
        v
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        self.typed(name, "an integer", |v| match v {
            AttrValue::Int(i) => Some(*i),
            _ => None,
        })
    }

    pub fn int_or(&self, name: &str, default: i64) -> i64 {
        self.int(name).unwrap_or(default)
    }

    pub fn float(&self, name: &str) -> Option<f32> {
        self.typed(name, "a float", |v| match v {
            AttrValue::Float(f) => Some(*f),
            _ => None,
        })
    }

    pub fn string(&self, name: &str) -> Option<String> {
        self.typed(name, "a string", |v| match v {
            AttrValue::String(s) => String::from_utf8(s.clone()).ok(),
            _ => None,
        })
    }

    pub fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.typed(name, "a list of integers", |v| match v {
            AttrValue::Ints(i) => Some(i.clone()),
            _ => None,
        })
    }

    pub fn floats(&self, name: &str) -> Option<Vec<f32>> {
        self.typed(name, "a list of floats", |v| match v {
            AttrValue::Floats(f) => Some(f.clone()),
            _ => None,
        })
    }

    pub fn strings(&self, name: &str) -> Option<Vec<String>> {
        self.typed(name, "a list of strings", |v| match v {
            AttrValue::Strings(s) => s
                .iter()
                .map(|b| String::from_utf8(b.clone()).ok())
                .collect(),
            _ => None,
        })
    }

    pub fn tensor(&self, name: &str) -> Option<Value> {
        let t = self.typed(name, "a tensor", |v| match v {
            AttrValue::Tensor(t) => Some(t.clone()),
            _ => None,
        })?;
        match Value::from_proto(&t) {
            Ok(v) => Some(v),
            Err(e) => {
                self.problem(format!("attribute '{name}': {e}"));
                None
            }
        }
    }

    /// A list of numbers given either as `name` (floats) or as
    /// `name_as_tensor` (a tensor of any float type, kept as f64).
    pub fn numbers(&self, name: &str) -> Option<Vec<f64>> {
        let list = self.floats(name);
        let tensor = self.tensor(&format!("{name}_as_tensor"));
        match (list, tensor) {
            (Some(_), Some(_)) => {
                self.problem(format!("both '{name}' and '{name}_as_tensor' are set"));
                None
            }
            (Some(l), None) => Some(l.into_iter().map(f64::from).collect()),
            (None, Some(t)) => Some(t.data.to_f64s()),
            (None, None) => None,
        }
    }

    /// What stops this node: its problems and the attributes no builder read.
    pub fn finish(self, built: &Built) -> Vec<String> {
        let mut problems = self.problems.into_inner();
        if let Err(e) = built {
            // The attributes a failed builder did not reach are not news.
            problems.push(e.clone());
            return problems;
        }
        for (a, used) in self.proto.attributes.iter().zip(&self.used) {
            if !used.get() {
                problems.push(format!("attribute '{}' is not supported", a.name));
            }
        }
        problems
    }
}

/// The builder for `domain`/`op_type`, or `None` for an operator this engine
/// does not run.
pub fn build(domain: &str, node: &Node) -> Option<Built> {
    let op = node.proto.op_type.as_str();
    let &(_, _, builder) = TABLE.iter().find(|&&(d, o, _)| d == domain && o == op)?;
    Some(builder(node))
}

// Helpers shared by the operators.

/// The `i`th input, which the operator requires.
pub fn input<'v>(inputs: &[Option<&'v Value>], i: usize) -> Result<&'v Value, String> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| format!("input {i} is missing"))
}

/// An axis in `-rank..rank`, made non-negative (a scalar has none).
pub fn axis(axis: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(format!("axis {axis} is out of range for rank {rank}"))
    }
}

/// The element count of a shape.
pub fn count(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// The f32/f64 math that the float operators share, also for f16 (computed in f32).
pub fn float_map(
    v: &Value,
    f32f: impl Fn(f32) -> f32,
    f64f: impl Fn(f64) -> f64,
) -> Result<Data, String> {
    Ok(match &v.data {
        Data::F32(x) => Data::F32(x.iter().map(|&a| f32f(a)).collect()),
        Data::F64(x) => Data::F64(x.iter().map(|&a| f64f(a)).collect()),
        Data::F16(_) => {
            let Some(Data::F32(x)) = v.data.cast(verge_nn::Datum::F32) else {
                unreachable!("f16 casts to f32")
            };
            Data::F32(x.into_iter().map(f32f).collect())
                .cast(verge_nn::Datum::F16)
                .expect("f32 casts to f16")
        }
        d => return Err(format!("{} elements are not supported", d.datum())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dispatches(domain: &str, op: &str) -> bool {
        let proto = NodeProto {
            op_type: op.to_string(),
            ..Default::default()
        };
        build(domain, &Node::new(&proto, 1)).is_some()
    }

    // `build` reads only `TABLE`, so it cannot know a name that `OPERATORS`
    // lacks; this checks the compile-time copy into `OPERATORS` and the lookup.
    #[test]
    fn every_listed_operator_is_dispatched_and_nothing_else() {
        assert_eq!(OPERATORS.len(), TABLE.len());
        for (&(domain, op), &(d, o, _)) in OPERATORS.iter().zip(TABLE) {
            assert_eq!((domain, op), (d, o));
            assert!(dispatches(domain, op), "{op} ({domain}) is not dispatched");
        }
        // Known names in the wrong domain, and a name in neither domain.
        assert!(!dispatches(ML, "Add"));
        assert!(!dispatches("", "TreeEnsemble"));
        assert!(!dispatches(ML, "ZipMap"));
    }
}
