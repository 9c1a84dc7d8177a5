//! MatMul and Gemm, on f32 and f64.

use super::core::{broadcast, f32s, num::Float, offsets};
use super::{Built, Node, Op, count, input};
use crate::value::{Data, Value};
use verge_nn::Datum;

/// c[m, n] += a[m, k] · b[k, n], row-major, with element strides for a
/// transposed operand: `a[i, p]` is at `i * a_rs + p * a_cs`.
#[allow(clippy::too_many_arguments)]
fn gemm_kernel<T: Float>(
    a: &[T],
    (a_rs, a_cs): (usize, usize),
    b: &[T],
    (b_rs, b_cs): (usize, usize),
    c: &mut [T],
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
) {
    for i in 0..m {
        let row = &mut c[i * n..(i + 1) * n];
        for p in 0..k {
            let x = alpha * a[i * a_rs + p * a_cs];
            if b_cs == 1 {
                let brow = &b[p * b_rs..p * b_rs + n];
                for (cj, &bj) in row.iter_mut().zip(brow) {
                    *cj = *cj + x * bj;
                }
            } else {
                for (j, cj) in row.iter_mut().enumerate() {
                    *cj = *cj + x * b[p * b_rs + j * b_cs];
                }
            }
        }
    }
}

/// At most this many elements in a product's result: an empty inner
/// dimension must not turn small operands into a huge allocation.
pub const MAX_ELEMENTS: usize = 1 << 28;

fn output_size(dims: &[usize]) -> Result<usize, String> {
    dims.iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| format!("a result of {dims:?} elements is over the engine's {MAX_ELEMENTS}"))
}

struct MatMul;

pub fn matmul(_: &Node) -> Built {
    Ok(Box::new(MatMul))
}

fn matmul_of<T: Float>(
    a: &[T],
    sa: &[usize],
    b: &[T],
    sb: &[usize],
) -> Result<(Vec<usize>, Vec<T>), String> {
    // numpy: a 1-D operand gains a dimension that the result then drops.
    let (mut sa2, mut sb2) = (sa.to_vec(), sb.to_vec());
    if sa.len() == 1 {
        sa2.insert(0, 1);
    }
    if sb.len() == 1 {
        sb2.push(1);
    }
    if sa.is_empty() || sb.is_empty() {
        return Err("MatMul of a scalar".into());
    }
    let (m, k) = (sa2[sa2.len() - 2], sa2[sa2.len() - 1]);
    let (k2, n) = (sb2[sb2.len() - 2], sb2[sb2.len() - 1]);
    if k != k2 {
        return Err(format!("shapes {sa:?} and {sb:?} do not multiply"));
    }
    let (ba, bb) = (&sa2[..sa2.len() - 2], &sb2[..sb2.len() - 2]);
    let batch = broadcast(ba, bb)?;
    let (oa, ob) = (offsets(ba, &batch), offsets(bb, &batch));
    let mut out = vec![T::ZERO; output_size(&[count(&batch), m, n])?];
    for (i, (&ia, &ib)) in oa.iter().zip(&ob).enumerate() {
        gemm_kernel(
            &a[ia * m * k..(ia + 1) * m * k],
            (k, 1),
            &b[ib * k * n..(ib + 1) * k * n],
            (n, 1),
            &mut out[i * m * n..(i + 1) * m * n],
            m,
            k,
            n,
            T::ONE,
        );
    }
    let mut shape = batch;
    if sa.len() > 1 {
        shape.push(m);
    }
    if sb.len() > 1 {
        shape.push(n);
    }
    Ok((shape, out))
}

impl Op for MatMul {
    fn run(&self, inputs: &[Option<&Value>]) -> Result<Vec<Value>, String> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
        let (shape, data) = match (&a.data, &b.data) {
            (Data::F32(x), Data::F32(y)) => {
                let (s, v) = matmul_of(x, &a.shape, y, &b.shape)?;
                (s, Data::F32(v))
            }
            (Data::F64(x), Data::F64(y)) => {
                let (s, v) = matmul_of(x, &a.shape, y, &b.shape)?;
                (s, Data::F64(v))
            }
            (Data::F16(_), Data::F16(_)) => {
                let (s, v) = matmul_of(&f32s(a), &a.shape, &f32s(b), &b.shape)?;
                (s, Data::F32(v).cast(Datum::F16).expect("f32 casts to f16"))
            }
            (x, y) => {
                return Err(format!(
                    "MatMul of {} and {} is not supported",
                    x.datum(),
                    y.datum()
                ));
            }
        };
        Ok(vec![Value::new(shape, data)])
    }
}

struct Gemm {
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
}

pub fn gemm(node: &Node) -> Built {
    if node.opset < 7 {
        return Err(format!("opset {} (broadcast attribute)", node.opset));
    }
    Ok(Box::new(Gemm {
        alpha: node.float("alpha").unwrap_or(1.0),
        beta: node.float("beta").unwrap_or(1.0),
        trans_a: node.int_or("transA", 0) != 0,
        trans_b: node.int_or("transB", 0) != 0,
    }))
}

impl Gemm {
    fn of<T: Float>(
        &self,
        a: &[T],
        sa: &[usize],
        b: &[T],
        sb: &[usize],
        c: Option<(&[T], &[usize])>,
    ) -> Result<Vec<T>, String> {
        if sa.len() != 2 || sb.len() != 2 {
            return Err(format!("Gemm of {sa:?} and {sb:?}: both must be 2-D"));
        }
        let (m, k) = if self.trans_a {
            (sa[1], sa[0])
        } else {
            (sa[0], sa[1])
        };
        let (k2, n) = if self.trans_b {
            (sb[1], sb[0])
        } else {
            (sb[0], sb[1])
        };
        if k != k2 {
            return Err(format!(
                "Gemm of {sa:?} and {sb:?} (transA {}, transB {}): inner dimensions differ",
                self.trans_a, self.trans_b
            ));
        }
        output_size(&[m, n])?;
        let mut out = match c {
            Some((c, sc)) => {
                let shape = broadcast(sc, &[m, n])?;
                if shape != [m, n] {
                    return Err(format!("C {sc:?} does not broadcast to [{m}, {n}]"));
                }
                let beta = T::from_f64(self.beta.into());
                offsets(sc, &[m, n])
                    .into_iter()
                    .map(|i| beta * c[i])
                    .collect()
            }
            None => vec![T::ZERO; output_size(&[m, n])?],
        };
        let a_strides = if self.trans_a { (1, m) } else { (k, 1) };
        let b_strides = if self.trans_b { (1, k) } else { (n, 1) };
        gemm_kernel(
            a,
            a_strides,
            b,
            b_strides,
            &mut out,
            m,
            k,
            n,
            T::from_f64(self.alpha.into()),
        );
        Ok(out)
    }
}

impl Op for Gemm {
    fn run(&self, inputs: &[Option<&Value>]) -> Result<Vec<Value>, String> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
        let c = inputs.get(2).copied().flatten();
        let m = if self.trans_a {
            a.shape.get(1)
        } else {
            a.shape.first()
        };
        let n = if self.trans_b {
            b.shape.first()
        } else {
            b.shape.get(1)
        };
        let shape = vec![*m.unwrap_or(&0), *n.unwrap_or(&0)];
        let data = match (&a.data, &b.data, c.map(|c| &c.data)) {
            (Data::F32(x), Data::F32(y), None) => {
                Data::F32(self.of(x, &a.shape, y, &b.shape, None)?)
            }
            (Data::F32(x), Data::F32(y), Some(Data::F32(z))) => {
                Data::F32(self.of(x, &a.shape, y, &b.shape, Some((z, &c.expect("set").shape)))?)
            }
            (Data::F64(x), Data::F64(y), None) => {
                Data::F64(self.of(x, &a.shape, y, &b.shape, None)?)
            }
            (Data::F64(x), Data::F64(y), Some(Data::F64(z))) => {
                Data::F64(self.of(x, &a.shape, y, &b.shape, Some((z, &c.expect("set").shape)))?)
            }
            (x, y, _) => {
                return Err(format!(
                    "Gemm of {} and {} is not supported",
                    x.datum(),
                    y.datum()
                ));
            }
        };
        Ok(vec![Value::new(shape, data)])
    }
}
