#!/usr/bin/env python3
"""Train the `fraud-score` model reproducibly and convert it to ONNX for tract.

DATA: synthetic card transactions generated here with a fixed seed (numpy PCG64, seed 20261127).
No real transaction or fraud data is used: the generator below draws eight features from simple
distributions and labels a transaction fraudulent with a logistic rule on them plus noise. The
model learns that rule; it demonstrates the pipeline (features in JSON -> score -> outcome), it is
not a fraud model for production.

MODEL: scikit-learn RandomForestClassifier (40 trees, depth <= 8, random_state fixed), converted
with skl2onnx (zipmap off) to one ai.onnx.ml TreeEnsembleClassifier: tract runs it, and it needs no
Scaler (trees are scale-free). (A GradientBoostingClassifier converts with two base_values, which
tract 0.23 refuses for a binary TreeEnsembleClassifier.) Input `features: float32[N, 8]` in FEATURES order; outputs `label:
int64[N]` and `probabilities: float32[N, 2]` (column 1 = fraud).

Writes models/.cache/fraud-score/model.onnx and features.json; checks onnxruntime against
scikit-learn's predict_proba on the held-out rows (max abs diff <= 1e-5) before replacing
anything. Deterministic and idempotent: a second run produces the same bytes and leaves the
files untouched.

    python models/fraud_score.py            # train, convert, check, write
    python models/fraud_score.py --reference OUT.jsonl   # also write held-out rows, predict_proba,
                                                          # and onnxruntime's time per row

Needs scikit-learn, skl2onnx, onnxruntime (tests/reference/requirements.txt pins them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

SEED = 20261127
N_ROWS = 6000
N_HELDOUT = 1000
OUT_DIR = Path(__file__).resolve().parent / ".cache" / "fraud-score"

# Feature names, in the model's input order.
FEATURES = [
    "amount",            # transaction amount, in currency units (log-normal)
    "hour",              # local hour of day, 0-23
    "distance_km",       # distance from the cardholder's home
    "merchant_risk",     # 0..1 risk score of the merchant category
    "card_age_days",     # age of the card
    "txn_last_24h",      # transactions on this card in the last 24 hours
    "foreign",           # 1 when the merchant is abroad
    "card_present",      # 1 when the card was physically present
]


def generate(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    amount = rng.lognormal(mean=3.5, sigma=1.1, size=n)
    hour = rng.integers(0, 24, size=n).astype(np.float64)
    distance = rng.exponential(scale=25.0, size=n)
    merchant_risk = rng.beta(2.0, 5.0, size=n)
    card_age = rng.gamma(shape=2.0, scale=400.0, size=n)
    txn_24h = rng.poisson(lam=2.0, size=n).astype(np.float64)
    foreign = (rng.random(n) < 0.12).astype(np.float64)
    card_present = (rng.random(n) < 0.55).astype(np.float64)
    night = ((hour < 6) | (hour >= 23)).astype(np.float64)
    logit = (
        -4.4
        + 0.9 * np.log1p(amount / 100.0)
        + 1.1 * night
        + 0.012 * np.minimum(distance, 300.0)
        + 3.0 * merchant_risk
        - 0.0012 * np.minimum(card_age, 1500.0)
        + 0.35 * txn_24h
        + 1.2 * foreign
        - 1.3 * card_present
        + rng.normal(0.0, 0.6, size=n)
    )
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    x = np.stack([amount, hour, distance, merchant_risk, card_age, txn_24h, foreign, card_present], axis=1)
    # The model sees float32 (as the component sends it); round the data to it once.
    return x.astype(np.float32), y


def train():
    """The data split and the fitted classifier; the same on every run."""
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.Generator(np.random.PCG64(SEED))
    x, y = generate(rng, N_ROWS)
    x_train, y_train = x[:-N_HELDOUT], y[:-N_HELDOUT]
    x_test, y_test = x[-N_HELDOUT:], y[-N_HELDOUT:]
    clf = RandomForestClassifier(n_estimators=40, max_depth=8, min_samples_leaf=5, random_state=SEED, n_jobs=1)
    clf.fit(x_train, y_train)
    return clf, (x_train, y_train), (x_test, y_test)


def convert(clf) -> bytes:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onx = to_onnx(
        clf,
        initial_types=[("features", FloatTensorType([None, len(FEATURES)]))],
        options={id(clf): {"zipmap": False}},
        target_opset={"": 15, "ai.onnx.ml": 3},
    )
    onx.doc_string = f"fraud-score: GradientBoostingClassifier on synthetic transactions (seed {SEED})"
    return onx.SerializeToString()


def check(model: bytes, clf, x_test: np.ndarray) -> float:
    import onnx
    import onnxruntime as ort

    graph = onnx.load_from_string(model)
    ops = sorted({n.op_type for n in graph.graph.node})
    for bad in ("ZipMap", "Scaler"):
        if bad in ops:
            raise SystemExit(f"the converted graph uses {bad}, which tract lacks: {ops}")
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    if names != ["label", "probabilities"]:
        raise SystemExit(f"unexpected outputs {names}")
    _, proba = sess.run(None, {"features": x_test})
    diff = float(np.max(np.abs(proba - clf.predict_proba(x_test))))
    if diff > 1e-5:
        raise SystemExit(f"onnxruntime differs from predict_proba by {diff:.3g} > 1e-5")
    return diff


def write_if_changed(path: Path, data: bytes) -> str:
    if path.is_file() and path.read_bytes() == data:
        return "unchanged"
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)
    return "written"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", type=Path, help="write held-out rows and predict_proba as JSON lines")
    args = ap.parse_args()

    clf, (x_train, y_train), (x_test, y_test) = train()
    model = convert(clf)
    diff = check(model, clf, x_test)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    meta = {
        "features": FEATURES,
        "data": f"synthetic transactions, numpy PCG64 seed {SEED}, {N_ROWS} rows ({N_HELDOUT} held out)",
        "fraud_rate_train": round(float(y_train.mean()), 4),
        "accuracy_heldout": round(float((clf.predict(x_test) == y_test).mean()), 4),
    }
    st_model = write_if_changed(OUT_DIR / "model.onnx", model)
    st_meta = write_if_changed(OUT_DIR / "features.json", (json.dumps(meta, indent=2) + "\n").encode())
    print(f"fraud-score model.onnx {st_model} ({len(model)} bytes, sha256 {hashlib.sha256(model).hexdigest()}), "
          f"features.json {st_meta}; onnxruntime vs predict_proba max diff {diff:.2e}; "
          f"held-out accuracy {meta['accuracy_heldout']}, fraud rate {meta['fraud_rate_train']}", file=sys.stderr)

    if args.reference:
        import time

        import onnxruntime as ort

        # One row per run, one thread: the same unit of work as one request to the component.
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        proba = clf.predict_proba(x_test)
        with open(args.reference, "w") as f:
            for row, p, label in zip(x_test, proba, y_test):
                t0 = time.perf_counter()
                sess.run(["probabilities"], {"features": row[None, :]})
                ort_ms = (time.perf_counter() - t0) * 1000
                features = {name: float(v) for name, v in zip(FEATURES, row)}
                f.write(json.dumps({"features": features, "proba": float(p[1]), "label": int(label),
                                    "ort_ms": ort_ms}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
