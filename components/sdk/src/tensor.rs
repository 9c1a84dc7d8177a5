//! Typed tensors: dimensions, an element type and little-endian bytes, as
//! `wasi:nn` carries them, checked on the way in and on the way out.

use crate::Error;

/// The element types the SDK handles (a subset of `wasi:nn`'s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementType {
    F32,
    I32,
    I64,
    U8,
}

impl ElementType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            ElementType::F32 | ElementType::I32 => 4,
            ElementType::I64 => 8,
            ElementType::U8 => 1,
        }
    }
}

/// A Rust type that is a tensor element: `f32`, `i32`, `i64` or `u8`.
pub trait Element: Copy + Sized + sealed::Plain {
    const TYPE: ElementType;
}

mod sealed {
    /// Only plain numbers: no padding, and every bit pattern is a value. The
    /// byte copies in [`super::to_le`] and [`super::from_le`] rely on it.
    pub trait Plain {}
}

macro_rules! element {
    ($t:ty, $e:ident) => {
        impl sealed::Plain for $t {}
        impl Element for $t {
            const TYPE: ElementType = ElementType::$e;
        }
    };
}
element!(f32, F32);
element!(i32, I32);
element!(i64, I64);
element!(u8, U8);

// Whole slices in one copy. An element at a time, the loop was not inlined
// at the component profile's opt-level "s" and cost 0.5 ms for a
// 128×128×3 image tensor in Wasm, half as long as the model it fed.
// `wasi:nn` tensors are little-endian, as Wasm and every device target are.
#[cfg(target_endian = "big")]
compile_error!("verge-sdk copies tensor bytes as they lie in memory: little-endian targets only");

/// The little-endian bytes of `values`, in order.
fn to_le<T: Element>(values: &[T]) -> Vec<u8> {
    // SAFETY: `T` is a plain number (sealed), so its memory is its
    // little-endian bytes, with no padding.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), size_of_val(values)) }
        .to_vec()
}

/// The elements of little-endian `bytes` (whole elements; a partial one at
/// the end is left out).
fn from_le<T: Element>(bytes: &[u8]) -> Vec<T> {
    let n = bytes.len() / size_of::<T>();
    let mut out = Vec::<T>::with_capacity(n);
    // SAFETY: the destination has room for `n` elements, every bit pattern
    // of a plain number is a value, and `set_len` follows the copy.
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            out.as_mut_ptr().cast::<u8>(),
            n * size_of::<T>(),
        );
        out.set_len(n);
    }
    out
}

/// A tensor whose byte length always matches its dimensions and type.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    dims: Vec<u32>,
    ty: ElementType,
    data: Vec<u8>,
}

fn count(dims: &[u32]) -> Result<usize, Error> {
    dims.iter().try_fold(1usize, |n, &d| {
        n.checked_mul(d as usize)
            .ok_or_else(|| Error::internal(format!("tensor dimensions {dims:?} overflow")))
    })
}

impl Tensor {
    /// A tensor of `values` with dimensions `dims` (row-major).
    pub fn new<T: Element>(dims: &[u32], values: &[T]) -> Result<Tensor, Error> {
        let n = count(dims)?;
        if n != values.len() {
            return Err(Error::internal(format!(
                "tensor dimensions {dims:?} hold {n} elements, {} given",
                values.len()
            )));
        }
        Ok(Tensor {
            dims: dims.to_vec(),
            ty: T::TYPE,
            data: to_le(values),
        })
    }

    /// A tensor from raw little-endian bytes, as `wasi:nn` returns them.
    pub fn from_bytes(dims: &[u32], ty: ElementType, data: Vec<u8>) -> Result<Tensor, Error> {
        let n = count(dims)?;
        if n.checked_mul(ty.size()) != Some(data.len()) {
            return Err(Error::model(format!(
                "a {ty:?} tensor of dimensions {dims:?} needs {} bytes, got {}",
                n * ty.size(),
                data.len()
            )));
        }
        Ok(Tensor {
            dims: dims.to_vec(),
            ty,
            data,
        })
    }

    pub fn dims(&self) -> &[u32] {
        &self.dims
    }

    pub fn element_type(&self) -> ElementType {
        self.ty
    }

    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    pub fn len(&self) -> usize {
        self.data.len() / self.ty.size()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The elements, if they are of type `T`.
    pub fn values<T: Element>(&self) -> Result<Vec<T>, Error> {
        if self.ty != T::TYPE {
            return Err(Error::model(format!(
                "expected a {:?} tensor, the model gave {:?}",
                T::TYPE,
                self.ty
            )));
        }
        Ok(from_le(&self.data))
    }

    /// Checks the dimensions against `expected`, where `None` matches any size.
    pub fn expect_dims(&self, expected: &[Option<u32>]) -> Result<&Tensor, Error> {
        let ok = self.dims.len() == expected.len()
            && self
                .dims
                .iter()
                .zip(expected)
                .all(|(d, e)| e.is_none_or(|e| e == *d));
        if ok {
            Ok(self)
        } else {
            let want: Vec<String> = expected
                .iter()
                .map(|e| e.map_or("?".into(), |e| e.to_string()))
                .collect();
            Err(Error::model(format!(
                "expected a tensor of dimensions [{}], the model gave {:?}",
                want.join(", "),
                self.dims
            )))
        }
    }
}

#[cfg(target_arch = "wasm32")]
mod wit {
    use super::{ElementType, Tensor};
    use crate::Error;
    use crate::bindings::wasi::nn::tensor::{Tensor as NnTensor, TensorType};

    impl Tensor {
        pub(crate) fn to_nn(&self) -> NnTensor {
            let ty = match self.ty {
                ElementType::F32 => TensorType::Fp32,
                ElementType::I32 => TensorType::I32,
                ElementType::I64 => TensorType::I64,
                ElementType::U8 => TensorType::U8,
            };
            NnTensor::new(&self.dims, ty, &self.data)
        }

        pub(crate) fn from_nn(t: &NnTensor) -> Result<Tensor, Error> {
            let ty = match t.ty() {
                TensorType::Fp32 => ElementType::F32,
                TensorType::I32 => ElementType::I32,
                TensorType::I64 => ElementType::I64,
                TensorType::U8 => ElementType::U8,
                other => {
                    return Err(Error::model(format!(
                        "the model gave a {other:?} tensor; the SDK reads f32, i32, i64 and u8"
                    )));
                }
            };
            Tensor::from_bytes(&t.dimensions(), ty, t.data())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_little_endian() {
        let t = Tensor::new(&[2, 2], &[1.5f32, -2.0, 0.0, 3.25]).unwrap();
        assert_eq!(t.element_type(), ElementType::F32);
        assert_eq!(&t.bytes()[..4], &1.5f32.to_le_bytes());
        assert_eq!(t.values::<f32>().unwrap(), vec![1.5, -2.0, 0.0, 3.25]);
        assert_eq!(t.len(), 4);

        let t = Tensor::new(&[1, 3], &[1i64, -1, i64::MAX]).unwrap();
        assert_eq!(t.bytes().len(), 24);
        assert_eq!(&t.bytes()[8..16], &[0xff; 8]);
        assert_eq!(t.values::<i64>().unwrap(), vec![1, -1, i64::MAX]);

        let t = Tensor::new(&[3], &[7i32, 8, 9]).unwrap();
        assert_eq!(t.values::<i32>().unwrap(), vec![7, 8, 9]);
        let t = Tensor::new(&[2], &[0u8, 255]).unwrap();
        assert_eq!(t.bytes(), &[0, 255]);
    }

    #[test]
    fn shape_and_type_are_checked() {
        assert!(matches!(
            Tensor::new(&[2, 3], &[0f32; 5]),
            Err(Error::Internal(m)) if m.contains("hold 6 elements, 5 given")
        ));
        assert!(Tensor::new(&[u32::MAX, u32::MAX, u32::MAX], &[0u8]).is_err());
        let t = Tensor::new(&[1, 2], &[1f32, 2.0]).unwrap();
        assert!(matches!(t.values::<i64>(), Err(Error::Model(m)) if m.contains("I64")));
        assert!(t.expect_dims(&[Some(1), None]).is_ok());
        assert!(t.expect_dims(&[Some(1), Some(3)]).is_err());
        assert!(
            matches!(t.expect_dims(&[None]), Err(Error::Model(m)) if m.contains("[?]") && m.contains("[1, 2]"))
        );
        assert!(Tensor::from_bytes(&[2], ElementType::I64, vec![0; 16]).is_ok());
        assert!(matches!(
            Tensor::from_bytes(&[2], ElementType::I64, vec![0; 15]),
            Err(Error::Model(m)) if m.contains("needs 16 bytes, got 15")
        ));
        // A scalar holds one element.
        assert_eq!(Tensor::new::<f32>(&[], &[1.0]).unwrap().len(), 1);
    }
}
