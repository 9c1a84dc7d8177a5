//! Tree ensembles: TreeEnsembleClassifier and TreeEnsembleRegressor
//! (ai.onnx.ml 1 and 3, the list attributes and the `_as_tensor` ones) and
//! TreeEnsemble (ai.onnx.ml 5), all read into one form: trees of branches
//! and leaves, leaves carrying (target, weight) pairs. Scores then follow
//! ONNX Runtime's rules, including its binary-classifier conventions.

use std::collections::HashMap;

use super::ml::{Post, logistic, rows};
use super::{Built, Node, Op, input};
use crate::value::{Data, Value};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
    /// In a set of values (TreeEnsemble 5's BRANCH_MEMBER).
    Member,
}

#[derive(Debug, Clone)]
enum TreeNode {
    Branch {
        feature: usize,
        mode: Mode,
        value: f32,
        /// Member sets, for `Mode::Member`.
        set: Vec<f32>,
        missing_true: bool,
        yes: usize,
        no: usize,
    },
    Leaf {
        weights: Vec<(usize, f32)>,
    },
}

/// All trees, their nodes in one vector; `roots` index into it.
#[derive(Debug, Default)]
struct Forest {
    nodes: Vec<TreeNode>,
    roots: Vec<usize>,
    /// The largest feature index a branch reads, plus one.
    features: usize,
}

impl Forest {
    /// The leaf `x` reaches in the tree at `root` (bounded: a malformed
    /// file's cycle ends in an error, not a hang).
    fn leaf(&self, root: usize, x: &[f32]) -> Result<&[(usize, f32)], String> {
        let mut at = root;
        for _ in 0..=self.nodes.len() {
            match &self.nodes[at] {
                TreeNode::Leaf { weights } => return Ok(weights),
                TreeNode::Branch {
                    feature,
                    mode,
                    value,
                    set,
                    missing_true,
                    yes,
                    no,
                } => {
                    let v = x[*feature];
                    let go = if v.is_nan() {
                        *missing_true
                    } else {
                        match mode {
                            Mode::Leq => v <= *value,
                            Mode::Lt => v < *value,
                            Mode::Gte => v >= *value,
                            Mode::Gt => v > *value,
                            Mode::Eq => v == *value,
                            Mode::Neq => v != *value,
                            Mode::Member => set.contains(&v),
                        }
                    };
                    at = if go { *yes } else { *no };
                }
            }
        }
        Err("a tree has a cycle".into())
    }
}

fn mode(s: &str) -> Result<Option<Mode>, String> {
    Ok(Some(match s {
        "BRANCH_LEQ" => Mode::Leq,
        "BRANCH_LT" => Mode::Lt,
        "BRANCH_GTE" => Mode::Gte,
        "BRANCH_GT" => Mode::Gt,
        "BRANCH_EQ" => Mode::Eq,
        "BRANCH_NEQ" => Mode::Neq,
        "LEAF" => return Ok(None),
        other => return Err(format!("node mode '{other}' is not supported")),
    }))
}

fn index(v: i64, what: &str) -> Result<usize, String> {
    usize::try_from(v).map_err(|_| format!("{what} {v} is negative"))
}

/// The forest of a TreeEnsembleClassifier/Regressor: `prefix` is `class`
/// or `target`, naming the leaf attributes.
fn legacy_forest(node: &Node, prefix: &str) -> Result<Forest, String> {
    let need_ints = |name: &str| {
        node.ints(name)
            .ok_or_else(|| format!("attribute '{name}' is missing"))
    };
    let tree_ids = need_ints("nodes_treeids")?;
    let node_ids = need_ints("nodes_nodeids")?;
    let features = need_ints("nodes_featureids")?;
    let modes = node
        .strings("nodes_modes")
        .ok_or("attribute 'nodes_modes' is missing")?;
    let values = node.numbers("nodes_values").unwrap_or_default();
    let yes = need_ints("nodes_truenodeids")?;
    let no = need_ints("nodes_falsenodeids")?;
    let missing = node
        .ints("nodes_missing_value_tracks_true")
        .unwrap_or_default();
    // Hit rates only guide an engine's memory layout.
    let _ = node.numbers("nodes_hitrates");
    let n = tree_ids.len();
    for (name, len) in [
        ("nodes_nodeids", node_ids.len()),
        ("nodes_featureids", features.len()),
        ("nodes_modes", modes.len()),
        ("nodes_truenodeids", yes.len()),
        ("nodes_falsenodeids", no.len()),
    ] {
        if len != n {
            return Err(format!("{name} has {len} entries for {n} nodes"));
        }
    }
    if (!values.is_empty() && values.len() != n) || (!missing.is_empty() && missing.len() != n) {
        return Err(format!(
            "nodes_values or nodes_missing_value_tracks_true do not have {n} entries"
        ));
    }
    // (tree, node id) → position, and each tree's root (its first node).
    let mut at: HashMap<(i64, i64), usize> = HashMap::new();
    let mut forest = Forest::default();
    let mut tree_of: HashMap<i64, usize> = HashMap::new();
    for i in 0..n {
        if at.insert((tree_ids[i], node_ids[i]), i).is_some() {
            return Err(format!(
                "node {} of tree {} is given twice",
                node_ids[i], tree_ids[i]
            ));
        }
        tree_of.entry(tree_ids[i]).or_insert_with(|| {
            forest.roots.push(i);
            forest.roots.len() - 1
        });
    }
    let find = |tree: i64, id: i64| {
        at.get(&(tree, id))
            .copied()
            .ok_or_else(|| format!("tree {tree} has no node {id}"))
    };
    for i in 0..n {
        forest.nodes.push(match mode(&modes[i])? {
            None => TreeNode::Leaf {
                weights: Vec::new(),
            },
            Some(mode) => {
                let feature = index(features[i], "feature")?;
                forest.features = forest.features.max(feature + 1);
                TreeNode::Branch {
                    feature,
                    mode,
                    value: values.get(i).copied().unwrap_or(0.0) as f32,
                    set: Vec::new(),
                    missing_true: missing.get(i).is_some_and(|&m| m != 0),
                    yes: find(tree_ids[i], yes[i])?,
                    no: find(tree_ids[i], no[i])?,
                }
            }
        });
    }
    let leaf_trees = need_ints(&format!("{prefix}_treeids"))?;
    let leaf_nodes = need_ints(&format!("{prefix}_nodeids"))?;
    let leaf_targets = need_ints(&format!("{prefix}_ids"))?;
    let weights = node
        .numbers(&format!("{prefix}_weights"))
        .ok_or_else(|| format!("attribute '{prefix}_weights' is missing"))?;
    let m = leaf_trees.len();
    if leaf_nodes.len() != m || leaf_targets.len() != m || weights.len() != m {
        return Err(format!(
            "the {prefix}_* attributes do not have {m} entries each"
        ));
    }
    for j in 0..m {
        let i = find(leaf_trees[j], leaf_nodes[j])?;
        let target = index(leaf_targets[j], "target")?;
        match &mut forest.nodes[i] {
            TreeNode::Leaf { weights: w } => w.push((target, weights[j] as f32)),
            TreeNode::Branch { .. } => {
                return Err(format!(
                    "node {} of tree {} has weights but is not a leaf",
                    leaf_nodes[j], leaf_trees[j]
                ));
            }
        }
    }
    Ok(forest)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Aggregate {
    Sum,
    Average,
    Min,
    Max,
}

fn aggregate(name: &str) -> Result<Aggregate, String> {
    Ok(match name {
        "SUM" => Aggregate::Sum,
        "AVERAGE" => Aggregate::Average,
        "MIN" => Aggregate::Min,
        "MAX" => Aggregate::Max,
        other => return Err(format!("aggregate_function '{other}' is not supported")),
    })
}

/// Per row, per target: the aggregated leaf weights (`None` where no leaf
/// gave that target a weight).
fn scores(
    forest: &Forest,
    x: &Value,
    targets: usize,
    agg: Aggregate,
) -> Result<(usize, Vec<Option<f32>>), String> {
    let (n, c, v) = rows(x)?;
    if c < forest.features {
        return Err(format!(
            "{c} features, and the trees read feature {}",
            forest.features - 1
        ));
    }
    let mut out: Vec<Option<f32>> = vec![None; n * targets];
    for (r, row) in v.chunks(c.max(1)).take(n).enumerate() {
        let acc = &mut out[r * targets..(r + 1) * targets];
        for &root in &forest.roots {
            for &(t, w) in forest.leaf(root, row)? {
                let slot = acc
                    .get_mut(t)
                    .ok_or_else(|| format!("a leaf names target {t} of {targets}"))?;
                *slot = Some(match (*slot, agg) {
                    (None, _) => w,
                    (Some(s), Aggregate::Sum | Aggregate::Average) => s + w,
                    (Some(s), Aggregate::Min) => s.min(w),
                    (Some(s), Aggregate::Max) => s.max(w),
                });
            }
        }
        if agg == Aggregate::Average {
            let trees = forest.roots.len() as f32;
            acc.iter_mut().flatten().for_each(|s| *s /= trees);
        }
    }
    Ok((n, out))
}

struct Regressor {
    forest: Forest,
    targets: usize,
    base: Vec<f32>,
    agg: Aggregate,
    post: Post,
}

pub fn regressor(node: &Node) -> Built {
    let forest = legacy_forest(node, "target")?;
    let targets = index(node.int_or("n_targets", 1), "n_targets")?;
    let agg = aggregate(
        &node
            .string("aggregate_function")
            .unwrap_or_else(|| "SUM".into()),
    )?;
    let base: Vec<f32> = node
        .numbers("base_values")
        .unwrap_or_default()
        .into_iter()
        .map(|b| b as f32)
        .collect();
    if !base.is_empty() && base.len() != targets {
        return Err(format!("{} base_values for {targets} targets", base.len()));
    }
    Ok(Box::new(Regressor {
        forest,
        targets,
        base,
        agg,
        post: Post::of(node)?,
    }))
}

impl Op for Regressor {
    fn run(&self, inputs: &[Option<&Value>]) -> Result<Vec<Value>, String> {
        let (n, s) = scores(&self.forest, input(inputs, 0)?, self.targets, self.agg)?;
        let mut y: Vec<f32> = s
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.unwrap_or(0.0)
                    + self
                        .base
                        .get(i % self.targets.max(1))
                        .copied()
                        .unwrap_or(0.0)
            })
            .collect();
        for row in y.chunks_mut(self.targets.max(1)) {
            self.post.apply(row);
        }
        Ok(vec![Value::new(vec![n, self.targets], Data::F32(y))])
    }
}

struct Classifier {
    forest: Forest,
    labels: Vec<i64>,
    base: Vec<f32>,
    post: Post,
    /// Every leaf weight is >= 0 (ONNX Runtime's binary rule depends on it).
    positive: bool,
}

pub fn classifier(node: &Node) -> Built {
    if node.strings("classlabels_strings").is_some() {
        return Err("string class labels (classlabels_strings) are not supported".into());
    }
    let forest = legacy_forest(node, "class")?;
    let labels = node
        .ints("classlabels_int64s")
        .ok_or("attribute 'classlabels_int64s' is missing")?;
    let base: Vec<f32> = node
        .numbers("base_values")
        .unwrap_or_default()
        .into_iter()
        .map(|b| b as f32)
        .collect();
    let positive = forest.nodes.iter().all(|n| match n {
        TreeNode::Leaf { weights } => weights.iter().all(|&(_, w)| w >= 0.0),
        TreeNode::Branch { .. } => true,
    });
    Ok(Box::new(Classifier {
        forest,
        labels,
        base,
        post: Post::of(node)?,
        positive,
    }))
}

impl Classifier {
    /// The label and the scores of one row, from its per-class sums.
    fn finish(&self, mut s: Vec<Option<f32>>) -> (i64, Vec<f32>) {
        let classes = self.labels.len();
        if classes > 2 {
            for (i, b) in self.base.iter().enumerate() {
                if let Some(slot) = s.get_mut(i) {
                    *slot = Some(slot.unwrap_or(0.0) + b);
                }
            }
            let best = s
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| (i, v)))
                .fold(None, |b: Option<(usize, f32)>, (i, v)| match b {
                    Some((_, bv)) if bv >= v => b,
                    _ => Some((i, v)),
                });
            let label = best.map_or(self.labels[0], |(i, _)| self.labels[i]);
            let mut row: Vec<f32> = s.iter().map(|v| v.unwrap_or(0.0)).collect();
            self.post.apply(&mut row);
            return (label, row);
        }
        // Two classes: ONNX Runtime's conventions.
        let (mut s0, mut s1) = (s[0], s.get(1).copied().flatten());
        match self.base.len() {
            2 if s1.is_some() => {
                let v = self.base[1] + s0.unwrap_or(0.0);
                s1 = Some(v);
                s0 = Some(-v);
            }
            2 => {
                s0 = Some(s0.unwrap_or(0.0) + self.base[0]);
                s1 = Some(self.base[1]);
            }
            1 => s0 = Some(s0.unwrap_or(0.0) + self.base[0]),
            _ => {}
        }
        let pos = s1.or(s0).unwrap_or(0.0);
        let label = if self.positive { pos > 0.5 } else { pos > 0.0 };
        let label = self.labels[usize::from(label)];
        let mut row = match (s0, s1) {
            (a, Some(b)) => vec![a.unwrap_or(0.0), b],
            (a, None) => {
                let a = a.unwrap_or(0.0);
                if self.positive {
                    vec![1.0 - a, a]
                } else if self.post == Post::Logistic {
                    return (label, vec![logistic(-a), logistic(a)]);
                } else {
                    vec![-a, a]
                }
            }
        };
        if s1.is_some() || self.post == Post::Probit {
            self.post.apply(&mut row);
        } else if self.post != Post::None {
            self.post.apply(&mut row);
        }
        (label, row)
    }
}

impl Op for Classifier {
    fn run(&self, inputs: &[Option<&Value>]) -> Result<Vec<Value>, String> {
        let classes = self.labels.len();
        if classes == 0 {
            return Err("no class labels".into());
        }
        let (n, s) = scores(&self.forest, input(inputs, 0)?, classes, Aggregate::Sum)?;
        let mut labels = Vec::with_capacity(n);
        let mut z = Vec::with_capacity(n * classes.max(2));
        for r in 0..n {
            let (label, row) = self.finish(s[r * classes..(r + 1) * classes].to_vec());
            labels.push(label);
            z.extend(row);
        }
        let cols = if n == 0 { classes.max(2) } else { z.len() / n };
        Ok(vec![
            Value::new(vec![n], Data::I64(labels)),
            Value::new(vec![n, cols], Data::F32(z)),
        ])
    }
}

/// TreeEnsemble (ai.onnx.ml 5): integer-coded modes and functions, leaves
/// as their own arrays, and set membership.
pub fn ensemble(node: &Node) -> Built {
    Err(format!(
        "TreeEnsemble is not yet read (opset {})",
        node.opset
    ))
}
