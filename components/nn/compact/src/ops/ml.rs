//! `ai.onnx.ml` operators beside the trees: linear models, scalers,
//! normalizers, feature selection; and the score transforms they share.

use super::{Built, Node, Op, count, input};
use crate::value::{Data, Value};

/// Input features as an `[n, c]` matrix of f32 (rank 1 is one row), the
/// way ONNX Runtime's ML operators read them.
pub fn rows(x: &Value) -> Result<(usize, usize, Vec<f32>), String> {
    let v = match &x.data {
        Data::F32(v) => v.clone(),
        Data::F64(v) => v.iter().map(|&a| a as f32).collect(),
        Data::I64(v) => v.iter().map(|&a| a as f32).collect(),
        Data::I32(v) => v.iter().map(|&a| a as f32).collect(),
        d => return Err(format!("{} features are not supported", d.datum())),
    };
    match x.shape.as_slice() {
        [c] => Ok((1, *c, v)),
        [n, c] => Ok((*n, *c, v)),
        s => Err(format!("features of shape {s:?}: expected [N, C] or [C]")),
    }
}

/// A score transform (`post_transform`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Post {
    None,
    Logistic,
    Softmax,
    SoftmaxZero,
    Probit,
}

impl Post {
    pub fn parse(s: &str) -> Result<Post, String> {
        Ok(match s {
            "NONE" => Post::None,
            "LOGISTIC" => Post::Logistic,
            "SOFTMAX" => Post::Softmax,
            "SOFTMAX_ZERO" => Post::SoftmaxZero,
            "PROBIT" => Post::Probit,
            other => return Err(format!("post_transform '{other}' is not supported")),
        })
    }

    pub fn of(node: &Node) -> Result<Post, String> {
        Post::parse(
            &node
                .string("post_transform")
                .unwrap_or_else(|| "NONE".into()),
        )
    }

    /// Transforms one row of scores in place.
    pub fn apply(self, row: &mut [f32]) {
        match self {
            Post::None => {}
            Post::Logistic => row.iter_mut().for_each(|v| *v = logistic(*v)),
            Post::Probit => row.iter_mut().for_each(|v| *v = probit(*v)),
            Post::Softmax => {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                for v in row.iter_mut() {
                    *v = (*v - max).exp();
                    sum += *v;
                }
                row.iter_mut().for_each(|v| *v /= sum);
            }
            Post::SoftmaxZero => {
                // Zeros stay zero: a class with no score gets no probability.
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                for v in row.iter_mut() {
                    if v.abs() > 1e-7 {
                        *v = (*v - max).exp();
                        sum += *v;
                    } else {
                        *v = 0.0;
                    }
                }
                row.iter_mut().for_each(|v| {
                    if sum != 0.0 {
                        *v /= sum
                    }
                });
            }
        }
    }
}

pub fn logistic(x: f32) -> f32 {
    let v = 1.0 / (1.0 + (-x.abs()).exp());
    if x < 0.0 { 1.0 - v } else { v }
}

/// √2 · erfinv(2x - 1), with the erfinv ONNX Runtime uses (Winitzki's
/// approximation, a = 0.147, in f32), so that PROBIT scores agree with it.
pub fn probit(x: f32) -> f32 {
    std::f32::consts::SQRT_2 * erfinv(2.0 * x - 1.0)
}

fn erfinv(x: f32) -> f32 {
    const A: f32 = 0.147;
    let sign = if x < 0.0 { -1.0 } else { 1.0 };
    let lg = ((1.0 - x) * (1.0 + x)).ln();
    let v = 2.0 / (std::f32::consts::PI * A) + 0.5 * lg;
    sign * (-v + (v * v - lg / A).sqrt()).sqrt()
}

struct Scaler {
    offset: Vec<f32>,
    scale: Vec<f32>,
}

pub fn scaler(node: &Node) -> Built {
    Ok(Box::new(Scaler {
        offset: node.floats("offset").unwrap_or_default(),
        scale: node.floats("scale").unwrap_or_default(),
    }))
}

/// The `j`th of a per-feature list that may also be one value for all.
fn per_feature(list: &[f32], j: usize, default: f32) -> f32 {
    match list.len() {
        0 => default,
        1 => list[0],
        _ => list[j],
    }
}

impl Op for Scaler {
    fn run(&self, inputs: &[Option<&Value>]) -> Result<Vec<Value>, String> {
        let x = input(inputs, 0)?;
        let (_, c, v) = rows(x)?;
        for list in [&self.offset, &self.scale] {
            if list.len() > 1 && list.len() != c {
                return Err(format!("{} offsets or scales for {c} features", list.len()));
            }
        }
        let out = v
            .iter()
            .enumerate()
            .map(|(i, &a)| {
                (a - per_feature(&self.offset, i % c.max(1), 0.0))
                    * per_feature(&self.scale, i % c.max(1), 1.0)
            })
            .collect();
        Ok(vec![Value::new(x.shape.clone(), Data::F32(out))])
    }
}

#[derive(Clone, Copy)]
enum Norm {
    Max,
    L1,
    L2,
}

struct Normalizer(Norm);

pub fn normalizer(node: &Node) -> Built {
    let norm = match node.string("norm").as_deref() {
        Some("MAX") => Norm::Max,
        Some("L1") => Norm::L1,
        Some("L2") => Norm::L2,
        other => return Err(format!("norm {other:?} is not MAX, L1 or L2")),
    };
    Ok(Box::new(Normalizer(norm)))
}

impl Op for Normalizer {
    fn run(&self, inputs: &[Option<&Value>]) -> Result<Vec<Value>, String> {
        let x = input(inputs, 0)?;
        let (_, c, mut v) = rows(x)?;
        for row in v.chunks_mut(c.max(1)) {
            match self.0 {
                Norm::Max | Norm::L1 => {
                    let d = match self.0 {
                        Norm::Max => row.iter().copied().fold(f32::MIN, f32::max),
                        _ => row.iter().map(|a| a.abs()).sum(),
                    };
                    if d != 0.0 {
                        row.iter_mut().for_each(|a| *a /= d);
                    }
                }
                Norm::L2 => {
                    // sign(x) · √(x² / Σx²), ONNX Runtime's form of x / ‖x‖.
                    let sum: f32 = row.iter().map(|a| a * a).sum();
                    if sum != 0.0 {
                        row.iter_mut()
                            .for_each(|a| *a = (*a * *a / sum).sqrt().copysign(*a));
                    }
                }
            }
        }
        Ok(vec![Value::new(x.shape.clone(), Data::F32(v))])
    }
}

struct Binarizer(f32);

pub fn binarizer(node: &Node) -> Built {
    Ok(Box::new(Binarizer(node.float("threshold").unwrap_or(0.0))))
}

impl Op for Binarizer {
    fn run(&self, inputs: &[Option<&Value>]) -> Result<Vec<Value>, String> {
        let x = input(inputs, 0)?;
        let t = self.0;
        let data = match &x.data {
            Data::F32(v) => Data::F32(v.iter().map(|&a| if a > t { 1.0 } else { 0.0 }).collect()),
            Data::F64(v) => Data::F64(
                v.iter()
                    .map(|&a| if a > f64::from(t) { 1.0 } else { 0.0 })
                    .collect(),
            ),
            d => return Err(format!("{} elements are not supported", d.datum())),
        };
        Ok(vec![Value::new(x.shape.clone(), data)])
    }
}

struct ArrayFeatureExtractor;

pub fn array_feature_extractor(_: &Node) -> Built {
    Ok(Box::new(ArrayFeatureExtractor))
}

impl Op for ArrayFeatureExtractor {
    fn run(&self, inputs: &[Option<&Value>]) -> Result<Vec<Value>, String> {
        let x = input(inputs, 0)?;
        let idx = input(inputs, 1)?;
        let Data::I64(idx) = &idx.data else {
            return Err("the indices must be i64".into());
        };
        let c = *x.shape.last().ok_or("a scalar input")?;
        if idx.is_empty() {
            return Err("no indices".into());
        }
        let idx: Vec<usize> = idx
            .iter()
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .filter(|&i| i < c)
                    .ok_or_else(|| format!("index {i} is out of range for {c} features"))
            })
            .collect::<Result<_, _>>()?;
        let outer = count(&x.shape[..x.shape.len() - 1]);
        let picks: Vec<usize> = (0..outer)
            .flat_map(|o| idx.iter().map(move |&i| o * c + i))
            .collect();
        let mut shape = x.shape.clone();
        *shape.last_mut().expect("rank >= 1") = idx.len();
        if shape.len() == 1 {
            shape.insert(0, 1);
        }
        Ok(vec![Value::new(shape, x.data.gather(&picks))])
    }
}

/// scores[n, t] = x[n, :] · coefficients[t, :] + intercepts[t].
fn linear(
    v: &[f32],
    n: usize,
    c: usize,
    coefficients: &[f32],
    intercepts: &[f32],
    targets: usize,
) -> Result<Vec<f32>, String> {
    if coefficients.len() != targets * c {
        return Err(format!(
            "{} coefficients for {targets} targets of {c} features",
            coefficients.len()
        ));
    }
    let mut out = Vec::with_capacity(n * targets);
    for row in v.chunks(c.max(1)).take(n) {
        for t in 0..targets {
            let w = &coefficients[t * c..(t + 1) * c];
            let dot: f32 = row.iter().zip(w).map(|(a, b)| a * b).sum();
            out.push(dot + intercepts.get(t).copied().unwrap_or(0.0));
        }
    }
    Ok(out)
}

struct LinearRegressor {
    coefficients: Vec<f32>,
    intercepts: Vec<f32>,
    targets: usize,
    post: Post,
}

pub fn linear_regressor(node: &Node) -> Built {
    let targets = node.int_or("targets", 1);
    Ok(Box::new(LinearRegressor {
        coefficients: node.floats("coefficients").unwrap_or_default(),
        intercepts: node.floats("intercepts").unwrap_or_default(),
        targets: usize::try_from(targets).map_err(|_| format!("targets = {targets}"))?,
        post: Post::of(node)?,
    }))
}

impl Op for LinearRegressor {
    fn run(&self, inputs: &[Option<&Value>]) -> Result<Vec<Value>, String> {
        let (n, c, v) = rows(input(inputs, 0)?)?;
        // Intercepts count only when there is one per target (ONNX Runtime).
        let intercepts: &[f32] = if self.intercepts.len() == self.targets {
            &self.intercepts
        } else {
            &[]
        };
        let mut y = linear(&v, n, c, &self.coefficients, intercepts, self.targets)?;
        // A single target is transformed only by PROBIT, as ONNX Runtime does.
        if self.targets > 1 || self.post == Post::Probit {
            for row in y.chunks_mut(self.targets.max(1)) {
                self.post.apply(row);
            }
        }
        Ok(vec![Value::new(vec![n, self.targets], Data::F32(y))])
    }
}

struct LinearClassifier {
    coefficients: Vec<f32>,
    intercepts: Vec<f32>,
    labels: Vec<i64>,
    post: Post,
}

pub fn linear_classifier(node: &Node) -> Built {
    if node.strings("classlabels_strings").is_some() {
        return Err("string class labels (classlabels_strings) are not supported".into());
    }
    // ONNX Runtime computes the same with either value.
    let _ = node.int("multi_class");
    let coefficients = node
        .floats("coefficients")
        .ok_or("attribute 'coefficients' is missing")?;
    let intercepts = node
        .floats("intercepts")
        .ok_or("attribute 'intercepts' is missing")?;
    let labels = node
        .ints("classlabels_ints")
        .ok_or("attribute 'classlabels_ints' is missing")?;
    let classes = intercepts.len();
    if classes == 0 || (classes == 1 && labels.len() != 2) || labels.len() < classes {
        return Err(format!(
            "{classes} intercepts for {} class labels",
            labels.len()
        ));
    }
    let post = Post::of(node)?;
    if classes == 1 && post == Post::Probit {
        return Err("post_transform PROBIT with one score per row is not supported".into());
    }
    Ok(Box::new(LinearClassifier {
        coefficients,
        intercepts,
        labels,
        post,
    }))
}

impl Op for LinearClassifier {
    fn run(&self, inputs: &[Option<&Value>]) -> Result<Vec<Value>, String> {
        let (n, c, v) = rows(input(inputs, 0)?)?;
        let targets = self.intercepts.len();
        let scores = linear(&v, n, c, &self.coefficients, &self.intercepts, targets)?;
        let mut labels = Vec::with_capacity(n);
        let mut z = Vec::with_capacity(n * targets.max(2));
        for row in scores.chunks(targets).take(n) {
            if targets == 1 {
                // One score for two classes: positive means the second.
                let s = row[0];
                labels.push(if s > 0.0 {
                    self.labels[1]
                } else {
                    self.labels[0]
                });
                let p = if self.post == Post::Logistic {
                    logistic(s)
                } else {
                    s
                };
                z.extend([1.0 - p, p]);
            } else {
                let best = row
                    .iter()
                    .enumerate()
                    .fold(0, |b, (i, &s)| if s > row[b] { i } else { b });
                labels.push(self.labels[best]);
                let mut r = row.to_vec();
                self.post.apply(&mut r);
                z.extend(r);
            }
        }
        Ok(vec![
            Value::new(vec![n], Data::I64(labels)),
            Value::new(vec![n, targets.max(2)], Data::F32(z)),
        ])
    }
}
