//! Element-wise arithmetic and activations, casts, and the operators that
//! only move elements (Reshape, Flatten, Concat, Squeeze, Unsqueeze).

use verge_nn::Datum;

use super::{Built, Node, Op, axis, count, float_map, input};
use crate::value::{Data, Value, held, map_each};

/// The shape two operands broadcast to (numpy rules).
pub fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        let pad = rank - s.len();
        if i < pad { 1 } else { s[i - pad] }
    };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        })
        .collect()
}

/// For each element of `out`, the index of the element of an operand of
/// `shape` that broadcasts to it.
pub fn offsets(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let pad = out.len() - shape.len();
    let mut strides = vec![0; out.len()];
    let mut s = 1;
    for i in (0..shape.len()).rev() {
        if shape[i] != 1 {
            strides[pad + i] = s;
        }
        s *= shape[i];
    }
    let n = count(out);
    let mut res = Vec::with_capacity(n);
    let mut idx = vec![0usize; out.len()];
    let mut off = 0;
    for _ in 0..n {
        res.push(off);
        for d in (0..out.len()).rev() {
            idx[d] += 1;
            off += strides[d];
            if idx[d] < out[d] {
                break;
            }
            off -= strides[d] * idx[d];
            idx[d] = 0;
        }
    }
    res
}

/// `f` over two broadcast operands.
pub fn zip_with<T: Copy, U>(
    (a, sa): (&[T], &[usize]),
    (b, sb): (&[T], &[usize]),
    out: &[usize],
    f: impl Fn(T, T) -> U,
) -> Vec<U> {
    if sa == sb {
        return a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect();
    }
    if b.len() == 1 && sa == out {
        let y = b[0];
        return a.iter().map(|&x| f(x, y)).collect();
    }
    let (oa, ob) = (offsets(sa, out), offsets(sb, out));
    oa.iter().zip(&ob).map(|(&i, &j)| f(a[i], b[j])).collect()
}

#[derive(Clone, Copy)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

struct Arithmetic(Arith);

pub fn arithmetic(node: &Node) -> Built {
    let op = match node.proto.op_type.as_str() {
        "Add" => Arith::Add,
        "Sub" => Arith::Sub,
        "Mul" => Arith::Mul,
        _ => Arith::Div,
    };
    if node.opset < 7 {
        return Err(format!("opset {} (before numpy broadcasting)", node.opset));
    }
    Ok(Box::new(Arithmetic(op)))
}

macro_rules! float_arith {
    ($op:expr) => {
        |x, y| match $op {
            Arith::Add => x + y,
            Arith::Sub => x - y,
            Arith::Mul => x * y,
            Arith::Div => x / y,
        }
    };
}

impl Op for Arithmetic {
    fn run(&self, inputs: &[Option<&Value>]) -> Result<Vec<Value>, String> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
        let out = broadcast(&a.shape, &b.shape)?;
        let op = self.0;
        macro_rules! ints {
            ($x:expr, $y:expr, $v:ident) => {{
                if matches!(op, Arith::Div) && $y.contains(&0) {
                    return Err("integer division by zero".into());
                }
                Data::$v(zip_with(
                    ($x, &a.shape),
                    ($y, &b.shape),
                    &out,
                    |x, y| match op {
                        Arith::Add => x.wrapping_add(y),
                        Arith::Sub => x.wrapping_sub(y),
                        Arith::Mul => x.wrapping_mul(y),
                        Arith::Div => x.wrapping_div(y),
                    },
                ))
            }};
        }
        let data = match (&a.data, &b.data) {
            (Data::F32(x), Data::F32(y)) => Data::F32(zip_with(
                (x, &a.shape),
                (y, &b.shape),
                &out,
                float_arith!(op),
            )),
            (Data::F64(x), Data::F64(y)) => Data::F64(zip_with(
                (x, &a.shape),
                (y, &b.shape),
                &out,
                float_arith!(op),
            )),
            (Data::F16(_), Data::F16(_)) => {
                let (x, y) = (f32s(a), f32s(b));
                Data::F32(zip_with(
                    (&x, &a.shape),
                    (&y, &b.shape),
                    &out,
                    float_arith!(op),
                ))
                .cast(Datum::F16)
                .expect("f32 casts to f16")
            }
            (Data::I32(x), Data::I32(y)) => ints!(x, y, I32),
            (Data::I64(x), Data::I64(y)) => ints!(x, y, I64),
            (Data::U8(x), Data::U8(y)) => ints!(x, y, U8),
            (x, y) if x.datum() != y.datum() => {
                return Err(format!(
                    "operands of two types: {} and {}",
                    x.datum(),
                    y.datum()
                ));
            }
            (x, _) => return Err(format!("{} elements are not supported", x.datum())),
        };
        Ok(vec![Value::new(out, data)])
    }
}

/// The elements as f32 (for f16 math).
pub fn f32s(v: &Value) -> Vec<f32> {
    match v.data.cast(Datum::F32) {
        Some(Data::F32(x)) => x,
        _ => unreachable!("every type casts to f32"),
    }
}

struct Unary(&'static str);

pub fn unary(node: &Node) -> Built {
    let name = match node.proto.op_type.as_str() {
        "Exp" => "Exp",
        "Log" => "Log",
        "Relu" => "Relu",
        "Sigmoid" => "Sigmoid",
        "Tanh" => "Tanh",
        _ => "Not",
    };
    if node.opset < 6 {
        return Err(format!("opset {}", node.opset));
    }
    Ok(Box::new(Unary(name)))
}

fn sigmoid32(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn sigmoid64(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

impl Op for Unary {
    fn run(&self, inputs: &[Option<&Value>]) -> Result<Vec<Value>, String> {
        let x = input(inputs, 0)?;
        let data = match (self.0, &x.data) {
            ("Not", Data::Bool(v)) => Data::Bool(v.iter().map(|b| !b).collect()),
            ("Not", d) => return Err(format!("{} elements are not supported", d.datum())),
            ("Relu", Data::I32(v)) => Data::I32(v.iter().map(|&a| a.max(0)).collect()),
            ("Relu", Data::I64(v)) => Data::I64(v.iter().map(|&a| a.max(0)).collect()),
            ("Relu", _) => float_map(x, |a| a.max(0.0), |a| a.max(0.0))?,
            ("Exp", _) => float_map(x, f32::exp, f64::exp)?,
            ("Log", _) => float_map(x, f32::ln, f64::ln)?,
            ("Sigmoid", _) => float_map(x, sigmoid32, sigmoid64)?,
            _ => float_map(x, f32::tanh, f64::tanh)?,
        };
        Ok(vec![Value::new(x.shape.clone(), data)])
    }
}

struct Identity;

pub fn identity(_: &Node) -> Built {
    Ok(Box::new(Identity))
}

impl Op for Identity {
    fn run(&self, inputs: &[Option<&Value>]) -> Result<Vec<Value>, String> {
        Ok(vec![input(inputs, 0)?.clone()])
    }
}

struct Cast(Datum);

pub fn cast(node: &Node) -> Built {
    // `saturate` only concerns 8-bit floats, which this engine refuses.
    let _ = node.int("saturate");
    let to = node.int("to").ok_or("attribute 'to' is missing")?;
    let datum = Datum::from_onnx(to as i32);
    if !held(datum) {
        return Err(format!(
            "a cast to {datum} (ONNX type {to}) is not supported"
        ));
    }
    Ok(Box::new(Cast(datum)))
}

impl Op for Cast {
    fn run(&self, inputs: &[Option<&Value>]) -> Result<Vec<Value>, String> {
        let x = input(inputs, 0)?;
        let data = x.data.cast(self.0).ok_or("cast failed")?;
        Ok(vec![Value::new(x.shape.clone(), data)])
    }
}

struct Clip {
    /// Opset 6-10 bounds, from attributes.
    bounds: Option<(f32, f32)>,
}

pub fn clip(node: &Node) -> Built {
    if node.opset < 6 {
        return Err(format!("opset {}", node.opset));
    }
    let bounds = (node.opset < 11).then(|| {
        (
            node.float("min").unwrap_or(f32::MIN),
            node.float("max").unwrap_or(f32::MAX),
        )
    });
    Ok(Box::new(Clip { bounds }))
}

impl Op for Clip {
    fn run(&self, inputs: &[Option<&Value>]) -> Result<Vec<Value>, String> {
        let x = input(inputs, 0)?;
        let bound = |i: usize| -> Result<Option<&Value>, String> {
            match inputs.get(i).copied().flatten() {
                Some(v) if v.len() != 1 => Err(format!("input {i} is not a scalar")),
                Some(v) if v.datum() != x.datum() => {
                    Err(format!("input {i} is {}, not {}", v.datum(), x.datum()))
                }
                other => Ok(other),
            }
        };
        let (lo, hi) = (bound(1)?, bound(2)?);
        macro_rules! clip {
            ($v:expr, $variant:ident, $min:expr, $max:expr) => {{
                let lo = match (lo.map(|b| &b.data), self.bounds) {
                    (Some(Data::$variant(b)), _) => b[0],
                    (_, Some((l, _))) => l as _,
                    _ => $min,
                };
                let hi = match (hi.map(|b| &b.data), self.bounds) {
                    (Some(Data::$variant(b)), _) => b[0],
                    (_, Some((_, h))) => h as _,
                    _ => $max,
                };
                Data::$variant(
                    $v.iter()
                        .map(|&a| if a < lo { lo } else { a })
                        .map(|a| if a > hi { hi } else { a })
                        .collect(),
                )
            }};
        }
        let data = match &x.data {
            Data::F32(v) => clip!(v, F32, f32::MIN, f32::MAX),
            Data::F64(v) => clip!(v, F64, f64::MIN, f64::MAX),
            Data::I32(v) => clip!(v, I32, i32::MIN, i32::MAX),
            Data::I64(v) => clip!(v, I64, i64::MIN, i64::MAX),
            Data::U8(v) => clip!(v, U8, u8::MIN, u8::MAX),
            Data::I8(v) => clip!(v, I8, i8::MIN, i8::MAX),
            d => return Err(format!("{} elements are not supported", d.datum())),
        };
        Ok(vec![Value::new(x.shape.clone(), data)])
    }
}

struct Constant(Value);

pub fn constant(node: &Node) -> Built {
    let v = if let Some(t) = node.tensor("value") {
        t
    } else if let Some(f) = node.float("value_float") {
        Value::scalar_f32(f)
    } else if let Some(f) = node.floats("value_floats") {
        Value::new(vec![f.len()], Data::F32(f))
    } else if let Some(i) = node.int("value_int") {
        Value::new(vec![], Data::I64(vec![i]))
    } else if let Some(i) = node.ints("value_ints") {
        Value::new(vec![i.len()], Data::I64(i))
    } else {
        return Err("a Constant with no value this engine reads".into());
    };
    Ok(Box::new(Constant(v)))
}

impl Op for Constant {
    fn run(&self, _: &[Option<&Value>]) -> Result<Vec<Value>, String> {
        Ok(vec![self.0.clone()])
    }
}

/// Elements as the dims of a shape argument.
fn dims_arg(v: &Value, what: &str) -> Result<Vec<i64>, String> {
    match &v.data {
        Data::I64(d) if v.shape.len() <= 1 => Ok(d.clone()),
        _ => Err(format!("{what} must be a 1-D i64 tensor")),
    }
}

struct Reshape {
    allowzero: bool,
}

pub fn reshape(node: &Node) -> Built {
    if node.opset < 5 {
        return Err(format!("opset {} (shape as an attribute)", node.opset));
    }
    Ok(Box::new(Reshape {
        allowzero: node.int_or("allowzero", 0) != 0,
    }))
}

impl Op for Reshape {
    fn run(&self, inputs: &[Option<&Value>]) -> Result<Vec<Value>, String> {
        let x = input(inputs, 0)?;
        let want = dims_arg(input(inputs, 1)?, "the shape")?;
        let mut shape = Vec::with_capacity(want.len());
        let mut infer = None;
        for (i, &d) in want.iter().enumerate() {
            shape.push(match d {
                0 if !self.allowzero => *x.shape.get(i).ok_or("a 0 past the input's rank")?,
                -1 if infer.is_none() => {
                    infer = Some(i);
                    1
                }
                d if d >= 0 => d as usize,
                _ => return Err(format!("shape {want:?} is not valid")),
            });
        }
        if let Some(i) = infer {
            let rest = count(&shape);
            if rest == 0 || x.len() % rest != 0 {
                return Err(format!("cannot reshape {:?} to {want:?}", x.shape));
            }
            shape[i] = x.len() / rest;
        }
        if count(&shape) != x.len() {
            return Err(format!("cannot reshape {:?} to {want:?}", x.shape));
        }
        Ok(vec![Value::new(shape, x.data.clone())])
    }
}

struct Flatten(i64);

pub fn flatten(node: &Node) -> Built {
    Ok(Box::new(Flatten(node.int_or("axis", 1))))
}

impl Op for Flatten {
    fn run(&self, inputs: &[Option<&Value>]) -> Result<Vec<Value>, String> {
        let x = input(inputs, 0)?;
        let r = x.shape.len() as i64;
        let a = if self.0 < 0 { self.0 + r } else { self.0 };
        if !(0..=r).contains(&a) {
            return Err(format!("axis {} is out of range for rank {r}", self.0));
        }
        let a = a as usize;
        let shape = vec![count(&x.shape[..a]), count(&x.shape[a..])];
        Ok(vec![Value::new(shape, x.data.clone())])
    }
}

struct Concat(i64);

pub fn concat(node: &Node) -> Built {
    Ok(Box::new(Concat(
        node.int("axis").ok_or("attribute 'axis' is missing")?,
    )))
}

impl Op for Concat {
    fn run(&self, inputs: &[Option<&Value>]) -> Result<Vec<Value>, String> {
        let parts: Vec<&Value> = inputs.iter().flatten().copied().collect();
        let first = *parts.first().ok_or("no inputs")?;
        let rank = first.shape.len();
        let ax = axis(self.0, rank)?;
        let mut shape = first.shape.clone();
        shape[ax] = 0;
        for p in &parts {
            let same = p.shape.len() == rank
                && p.shape
                    .iter()
                    .enumerate()
                    .all(|(i, &d)| i == ax || d == first.shape[i]);
            if !same || p.datum() != first.datum() {
                return Err(format!(
                    "{}{:?} cannot be concatenated with {}{:?} on axis {ax}",
                    p.datum(),
                    p.shape,
                    first.datum(),
                    first.shape
                ));
            }
            shape[ax] += p.shape[ax];
        }
        let outer = count(&first.shape[..ax]);
        let inners: Vec<usize> = parts.iter().map(|p| count(&p.shape[ax..])).collect();
        let data = map_each!(&first.data, _f => {
            let mut out = Vec::with_capacity(count(&shape));
            for o in 0..outer {
                for (p, &inner) in parts.iter().zip(&inners) {
                    let v = same_variant(&p.data, _f);
                    out.extend_from_slice(&v[o * inner..(o + 1) * inner]);
                }
            }
            out
        });
        Ok(vec![Value::new(shape, data)])
    }
}

/// `data`'s elements as the same element type as `like` (checked by the caller).
fn same_variant<'a, T: 'static>(data: &'a Data, _like: &[T]) -> &'a [T] {
    let any: &dyn std::any::Any = match data {
        Data::F32(v) => v,
        Data::F64(v) => v,
        Data::F16(v) => v,
        Data::I8(v) => v,
        Data::I16(v) => v,
        Data::I32(v) => v,
        Data::I64(v) => v,
        Data::U8(v) => v,
        Data::U16(v) => v,
        Data::U32(v) => v,
        Data::U64(v) => v,
        Data::Bool(v) => v,
    };
    any.downcast_ref::<Vec<T>>().expect("operands of one type")
}

/// Axes from the attribute (before opset 13) or the second input.
fn axes(attr: &Option<Vec<i64>>, inputs: &[Option<&Value>]) -> Result<Option<Vec<i64>>, String> {
    match inputs.get(1).copied().flatten() {
        Some(v) => dims_arg(v, "the axes").map(Some),
        None => Ok(attr.clone()),
    }
}

struct Squeeze(Option<Vec<i64>>);

pub fn squeeze(node: &Node) -> Built {
    Ok(Box::new(Squeeze(if node.opset < 13 {
        node.ints("axes")
    } else {
        None
    })))
}

impl Op for Squeeze {
    fn run(&self, inputs: &[Option<&Value>]) -> Result<Vec<Value>, String> {
        let x = input(inputs, 0)?;
        let rank = x.shape.len();
        let shape = match axes(&self.0, inputs)? {
            None => x.shape.iter().copied().filter(|&d| d != 1).collect(),
            Some(a) => {
                let a: Vec<usize> = a.iter().map(|&a| axis(a, rank)).collect::<Result<_, _>>()?;
                if let Some(&bad) = a.iter().find(|&&i| x.shape[i] != 1) {
                    return Err(format!("axis {bad} of {:?} is not 1", x.shape));
                }
                (0..rank)
                    .filter(|i| !a.contains(i))
                    .map(|i| x.shape[i])
                    .collect()
            }
        };
        Ok(vec![Value::new(shape, x.data.clone())])
    }
}

struct Unsqueeze(Option<Vec<i64>>);

pub fn unsqueeze(node: &Node) -> Built {
    Ok(Box::new(Unsqueeze(if node.opset < 13 {
        node.ints("axes")
    } else {
        None
    })))
}

impl Op for Unsqueeze {
    fn run(&self, inputs: &[Option<&Value>]) -> Result<Vec<Value>, String> {
        let x = input(inputs, 0)?;
        let a = axes(&self.0, inputs)?.ok_or("no axes")?;
        let rank = x.shape.len() + a.len();
        let mut a: Vec<usize> = a.iter().map(|&a| axis(a, rank)).collect::<Result<_, _>>()?;
        a.sort_unstable();
        if a.windows(2).any(|w| w[0] == w[1]) {
            return Err("an axis given twice".into());
        }
        let mut dims = x.shape.iter();
        let shape = (0..rank)
            .map(|i| {
                if a.contains(&i) {
                    1
                } else {
                    *dims.next().expect("rank adds up")
                }
            })
            .collect();
        Ok(vec![Value::new(shape, x.data.clone())])
    }
}

struct ArgMax {
    axis: i64,
    keepdims: bool,
    last: bool,
}

pub fn argmax(node: &Node) -> Built {
    Ok(Box::new(ArgMax {
        axis: node.int_or("axis", 0),
        keepdims: node.int_or("keepdims", 1) != 0,
        last: node.int_or("select_last_index", 0) != 0,
    }))
}

fn argmax_of<T: PartialOrd + Copy>(v: &[T], shape: &[usize], ax: usize, last: bool) -> Vec<i64> {
    let (outer, n, inner) = (count(&shape[..ax]), shape[ax], count(&shape[ax + 1..]));
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| v[(o * n + k) * inner + i];
            let mut best = 0;
            for k in 1..n {
                if at(k) > at(best) || (last && at(k) == at(best)) {
                    best = k;
                }
            }
            out.push(best as i64);
        }
    }
    out
}

impl Op for ArgMax {
    fn run(&self, inputs: &[Option<&Value>]) -> Result<Vec<Value>, String> {
        let x = input(inputs, 0)?;
        let ax = axis(self.axis, x.shape.len())?;
        if x.shape.get(ax) == Some(&0) {
            return Err("ArgMax over an empty axis".into());
        }
        let (s, l) = (&x.shape, self.last);
        let idx = match &x.data {
            Data::F32(v) => argmax_of(v, s, ax, l),
            Data::F64(v) => argmax_of(v, s, ax, l),
            Data::F16(_) => argmax_of(&f32s(x), s, ax, l),
            Data::I32(v) => argmax_of(v, s, ax, l),
            Data::I64(v) => argmax_of(v, s, ax, l),
            Data::U8(v) => argmax_of(v, s, ax, l),
            d => return Err(format!("{} elements are not supported", d.datum())),
        };
        let mut shape = x.shape.clone();
        if self.keepdims {
            shape[ax] = 1;
        } else {
            shape.remove(ax);
        }
        Ok(vec![Value::new(shape, Data::I64(idx))])
    }
}

struct Softmax {
    axis: i64,
    /// Before opset 13: over the input coerced to 2-D at `axis`.
    coerced: bool,
}

pub fn softmax(node: &Node) -> Built {
    let coerced = node.opset < 13;
    Ok(Box::new(Softmax {
        axis: node.int_or("axis", if coerced { 1 } else { -1 }),
        coerced,
    }))
}

/// Softmax over `n` elements `inner` apart, in each of `outer` blocks.
pub fn softmax_in_place<T: num::Float>(v: &mut [T], outer: usize, n: usize, inner: usize) {
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * n + k) * inner + i;
            let max = (0..n).map(|k| v[at(k)]).fold(T::NEG_INFINITY, T::max);
            let mut sum = T::ZERO;
            for k in 0..n {
                let e = (v[at(k)] - max).exp();
                v[at(k)] = e;
                sum = sum + e;
            }
            for k in 0..n {
                v[at(k)] = v[at(k)] / sum;
            }
        }
    }
}

impl Op for Softmax {
    fn run(&self, inputs: &[Option<&Value>]) -> Result<Vec<Value>, String> {
        let x = input(inputs, 0)?;
        let s = &x.shape;
        let ax = axis(self.axis, s.len())?;
        let (outer, n, inner) = if self.coerced {
            (count(&s[..ax]), count(&s[ax..]), 1)
        } else {
            (count(&s[..ax]), s[ax], count(&s[ax + 1..]))
        };
        let data = match &x.data {
            Data::F32(v) => {
                let mut v = v.clone();
                softmax_in_place(&mut v, outer, n, inner);
                Data::F32(v)
            }
            Data::F64(v) => {
                let mut v = v.clone();
                softmax_in_place(&mut v, outer, n, inner);
                Data::F64(v)
            }
            Data::F16(_) => {
                let mut v = f32s(x);
                softmax_in_place(&mut v, outer, n, inner);
                Data::F32(v).cast(Datum::F16).expect("f32 casts to f16")
            }
            d => return Err(format!("{} elements are not supported", d.datum())),
        };
        Ok(vec![Value::new(s.clone(), data)])
    }
}

/// The float types' math, for operators generic over f32 and f64.
pub mod num {
    pub trait Float:
        Copy
        + PartialOrd
        + std::ops::Add<Output = Self>
        + std::ops::Sub<Output = Self>
        + std::ops::Mul<Output = Self>
        + std::ops::Div<Output = Self>
        + std::ops::Neg<Output = Self>
    {
        const ZERO: Self;
        const ONE: Self;
        const NEG_INFINITY: Self;
        fn exp(self) -> Self;
        fn max(self, other: Self) -> Self;
        fn from_f64(v: f64) -> Self;
    }

    macro_rules! float {
        ($t:ty) => {
            impl Float for $t {
                const ZERO: Self = 0.0;
                const ONE: Self = 1.0;
                const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
                fn exp(self) -> Self {
                    <$t>::exp(self)
                }
                fn max(self, other: Self) -> Self {
                    <$t>::max(self, other)
                }
                fn from_f64(v: f64) -> Self {
                    v as $t
                }
            }
        };
    }
    float!(f32);
    float!(f64);
}
