#!/usr/bin/env python3
"""Train small scikit-learn models, convert them to ONNX and write behaviour-suite cases for them.

Reference models and cases for an engine of tabular and small models (components/nn/compact): the
ai.onnx.ml operators skl2onnx emits (TreeEnsembleClassifier/Regressor, LinearClassifier/Regressor,
Scaler, ...) and the small standard graphs of an MLP.

DATA: only datasets bundled in the scikit-learn wheel, nothing is downloaded. Each is cast to
float32 once (the models see what the ONNX input carries) and split with train_test_split
(25% held out, random_state SEED, stratified for classification); the cases use the first
N_ROWS held-out rows. The diabetes target is standardised ((y - mean) / std of the training
split) so that regression outputs are O(1) and an absolute tolerance of 1e-5 means something
(raw targets reach ~350, where one fp32 ulp is already 3e-5).
  iris           150 x 4, 3 classes     LogisticRegression, DecisionTreeClassifier
  wine           178 x 13, 3 classes    RandomForestClassifier, GradientBoostingClassifier (multiclass)
  breast_cancer  569 x 30, 2 classes    GradientBoostingClassifier (binary), ExtraTreesClassifier,
                                        Pipeline(StandardScaler, LogisticRegression)
  digits         1797 x 64, 10 classes  Pipeline(StandardScaler, MLPClassifier(16,))
  diabetes       442 x 10, regression   RandomForest/GradientBoosting/ExtraTrees regressors,
                                        LinearRegression, Pipeline(StandardScaler, MLPRegressor(16,))
Every estimator has random_state SEED (where it takes one) and n_jobs=1; trees are few and shallow.

CONVERSION: skl2onnx to_onnx, target opsets {"": 15, "ai.onnx.ml": 3}, zipmap off; input
`features: float32[N, F]`; classifiers output `label: int64[N]` and `probabilities: float32[N, C]`,
regressors `variable: float32[N, 1]`. The target opsets are upper bounds: skl2onnx declares what its
nodes need (ai.onnx.ml 1, so no `*_as_tensor` attributes; all attributes are float32).

CASES: per model, one case with all held-out rows as one batch [N, F] and one with a single row
[1, F]; expected outputs are onnxruntime's (CPUExecutionProvider), in the format of
components/nn/suite/onnx_node_cases.py (bool/int8/int16/uint16 widened to int32, uint32 to int64),
tolerance rtol 0, atol 1e-5. Before anything is written, onnxruntime is checked against
scikit-learn's predict_proba / predict (max abs diff printed; above 1e-3, or any label differing,
is an error). Labels are compared exactly: the closest top-2 probability gap is printed, and
sk_decision_tree_classifier has a held-out row at an exact tie ([0, .5, .5] -> label 1, the first
maximum, as numpy's argmax).

    python models/sklearn_cases.py OUT_DIR

Writes OUT_DIR/models/<name>.onnx and OUT_DIR/cases.json; prints per model its size, its
(domain, op_type) set and the attributes each op uses. Deterministic: a second run writes the same
bytes. Needs the reference venv (tests/reference/requirements.txt).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import skl2onnx
import sklearn
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn import datasets
from sklearn.base import is_classifier
from sklearn.ensemble import (ExtraTreesClassifier, ExtraTreesRegressor, GradientBoostingClassifier,
                              GradientBoostingRegressor, RandomForestClassifier, RandomForestRegressor)
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

SEED = 20261127
N_ROWS = 50
TOLERANCE = {"rtol": 0, "atol": 1e-5}
WARN, FAIL = 1e-4, 1e-3

# The suite's case format, written once (components/nn/suite/onnx_node_cases.py).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "components", "nn", "suite"))
from onnx_node_cases import CARRIED, WIDENED, tensor  # noqa: E402

R = dict(random_state=SEED)
MODELS = [  # (name, dataset, estimator)
    ("sk_random_forest_classifier", "wine",
     RandomForestClassifier(n_estimators=20, max_depth=6, n_jobs=1, **R)),
    ("sk_random_forest_regressor", "diabetes",
     RandomForestRegressor(n_estimators=20, max_depth=6, n_jobs=1, **R)),
    ("sk_gradient_boosting_classifier_binary", "breast_cancer",
     GradientBoostingClassifier(n_estimators=30, max_depth=3, **R)),
    ("sk_gradient_boosting_classifier_multiclass", "wine",
     GradientBoostingClassifier(n_estimators=15, max_depth=3, **R)),
    ("sk_gradient_boosting_regressor", "diabetes",
     GradientBoostingRegressor(n_estimators=30, max_depth=3, **R)),
    ("sk_extra_trees_classifier", "breast_cancer",
     ExtraTreesClassifier(n_estimators=20, max_depth=6, n_jobs=1, **R)),
    ("sk_extra_trees_regressor", "diabetes",
     ExtraTreesRegressor(n_estimators=20, max_depth=6, n_jobs=1, **R)),
    ("sk_decision_tree_classifier", "iris",
     DecisionTreeClassifier(max_depth=4, **R)),
    ("sk_logistic_regression", "iris",
     LogisticRegression(max_iter=1000, **R)),
    ("sk_linear_regression", "diabetes",
     LinearRegression(n_jobs=1)),
    ("sk_scaled_logistic_regression", "breast_cancer",
     make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, **R))),
    ("sk_mlp_classifier", "digits",
     make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(16,), max_iter=500, **R))),
    ("sk_mlp_regressor", "diabetes",
     make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(16,), max_iter=2000, **R))),
]


def split(dataset: str):
    """(x_train, y_train, x_test, y_test) of a bundled dataset; the same on every run."""
    x, y = getattr(datasets, f"load_{dataset}")(return_X_y=True)
    x = x.astype(np.float32)
    classify = dataset != "diabetes"
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=SEED,
                                              stratify=y if classify else None)
    if not classify:
        mean, std = y_tr.mean(), y_tr.std()
        y_tr, y_te = (y_tr - mean) / std, (y_te - mean) / std
    return x_tr, y_tr, x_te[:N_ROWS], y_te[:N_ROWS]


def convert(name: str, model, n_features: int) -> bytes:
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    onx = to_onnx(
        model,
        initial_types=[("features", FloatTensorType([None, n_features]))],
        options={id(final): {"zipmap": False}} if is_classifier(final) else None,
        target_opset={"": 15, "ai.onnx.ml": 3},
    )
    onx.doc_string = f"{name}: scikit-learn {type(final).__name__} (models/sklearn_cases.py, seed {SEED})"
    # skl2onnx lists the opsets in hash order (it varies with PYTHONHASHSEED), sometimes one domain
    # twice; sort them (keeping the duplicates as skl2onnx writes them) so the bytes are stable.
    opsets = sorted((o.domain, o.version) for o in onx.opset_import)
    del onx.opset_import[:]
    onx.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in opsets)
    return onx.SerializeToString()


def widen(a: np.ndarray) -> np.ndarray:
    a = a.astype(WIDENED[a.dtype]) if a.dtype in WIDENED else a
    if a.dtype not in CARRIED:
        raise SystemExit(f"an output of type {a.dtype}, which the suite does not carry")
    return a


def check(name: str, model, sess: ort.InferenceSession, x: np.ndarray) -> float:
    """Max abs diff of onnxruntime against scikit-learn; SystemExit above FAIL."""
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"features": x})))
    if is_classifier(model):
        if sorted(outs) != ["label", "probabilities"]:
            raise SystemExit(f"{name}: outputs {sorted(outs)}, not label and probabilities (a ZipMap?)")
        diff = float(np.max(np.abs(outs["probabilities"] - model.predict_proba(x))))
        wrong = int(np.sum(outs["label"] != model.predict(x)))
        if wrong:
            raise SystemExit(f"{name}: onnxruntime's label differs from predict on {wrong} rows")
    else:
        diff = float(np.max(np.abs(outs["variable"].reshape(-1) - model.predict(x))))
    if diff > FAIL:
        raise SystemExit(f"{name}: onnxruntime differs from scikit-learn by {diff:.3g} > {FAIL}")
    return diff


def describe(graph: onnx.ModelProto) -> list[str]:
    """One line per (domain, op_type): the attributes its nodes set, with their types, and the
    values of scalar ones (INT, STRING) and the distinct values of STRINGS ones."""
    ops: dict[tuple[str, str], set[str]] = {}
    for node in graph.graph.node:
        attrs = ops.setdefault((node.domain or "ai.onnx", node.op_type), set())
        for a in node.attribute:
            kind = onnx.AttributeProto.AttributeType.Name(a.type)
            value = {"INT": lambda: f"={a.i}", "STRING": lambda: f"={a.s.decode()}",
                     "STRINGS": lambda: "={" + "|".join(sorted({v.decode() for v in a.strings})) + "}"}
            attrs.add(f"{a.name}:{kind}{value.get(kind, str)()}")
    return [f"    {d}.{op}: {', '.join(sorted(attrs)) or '-'}" for (d, op), attrs in sorted(ops.items())]


def main(out: str) -> int:
    os.makedirs(os.path.join(out, "models"), exist_ok=True)
    cases, files = [], {}
    for name, dataset, model in MODELS:
        x_tr, y_tr, x_te, _ = split(dataset)
        model.fit(x_tr, y_tr)
        data = convert(name, model, x_tr.shape[1])
        graph = onnx.load_from_string(data)
        onnx.checker.check_model(graph)
        sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        diff = check(name, model, sess, x_te)
        names_out = [o.name for o in sess.get_outputs()]
        for suffix, rows in (("batch", x_te), ("row", x_te[:1])):
            expected = sess.run(None, {"features": rows})
            cases.append({
                "name": f"{name}_{suffix}{len(rows)}",
                "model": name,
                "inputs": [tensor("features", rows)],
                "outputs": [tensor(n, widen(a)) for n, a in zip(names_out, expected)],
                "tolerance": TOLERANCE,
            })
        files[name] = data
        # As stored (skl2onnx may list a domain twice).
        opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in graph.opset_import)
        outs = ", ".join(f"{o.name}: {onnx.TensorProto.DataType.Name(o.type.tensor_type.elem_type).lower()}"
                         f"[{', '.join(d.dim_param or str(d.dim_value or '?') for d in o.type.tensor_type.shape.dim)}]"
                         for o in graph.graph.output)
        note = "  (above 1e-4)" if diff > WARN else ""
        if "probabilities" in names_out:  # how close the label comes to a tie (the engine must break ties alike)
            top = np.sort(sess.run(["probabilities"], {"features": x_te})[0], axis=1)
            note += f"; closest top-2 probability gap {float(np.min(top[:, -1] - top[:, -2])):.3g}"
        print(f"{name} ({dataset}, {len(x_te)} held-out rows): {len(data)} bytes, opsets {opsets}; "
              f"{outs}; onnxruntime vs scikit-learn max diff {diff:.2e}{note}")
        print("\n".join(describe(graph)))
    # Everything checked: write.
    for name, data in files.items():
        with open(os.path.join(out, "models", f"{name}.onnx"), "wb") as f:
            f.write(data)
    about = (f"scikit-learn {sklearn.__version__} models converted by skl2onnx {skl2onnx.__version__}, "
             f"expected outputs from onnxruntime {ort.__version__} (models/sklearn_cases.py)")
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({"about": about, "cases": cases}, f, sort_keys=True)
    print(f"{len(cases)} cases from {len(files)} scikit-learn models")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
