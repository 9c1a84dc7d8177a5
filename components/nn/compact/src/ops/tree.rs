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
        /// The threshold as written (f64 holds every float form exactly).
        value: f64,
        /// Member sets, for `Mode::Member`.
        set: Vec<f64>,
        missing_true: bool,
        yes: usize,
        no: usize,
    },
    Leaf {
        weights: Vec<(usize, f64)>,
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

/// Rows of features in the precision ONNX Runtime compares them in: f64
/// for a double input, f32 (exactly held in f64) for every other type.
struct Features {
    n: usize,
    c: usize,
    v: Vec<f64>,
    double: bool,
}

fn features(x: &Value) -> Result<Features, String> {
    let double = matches!(x.data, Data::F64(_));
    let v: Vec<f64> = match &x.data {
        Data::F64(v) => v.clone(),
        Data::F32(_) | Data::I64(_) | Data::I32(_) => {
            let (_, _, v) = rows(x)?;
            v.into_iter().map(f64::from).collect()
        }
        d => return Err(format!("{} features are not supported", d.datum())),
    };
    let (n, c) = match x.shape.as_slice() {
        [c] => (1, *c),
        [n, c] => (*n, *c),
        s => return Err(format!("features of shape {s:?}: expected [N, C] or [C]")),
    };
    Ok(Features { n, c, v, double })
}

impl Forest {
    /// The leaf `x` reaches in the tree at `root` (bounded: a malformed
    /// file's cycle ends in an error, not a hang). Thresholds are compared
    /// in f32 unless the input is f64, as ONNX Runtime does.
    fn leaf(&self, root: usize, x: &[f64], double: bool) -> Result<&[(usize, f64)], String> {
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
                    let t = if double {
                        *value
                    } else {
                        f64::from(*value as f32)
                    };
                    // NaN fails every comparison but !=, unless it tracks true.
                    let go = (*missing_true && v.is_nan())
                        || match mode {
                            Mode::Leq => v <= t,
                            Mode::Lt => v < t,
                            Mode::Gte => v >= t,
                            Mode::Gt => v > t,
                            Mode::Eq => v == t,
                            Mode::Neq => v != t,
                            Mode::Member => set
                                .iter()
                                .any(|&m| v == if double { m } else { f64::from(m as f32) }),
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

fn need_ints(node: &Node, name: &str) -> Result<Vec<i64>, String> {
    node.ints(name)
        .ok_or_else(|| format!("attribute '{name}' is missing"))
}

/// The forest of a TreeEnsembleClassifier/Regressor: `prefix` is `class`
/// or `target`, naming the leaf attributes.
fn legacy_forest(node: &Node, prefix: &str) -> Result<Forest, String> {
    let tree_ids = need_ints(node, "nodes_treeids")?;
    let node_ids = need_ints(node, "nodes_nodeids")?;
    let features = need_ints(node, "nodes_featureids")?;
    let modes = node
        .strings("nodes_modes")
        .ok_or("attribute 'nodes_modes' is missing")?;
    let values = node.numbers("nodes_values").unwrap_or_default();
    let yes = need_ints(node, "nodes_truenodeids")?;
    let no = need_ints(node, "nodes_falsenodeids")?;
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
    // (tree, node id) → position; each tree's root is its first node.
    let mut at: HashMap<(i64, i64), usize> = HashMap::new();
    let mut forest = Forest::default();
    let mut seen: HashMap<i64, ()> = HashMap::new();
    for i in 0..n {
        if at.insert((tree_ids[i], node_ids[i]), i).is_some() {
            return Err(format!(
                "node {} of tree {} is given twice",
                node_ids[i], tree_ids[i]
            ));
        }
        if seen.insert(tree_ids[i], ()).is_none() {
            forest.roots.push(i);
        }
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
                    value: values.get(i).copied().unwrap_or(0.0),
                    set: Vec::new(),
                    missing_true: missing.get(i).is_some_and(|&m| m != 0),
                    yes: find(tree_ids[i], yes[i])?,
                    no: find(tree_ids[i], no[i])?,
                }
            }
        });
    }
    let leaf_trees = need_ints(node, &format!("{prefix}_treeids"))?;
    let leaf_nodes = need_ints(node, &format!("{prefix}_nodeids"))?;
    let leaf_targets = need_ints(node, &format!("{prefix}_ids"))?;
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
        // Weights on a branch are ignored, as ONNX Runtime ignores them.
        if let TreeNode::Leaf { weights: w } = &mut forest.nodes[i] {
            w.push((target, weights[j]));
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
/// gave that target a weight), accumulated in f32 unless the input is f64.
fn scores(
    forest: &Forest,
    x: &Value,
    targets: usize,
    agg: Aggregate,
) -> Result<(Features, Vec<Option<f64>>), String> {
    let f = features(x)?;
    if f.c < forest.features {
        return Err(format!(
            "{} features, and the trees read feature {}",
            f.c,
            forest.features - 1
        ));
    }
    // f32 arithmetic, done in f64 and rounded: the same result bit for bit.
    let round = |v: f64| if f.double { v } else { f64::from(v as f32) };
    let mut out: Vec<Option<f64>> = vec![None; f.n * targets];
    for (r, row) in f.v.chunks(f.c.max(1)).take(f.n).enumerate() {
        let acc = &mut out[r * targets..(r + 1) * targets];
        for &root in &forest.roots {
            for &(t, w) in forest.leaf(root, row, f.double)? {
                let w = round(w);
                let slot = acc
                    .get_mut(t)
                    .ok_or_else(|| format!("a leaf names target {t} of {targets}"))?;
                *slot = Some(match (*slot, agg) {
                    (None, _) => w,
                    (Some(s), Aggregate::Sum | Aggregate::Average) => round(s + w),
                    (Some(s), Aggregate::Min) => s.min(w),
                    (Some(s), Aggregate::Max) => s.max(w),
                });
            }
        }
        if agg == Aggregate::Average {
            let trees = forest.roots.len() as f64;
            acc.iter_mut()
                .flatten()
                .for_each(|s| *s = round(*s / trees));
        }
    }
    Ok((f, out))
}

/// A regressor's rows: base values added, then the transform (which ONNX
/// Runtime applies to a single target only when it is PROBIT).
fn regress(s: &[Option<f64>], targets: usize, base: &[f64], post: Post, double: bool) -> Vec<f32> {
    let round = |v: f64| if double { v } else { f64::from(v as f32) };
    let mut y: Vec<f32> = s
        .iter()
        .enumerate()
        .map(|(i, s)| {
            round(s.unwrap_or(0.0) + base.get(i % targets.max(1)).copied().unwrap_or(0.0)) as f32
        })
        .collect();
    if targets > 1 || post == Post::Probit {
        for row in y.chunks_mut(targets.max(1)) {
            post.apply(row);
        }
    }
    y
}

struct Regressor {
    forest: Forest,
    targets: usize,
    base: Vec<f64>,
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
    let base = node.numbers("base_values").unwrap_or_default();
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
        let (f, s) = scores(&self.forest, input(inputs, 0)?, self.targets, self.agg)?;
        let y = regress(&s, self.targets, &self.base, self.post, f.double);
        Ok(vec![Value::new(vec![f.n, self.targets], Data::F32(y))])
    }
}

struct Classifier {
    forest: Forest,
    labels: Vec<i64>,
    base: Vec<f64>,
    post: Post,
    /// Every class weight is >= 0 (ONNX Runtime's binary rule depends on it).
    positive: bool,
    /// Two classes, and the leaves score one class id only.
    binary: bool,
}

pub fn classifier(node: &Node) -> Built {
    if node.strings("classlabels_strings").is_some() {
        return Err("string class labels (classlabels_strings) are not supported".into());
    }
    let forest = legacy_forest(node, "class")?;
    let labels = node
        .ints("classlabels_int64s")
        .ok_or("attribute 'classlabels_int64s' is missing")?;
    let base = node.numbers("base_values").unwrap_or_default();
    let classes = labels.len();
    if classes == 0 {
        return Err("no class labels".into());
    }
    if (classes <= 2 && base.len() > 2)
        || (classes > 2 && !base.is_empty() && base.len() != classes)
    {
        return Err(format!("{} base_values for {classes} classes", base.len()));
    }
    let weights = || {
        forest.nodes.iter().flat_map(|n| match n {
            TreeNode::Leaf { weights } => weights.as_slice(),
            TreeNode::Branch { .. } => &[],
        })
    };
    if let Some((c, _)) = weights().find(|(c, _)| *c >= classes) {
        return Err(format!(
            "class id {c} is out of range for {classes} classes"
        ));
    }
    let positive = weights().all(|&(_, w)| w >= 0.0);
    let mut ids: Vec<usize> = weights().map(|&(c, _)| c).collect();
    ids.sort_unstable();
    ids.dedup();
    let post = Post::of(node)?;
    if classes <= 2 && post == Post::Probit {
        // ONNX Runtime leaves the second score unwritten there.
        return Err("post_transform PROBIT with two classes is not supported".into());
    }
    Ok(Box::new(Classifier {
        binary: classes == 2 && ids.len() == 1,
        forest,
        labels,
        base,
        post,
        positive,
    }))
}

impl Classifier {
    /// The label and the scores of one row, from its per-class sums, by
    /// ONNX Runtime's rules (1.32), two-class conventions included.
    fn finish(&self, s: &[Option<f64>]) -> (i64, Vec<f32>) {
        let mut pred: Vec<(f32, bool)> = s
            .iter()
            .map(|v| (v.unwrap_or(0.0) as f32, v.is_some()))
            .collect();
        let read = |p: &(f32, bool)| if p.1 { p.0 } else { 0.0 };
        if self.labels.len() > 2 {
            for (p, &b) in pred.iter_mut().zip(&self.base) {
                *p = (if p.1 { p.0 + b as f32 } else { b as f32 }, true);
            }
            let mut best: Option<usize> = None;
            for (i, p) in pred.iter().enumerate() {
                if p.1 && best.is_none_or(|b| p.0 > pred[b].0) {
                    best = Some(i);
                }
            }
            let mut row: Vec<f32> = pred.iter().map(read).collect();
            self.post.apply(&mut row);
            return (self.labels[best.unwrap_or(0)], row);
        }
        let mut added = None;
        match self.base.len() {
            2 if pred.len() == 2 && pred[1].1 => {
                pred[1].0 = self.base[1] as f32 + pred[0].0;
                pred[0].0 = -pred[1].0;
            }
            2 => {
                if let Some(p) = pred.get_mut(1) {
                    p.0 += self.base[1] as f32;
                }
                pred[0].0 += self.base[0] as f32;
            }
            1 => {
                pred[0].0 += self.base[0] as f32;
                if pred.len() == 2 && !pred[1].1 {
                    pred.pop();
                }
            }
            _ => {
                added = Some(3);
                if pred.len() == 2 && !pred[1].1 {
                    pred.pop();
                }
            }
        }
        let pos = if pred.len() == 2 && pred[1].1 {
            pred[1].0
        } else if pred[0].1 {
            pred[0].0
        } else {
            0.0
        };
        let label = if self.binary {
            let (second, was) = match (self.positive, pos) {
                (true, p) if p > 0.5 => (true, 0),
                (true, _) => (false, 1),
                (false, p) if p > 0.0 => (true, 2),
                (false, _) => (false, 3),
            };
            added = Some(was);
            self.labels[usize::from(second).min(self.labels.len() - 1)]
        } else {
            i64::from(pos > 0.0)
        };
        let row = if pred.len() >= 2 {
            let mut row: Vec<f32> = pred.iter().map(read).collect();
            self.post.apply(&mut row);
            row
        } else {
            let v = read(&pred[0]);
            match (added, self.post) {
                (Some(0 | 1), Post::Logistic) => {
                    let p = logistic(v);
                    vec![1.0 - p, p]
                }
                (Some(0 | 1), _) => vec![1.0 - v, v],
                (Some(_), Post::Logistic) => vec![logistic(-v), logistic(v)],
                (Some(_), _) => vec![-v, v],
                // ONNX Runtime writes the first score only.
                (None, _) => vec![v, 0.0],
            }
        };
        (label, row)
    }
}

impl Op for Classifier {
    fn run(&self, inputs: &[Option<&Value>]) -> Result<Vec<Value>, String> {
        let classes = self.labels.len();
        let (f, s) = scores(&self.forest, input(inputs, 0)?, classes, Aggregate::Sum)?;
        let mut labels = Vec::with_capacity(f.n);
        let mut z = Vec::with_capacity(f.n * classes);
        for r in 0..f.n {
            let (label, mut row) = self.finish(&s[r * classes..(r + 1) * classes]);
            row.resize(classes, 0.0);
            labels.push(label);
            z.extend(row);
        }
        Ok(vec![
            Value::new(vec![f.n], Data::I64(labels)),
            Value::new(vec![f.n, classes], Data::F32(z)),
        ])
    }
}

/// TreeEnsemble (ai.onnx.ml 5): integer-coded modes, leaves in arrays of
/// their own, set membership; the output has the input's type.
struct Ensemble {
    forest: Forest,
    targets: usize,
    agg: Aggregate,
}

pub fn ensemble(node: &Node) -> Built {
    let features = need_ints(node, "nodes_featureids")?;
    let splits = node
        .tensor("nodes_splits")
        .ok_or("attribute 'nodes_splits' is missing")?;
    let modes = node
        .tensor("nodes_modes")
        .ok_or("attribute 'nodes_modes' is missing")?;
    let yes = need_ints(node, "nodes_truenodeids")?;
    let no = need_ints(node, "nodes_falsenodeids")?;
    let yes_leaf = need_ints(node, "nodes_trueleafs")?;
    let no_leaf = need_ints(node, "nodes_falseleafs")?;
    let missing = node
        .ints("nodes_missing_value_tracks_true")
        .unwrap_or_default();
    let _ = node.tensor("nodes_hitrates");
    let members = node.tensor("membership_values");
    let leaf_targets = need_ints(node, "leaf_targetids")?;
    let leaf_weights = node
        .tensor("leaf_weights")
        .ok_or("attribute 'leaf_weights' is missing")?;
    let roots = need_ints(node, "tree_roots")?;
    let targets = index(
        node.int("n_targets")
            .ok_or("attribute 'n_targets' is missing")?,
        "n_targets",
    )?;
    let agg = match node.int_or("aggregate_function", 1) {
        0 => Aggregate::Average,
        1 => Aggregate::Sum,
        2 => Aggregate::Min,
        3 => Aggregate::Max,
        other => return Err(format!("aggregate_function {other} is not supported")),
    };
    match node.int_or("post_transform", 0) {
        0 => {}
        // The specification numbers SOFTMAX 1 and LOGISTIC 2; ONNX Runtime the other way round.
        other => {
            return Err(format!(
                "post_transform {other} is not supported (ONNX Runtime and the ONNX specification disagree on what 1 and 2 mean)"
            ));
        }
    }
    let n = features.len();
    let modes = modes.data.to_i64s();
    let splits = splits.data.to_f64s();
    for (name, len) in [
        ("nodes_modes", modes.len()),
        ("nodes_splits", splits.len()),
        ("nodes_truenodeids", yes.len()),
        ("nodes_falsenodeids", no.len()),
        ("nodes_trueleafs", yes_leaf.len()),
        ("nodes_falseleafs", no_leaf.len()),
    ] {
        if len != n {
            return Err(format!("{name} has {len} entries for {n} nodes"));
        }
    }
    if !missing.is_empty() && missing.len() != n {
        return Err(format!(
            "nodes_missing_value_tracks_true has {} entries for {n} nodes",
            missing.len()
        ));
    }
    let weights = leaf_weights.data.to_f64s();
    if leaf_targets.len() != weights.len() {
        return Err("leaf_targetids and leaf_weights differ in length".into());
    }
    // One NaN-separated group of members per BRANCH_MEMBER node, in order.
    let mut groups = members
        .map(|m| m.data.to_f64s())
        .unwrap_or_default()
        .split(|v| v.is_nan())
        .map(<[f64]>::to_vec)
        .collect::<Vec<_>>()
        .into_iter();
    let mut forest = Forest::default();
    // Branches first (0..n), then leaves (n..).
    let target = |i: i64, leaf: i64| -> Result<usize, String> {
        let i = index(i, "node")?;
        let (bound, offset) = if leaf != 0 {
            (weights.len(), n)
        } else {
            (n, 0)
        };
        (i < bound)
            .then_some(i + offset)
            .ok_or_else(|| format!("node index {i} is out of range"))
    };
    for i in 0..n {
        let mode = match modes[i] {
            0 => Mode::Leq,
            1 => Mode::Lt,
            2 => Mode::Gte,
            3 => Mode::Gt,
            4 => Mode::Eq,
            5 => Mode::Neq,
            6 => Mode::Member,
            other => return Err(format!("node mode {other} is not supported")),
        };
        let feature = index(features[i], "feature")?;
        forest.features = forest.features.max(feature + 1);
        let set = if mode == Mode::Member {
            groups
                .next()
                .ok_or("membership_values has fewer groups than BRANCH_MEMBER nodes")?
        } else {
            Vec::new()
        };
        forest.nodes.push(TreeNode::Branch {
            feature,
            mode,
            value: splits[i],
            set,
            missing_true: missing.get(i).is_some_and(|&m| m != 0),
            yes: target(yes[i], yes_leaf[i])?,
            no: target(no[i], no_leaf[i])?,
        });
    }
    for (&t, &w) in leaf_targets.iter().zip(&weights) {
        let t = index(t, "target")?;
        if t >= targets {
            return Err(format!(
                "leaf target {t} is out of range for {targets} targets"
            ));
        }
        forest.nodes.push(TreeNode::Leaf {
            weights: vec![(t, w)],
        });
    }
    for &r in &roots {
        let r = index(r, "tree root")?;
        if r >= n {
            return Err(format!("tree root {r} is out of range"));
        }
        forest.roots.push(r);
    }
    Ok(Box::new(Ensemble {
        forest,
        targets,
        agg,
    }))
}

impl Op for Ensemble {
    fn run(&self, inputs: &[Option<&Value>]) -> Result<Vec<Value>, String> {
        let x = input(inputs, 0)?;
        if !matches!(x.data, Data::F32(_) | Data::F64(_)) {
            return Err(format!("{} features are not supported", x.datum()));
        }
        let (f, s) = scores(&self.forest, x, self.targets, self.agg)?;
        let y: Vec<f64> = s.iter().map(|v| v.unwrap_or(0.0)).collect();
        let data = if f.double {
            Data::F64(y)
        } else {
            Data::F32(y.into_iter().map(|v| v as f32).collect())
        };
        Ok(vec![Value::new(vec![f.n, self.targets], data)])
    }
}
