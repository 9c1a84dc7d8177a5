//! Element types and tensors as `wasi:nn` carries them, and what engines compute.

use std::fmt;

use crate::{NnError, Result};

/// `wasi:nn/tensor.tensor-type`: the element types a component can hand in
/// and get back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElementType {
    F16,
    F32,
    F64,
    Bf16,
    U8,
    I32,
    I64,
}

impl ElementType {
    pub const ALL: [ElementType; 7] = [
        ElementType::F16,
        ElementType::F32,
        ElementType::F64,
        ElementType::Bf16,
        ElementType::U8,
        ElementType::I32,
        ElementType::I64,
    ];

    /// Bytes per element.
    pub fn size(self) -> usize {
        Datum::from(self).size().expect("wasi:nn types have a size")
    }

    /// The name `wasi:nn` gives it (`fp32`, `i64`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ElementType::F16 => "fp16",
            ElementType::F32 => "fp32",
            ElementType::F64 => "fp64",
            ElementType::Bf16 => "bf16",
            ElementType::U8 => "u8",
            ElementType::I32 => "i32",
            ElementType::I64 => "i64",
        }
    }

    pub fn parse(s: &str) -> Option<ElementType> {
        ElementType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// `element_type(t)` and `tensor_type(t)`: conversions between [`ElementType`]
/// and a generated `wasi:nn` `tensor-type` enum (wit-bindgen's or wasmtime's;
/// every binding names the variants alike). `$t` is that enum, in scope.
#[macro_export]
macro_rules! tensor_type_conversions {
    ($t:ident) => {
        fn element_type(t: $t) -> $crate::ElementType {
            match t {
                $t::Fp16 => $crate::ElementType::F16,
                $t::Fp32 => $crate::ElementType::F32,
                $t::Fp64 => $crate::ElementType::F64,
                $t::Bf16 => $crate::ElementType::Bf16,
                $t::U8 => $crate::ElementType::U8,
                $t::I32 => $crate::ElementType::I32,
                $t::I64 => $crate::ElementType::I64,
            }
        }

        #[allow(dead_code)]
        fn tensor_type(t: $crate::ElementType) -> $t {
            match t {
                $crate::ElementType::F16 => $t::Fp16,
                $crate::ElementType::F32 => $t::Fp32,
                $crate::ElementType::F64 => $t::Fp64,
                $crate::ElementType::Bf16 => $t::Bf16,
                $crate::ElementType::U8 => $t::U8,
                $crate::ElementType::I32 => $t::I32,
                $crate::ElementType::I64 => $t::I64,
            }
        }
    };
}

impl fmt::Display for ElementType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An element type as a model declares it or an engine computes it: the
/// `wasi:nn` types and the others ONNX has. Outputs of `bool`, `i8`, `i16`
/// and `u16` widen losslessly to `i32`, and `u32` to `i64`; the rest cannot
/// cross to a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Datum {
    Bool,
    U8,
    I8,
    U16,
    I16,
    I32,
    U32,
    I64,
    U64,
    F16,
    Bf16,
    F32,
    F64,
    String,
    Complex64,
    Complex128,
    /// An 8-bit float, 4-bit integer or any other type without a `wasi:nn` equivalent.
    Other,
    /// Not a tensor at all (a sequence, a map, an optional).
    NotATensor,
}

impl Datum {
    /// The type ONNX's `TensorProto.DataType` code stands for.
    pub fn from_onnx(code: i32) -> Datum {
        match code {
            1 => Datum::F32,
            2 => Datum::U8,
            3 => Datum::I8,
            4 => Datum::U16,
            5 => Datum::I16,
            6 => Datum::I32,
            7 => Datum::I64,
            8 => Datum::String,
            9 => Datum::Bool,
            10 => Datum::F16,
            11 => Datum::F64,
            12 => Datum::U32,
            13 => Datum::U64,
            14 => Datum::Complex64,
            15 => Datum::Complex128,
            16 => Datum::Bf16,
            _ => Datum::Other,
        }
    }

    /// ONNX's `TensorProto.DataType` code for it (0 for the types ONNX does not name here).
    pub fn onnx(self) -> i32 {
        match self {
            Datum::F32 => 1,
            Datum::U8 => 2,
            Datum::I8 => 3,
            Datum::U16 => 4,
            Datum::I16 => 5,
            Datum::I32 => 6,
            Datum::I64 => 7,
            Datum::String => 8,
            Datum::Bool => 9,
            Datum::F16 => 10,
            Datum::F64 => 11,
            Datum::U32 => 12,
            Datum::U64 => 13,
            Datum::Complex64 => 14,
            Datum::Complex128 => 15,
            Datum::Bf16 => 16,
            Datum::Other | Datum::NotATensor => 0,
        }
    }

    /// Bytes per element, for fixed-size numeric types.
    pub fn size(self) -> Option<usize> {
        Some(match self {
            Datum::Bool | Datum::U8 | Datum::I8 => 1,
            Datum::U16 | Datum::I16 | Datum::F16 | Datum::Bf16 => 2,
            Datum::I32 | Datum::U32 | Datum::F32 => 4,
            Datum::I64 | Datum::U64 | Datum::F64 | Datum::Complex64 => 8,
            Datum::Complex128 => 16,
            Datum::String | Datum::Other | Datum::NotATensor => return None,
        })
    }

    /// The `wasi:nn` type that carries this one as it is.
    pub fn carried(self) -> Option<ElementType> {
        Some(match self {
            Datum::F16 => ElementType::F16,
            Datum::F32 => ElementType::F32,
            Datum::F64 => ElementType::F64,
            Datum::Bf16 => ElementType::Bf16,
            Datum::U8 => ElementType::U8,
            Datum::I32 => ElementType::I32,
            Datum::I64 => ElementType::I64,
            _ => return None,
        })
    }

    /// The `wasi:nn` type an output of this type reaches a component as:
    /// itself, or a lossless widening.
    pub fn as_output(self) -> Option<ElementType> {
        self.carried().or(match self {
            Datum::Bool | Datum::I8 | Datum::I16 | Datum::U16 => Some(ElementType::I32),
            Datum::U32 => Some(ElementType::I64),
            _ => None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Datum::Bool => "bool",
            Datum::I8 => "i8",
            Datum::U16 => "u16",
            Datum::I16 => "i16",
            Datum::U32 => "u32",
            Datum::U64 => "u64",
            Datum::String => "string",
            Datum::Complex64 => "complex64",
            Datum::Complex128 => "complex128",
            Datum::Other => "an unsupported type",
            Datum::NotATensor => "not a tensor",
            other => other
                .carried()
                .expect("the rest are wasi:nn types")
                .as_str(),
        }
    }
}

impl From<ElementType> for Datum {
    fn from(t: ElementType) -> Datum {
        match t {
            ElementType::F16 => Datum::F16,
            ElementType::F32 => Datum::F32,
            ElementType::F64 => Datum::F64,
            ElementType::Bf16 => Datum::Bf16,
            ElementType::U8 => Datum::U8,
            ElementType::I32 => Datum::I32,
            ElementType::I64 => Datum::I64,
        }
    }
}

impl fmt::Display for Datum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tensor as `wasi:nn` carries it: dimensions, an element type and
/// little-endian element bytes, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub dims: Vec<u32>,
    pub ty: ElementType,
    pub data: Vec<u8>,
}

impl Tensor {
    pub fn new(dims: Vec<u32>, ty: ElementType, data: Vec<u8>) -> Self {
        Tensor { dims, ty, data }
    }

    /// How many elements the dimensions make, if that fits in memory.
    pub fn count(&self) -> Option<usize> {
        element_count(&self.dims)
    }

    /// `fp32[1, 3]`
    pub fn describe(&self) -> String {
        format!("{}{}", self.ty, dims_text(&self.dims))
    }
}

/// An output as an engine computed it, before it is widened for `wasi:nn`.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    pub dims: Vec<u32>,
    pub datum: Datum,
    /// Little-endian element bytes (booleans as one byte, 0 or 1).
    pub data: Vec<u8>,
}

impl RawTensor {
    pub fn new(dims: Vec<u32>, datum: Datum, data: Vec<u8>) -> Self {
        RawTensor { dims, datum, data }
    }

    /// The tensor a component gets: as it is, or widened losslessly.
    pub(crate) fn into_tensor(self, name: &str) -> Result<Tensor> {
        let Some(ty) = self.datum.as_output() else {
            return Err(NnError::unsupported(format!(
                "output '{name}' is {}, a type wasi:nn cannot carry",
                self.datum
            )));
        };
        let size = self.datum.size().expect("carried types have a size");
        let count = element_count(&self.dims);
        if count.and_then(|c| c.checked_mul(size)) != Some(self.data.len()) {
            return Err(NnError::runtime(format!(
                "the engine returned {} bytes for output '{name}' {}{}",
                self.data.len(),
                self.datum,
                dims_text(&self.dims)
            )));
        }
        if Datum::from(ty) == self.datum {
            return Ok(Tensor::new(self.dims, ty, self.data));
        }
        let mut data = Vec::with_capacity(self.data.len() / size * ty.size());
        macro_rules! widen {
            ($from:ty, $to:ty) => {
                for c in self.data.chunks_exact(size) {
                    let v = <$from>::from_le_bytes(c.try_into().expect("chunks of the size"));
                    data.extend_from_slice(&<$to>::from(v).to_le_bytes());
                }
            };
        }
        match self.datum {
            Datum::Bool => {
                for &b in &self.data {
                    data.extend_from_slice(&i32::from(b != 0).to_le_bytes());
                }
            }
            Datum::I8 => widen!(i8, i32),
            Datum::I16 => widen!(i16, i32),
            Datum::U16 => widen!(u16, i32),
            Datum::U32 => widen!(u32, i64),
            other => unreachable!("{other} is carried as it is"),
        }
        Ok(Tensor::new(self.dims, ty, data))
    }
}

pub(crate) fn element_count(dims: &[u32]) -> Option<usize> {
    dims.iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d as usize))
}

/// `[1, 3]`
pub(crate) fn dims_text(dims: &[u32]) -> String {
    let v: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", v.join(", "))
}
