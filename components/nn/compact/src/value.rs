//! Values the engine computes on: a shape and typed elements.

use half::f16;
use verge_nn::{Datum, RawTensor, Tensor};

use crate::onnx::TensorProto;

/// Elements, row-major. Arithmetic runs on the float and the common integer
/// types; the others (what a Cast may produce) pass through.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// IEEE half floats, as their bits.
    F16(Vec<u16>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    Bool(Vec<bool>),
}

/// `$body` once per variant, with `$v` bound to the elements.
macro_rules! each {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            Data::F32($v) => $body,
            Data::F64($v) => $body,
            Data::F16($v) => $body,
            Data::I8($v) => $body,
            Data::I16($v) => $body,
            Data::I32($v) => $body,
            Data::I64($v) => $body,
            Data::U8($v) => $body,
            Data::U16($v) => $body,
            Data::U32($v) => $body,
            Data::U64($v) => $body,
            Data::Bool($v) => $body,
        }
    };
}

/// Like [`each!`], rebuilding the same variant from `$body`'s vector.
macro_rules! map_each {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            Data::F32($v) => Data::F32($body),
            Data::F64($v) => Data::F64($body),
            Data::F16($v) => Data::F16($body),
            Data::I8($v) => Data::I8($body),
            Data::I16($v) => Data::I16($body),
            Data::I32($v) => Data::I32($body),
            Data::I64($v) => Data::I64($body),
            Data::U8($v) => Data::U8($body),
            Data::U16($v) => Data::U16($body),
            Data::U32($v) => Data::U32($body),
            Data::U64($v) => Data::U64($body),
            Data::Bool($v) => Data::Bool($body),
        }
    };
}

pub(crate) use map_each;

/// An element on its way from one type to another: floats as f64 and
/// integers as i128 hold every value of every type exactly.
#[derive(Clone, Copy)]
enum Scalar {
    F(f64),
    I(i128),
}

impl Data {
    pub fn datum(&self) -> Datum {
        match self {
            Data::F32(_) => Datum::F32,
            Data::F64(_) => Datum::F64,
            Data::F16(_) => Datum::F16,
            Data::I8(_) => Datum::I8,
            Data::I16(_) => Datum::I16,
            Data::I32(_) => Datum::I32,
            Data::I64(_) => Datum::I64,
            Data::U8(_) => Datum::U8,
            Data::U16(_) => Datum::U16,
            Data::U32(_) => Datum::U32,
            Data::U64(_) => Datum::U64,
            Data::Bool(_) => Datum::Bool,
        }
    }

    pub fn len(&self) -> usize {
        each!(self, v => v.len())
    }

    /// The elements at `idx`, in that order.
    pub fn gather(&self, idx: &[usize]) -> Data {
        map_each!(self, v => idx.iter().map(|&i| v[i]).collect())
    }

    fn scalars(&self) -> Vec<Scalar> {
        match self {
            Data::F32(v) => v.iter().map(|&x| Scalar::F(x.into())).collect(),
            Data::F64(v) => v.iter().map(|&x| Scalar::F(x)).collect(),
            Data::F16(v) => v
                .iter()
                .map(|&x| Scalar::F(f16::from_bits(x).to_f64()))
                .collect(),
            Data::I8(v) => v.iter().map(|&x| Scalar::I(x.into())).collect(),
            Data::I16(v) => v.iter().map(|&x| Scalar::I(x.into())).collect(),
            Data::I32(v) => v.iter().map(|&x| Scalar::I(x.into())).collect(),
            Data::I64(v) => v.iter().map(|&x| Scalar::I(x.into())).collect(),
            Data::U8(v) => v.iter().map(|&x| Scalar::I(x.into())).collect(),
            Data::U16(v) => v.iter().map(|&x| Scalar::I(x.into())).collect(),
            Data::U32(v) => v.iter().map(|&x| Scalar::I(x.into())).collect(),
            Data::U64(v) => v.iter().map(|&x| Scalar::I(x.into())).collect(),
            Data::Bool(v) => v.iter().map(|&x| Scalar::I(x.into())).collect(),
        }
    }

    /// ONNX Cast: floats to integers truncate toward zero, integers wrap,
    /// anything non-zero is true.
    pub fn cast(&self, to: Datum) -> Option<Data> {
        if self.datum() == to {
            return Some(self.clone());
        }
        let s = self.scalars();
        macro_rules! to_int {
            ($t:ty) => {
                s.iter()
                    .map(|x| match *x {
                        Scalar::F(f) => f as $t,
                        Scalar::I(i) => i as $t,
                    })
                    .collect()
            };
        }
        let f = |x: &Scalar| match *x {
            Scalar::F(f) => f,
            Scalar::I(i) => i as f64,
        };
        Some(match to {
            // An integer through f64 could round twice (i64 → f64 → f32).
            Datum::F32 => Data::F32(
                s.iter()
                    .map(|x| match *x {
                        Scalar::F(v) => v as f32,
                        Scalar::I(i) => i as f32,
                    })
                    .collect(),
            ),
            Datum::F64 => Data::F64(s.iter().map(f).collect()),
            Datum::F16 => Data::F16(
                s.iter()
                    .map(|x| match *x {
                        Scalar::F(v) => f16::from_f64(v).to_bits(),
                        Scalar::I(i) => f16::from_f32(i as f32).to_bits(),
                    })
                    .collect(),
            ),
            Datum::I8 => Data::I8(to_int!(i8)),
            Datum::I16 => Data::I16(to_int!(i16)),
            Datum::I32 => Data::I32(to_int!(i32)),
            Datum::I64 => Data::I64(to_int!(i64)),
            Datum::U8 => Data::U8(to_int!(u8)),
            Datum::U16 => Data::U16(to_int!(u16)),
            Datum::U32 => Data::U32(to_int!(u32)),
            Datum::U64 => Data::U64(to_int!(u64)),
            Datum::Bool => Data::Bool(
                s.iter()
                    .map(|x| match *x {
                        Scalar::F(v) => v != 0.0,
                        Scalar::I(i) => i != 0,
                    })
                    .collect(),
            ),
            _ => return None,
        })
    }

    /// Every element as f64 (for shape arguments and small attribute tensors).
    pub fn to_f64s(&self) -> Vec<f64> {
        match self.cast(Datum::F64) {
            Some(Data::F64(v)) => v,
            _ => unreachable!("every type casts to f64"),
        }
    }

    pub fn to_i64s(&self) -> Vec<i64> {
        match self.cast(Datum::I64) {
            Some(Data::I64(v)) => v,
            _ => unreachable!("every type casts to i64"),
        }
    }
}

/// Whether the engine can hold elements of this type.
pub fn held(d: Datum) -> bool {
    matches!(
        d,
        Datum::F32
            | Datum::F64
            | Datum::F16
            | Datum::I8
            | Datum::I16
            | Datum::I32
            | Datum::I64
            | Datum::U8
            | Datum::U16
            | Datum::U32
            | Datum::U64
            | Datum::Bool
    )
}

#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    pub shape: Vec<usize>,
    pub data: Data,
}

fn le<const N: usize>(b: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    b.chunks_exact(N)
        .map(|c| c.try_into().expect("chunks of N"))
}

/// Elements from little-endian bytes.
fn from_le(datum: Datum, b: &[u8]) -> Option<Data> {
    if datum.size()? * (b.len() / datum.size()?) != b.len() {
        return None;
    }
    Some(match datum {
        Datum::F32 => Data::F32(le(b).map(f32::from_le_bytes).collect()),
        Datum::F64 => Data::F64(le(b).map(f64::from_le_bytes).collect()),
        Datum::F16 => Data::F16(le(b).map(u16::from_le_bytes).collect()),
        Datum::I8 => Data::I8(b.iter().map(|&x| x as i8).collect()),
        Datum::I16 => Data::I16(le(b).map(i16::from_le_bytes).collect()),
        Datum::I32 => Data::I32(le(b).map(i32::from_le_bytes).collect()),
        Datum::I64 => Data::I64(le(b).map(i64::from_le_bytes).collect()),
        Datum::U8 => Data::U8(b.to_vec()),
        Datum::U16 => Data::U16(le(b).map(u16::from_le_bytes).collect()),
        Datum::U32 => Data::U32(le(b).map(u32::from_le_bytes).collect()),
        Datum::U64 => Data::U64(le(b).map(u64::from_le_bytes).collect()),
        Datum::Bool => Data::Bool(b.iter().map(|&x| x != 0).collect()),
        _ => return None,
    })
}

impl Value {
    pub fn new(shape: Vec<usize>, data: Data) -> Value {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Value { shape, data }
    }

    pub fn scalar_f32(x: f32) -> Value {
        Value::new(vec![], Data::F32(vec![x]))
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn datum(&self) -> Datum {
        self.data.datum()
    }

    /// A tensor a component handed in (already checked against the model's port).
    pub fn from_tensor(t: Tensor) -> Option<Value> {
        let data = from_le(Datum::from(t.ty), &t.data)?;
        let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
        (shape.iter().product::<usize>() == data.len()).then(|| Value::new(shape, data))
    }

    /// The tensor handed back, in the engine's type (the core widens).
    pub fn into_raw(self) -> Option<RawTensor> {
        let dims = self
            .shape
            .iter()
            .map(|&d| u32::try_from(d).ok())
            .collect::<Option<Vec<u32>>>()?;
        let datum = self.datum();
        let mut bytes = Vec::with_capacity(self.len() * datum.size().unwrap_or(1));
        macro_rules! le_bytes {
            ($v:expr) => {
                for x in $v {
                    bytes.extend_from_slice(&x.to_le_bytes());
                }
            };
        }
        match &self.data {
            Data::Bool(v) => bytes.extend(v.iter().map(|&b| u8::from(b))),
            Data::I8(v) => bytes.extend(v.iter().map(|&b| b as u8)),
            Data::U8(v) => bytes.extend_from_slice(v),
            Data::F32(v) => le_bytes!(v),
            Data::F64(v) => le_bytes!(v),
            Data::F16(v) | Data::U16(v) => le_bytes!(v),
            Data::I16(v) => le_bytes!(v),
            Data::I32(v) => le_bytes!(v),
            Data::I64(v) => le_bytes!(v),
            Data::U32(v) => le_bytes!(v),
            Data::U64(v) => le_bytes!(v),
        }
        Some(RawTensor::new(dims, datum, bytes))
    }

    /// An initializer or a tensor attribute.
    pub fn from_proto(t: &TensorProto) -> Result<Value, String> {
        let datum = Datum::from_onnx(t.data_type);
        let what = if t.name.is_empty() {
            "a tensor".to_string()
        } else {
            format!("tensor '{}'", t.name)
        };
        if t.external {
            return Err(format!("{what} keeps its data in an external file"));
        }
        if !held(datum) {
            return Err(format!(
                "{what} is {datum}, a type the compact engine does not hold"
            ));
        }
        let shape = t
            .dims
            .iter()
            .map(|&d| usize::try_from(d).ok())
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| format!("{what} has a negative dimension"))?;
        let count = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| format!("{what} is too large"))?;
        let data = if let Some(raw) = &t.raw_data {
            from_le(datum, raw)
        } else {
            match datum {
                Datum::F32 => Some(Data::F32(
                    t.float_data.iter().map(|&b| f32::from_bits(b)).collect(),
                )),
                Datum::F64 => Some(Data::F64(
                    t.double_data.iter().map(|&b| f64::from_bits(b)).collect(),
                )),
                Datum::I64 => Some(Data::I64(t.int64_data.clone())),
                Datum::U32 | Datum::U64 => Data::I64(t.uint64_data.clone()).cast(datum),
                // int32_data carries every narrower type, f16 as its bits.
                Datum::F16 => Some(Data::F16(t.int32_data.iter().map(|&x| x as u16).collect())),
                _ => Data::I64(t.int32_data.clone()).cast(datum),
            }
        }
        .ok_or_else(|| format!("{what}: its bytes do not make {datum} elements"))?;
        if data.len() != count {
            return Err(format!(
                "{what} has {} elements for dims {:?}",
                data.len(),
                t.dims
            ));
        }
        Ok(Value::new(shape, data))
    }
}
