#!/usr/bin/env python3
"""ONNX Runtime from its Python package, the industry default, on the models of
bench/workloads.json: model only, zero tensors of the same shapes the device
benchmark uses, one intra-op thread and ONNX Runtime's default, alternated
within each repetition; for a model whose leading dimension is set per call,
also 8 rows a run (time per row: the ceiling of batching across requests).
Appends JSON lines (one per series) to --rows.

Run with the reference venv's python (it has onnxruntime): ./dev bench does.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DTYPES = {"f32": np.float32, "i32": np.int32, "i64": np.int64, "u8": np.uint8}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--rows", required=True, help="append JSON lines here")
    ap.add_argument("--models-dir", default=os.environ.get("VERGE_MODELS_DIR", os.path.join(ROOT, "models", ".cache")))
    ap.add_argument("--only", help="comma-separated workloads")
    a = ap.parse_args()
    if a.reps < 1:
        sys.exit("--reps must be positive")
    with open(os.path.join(ROOT, "bench", "workloads.json")) as f:
        workloads = json.load(f)["workloads"]
    only = set(a.only.split(",")) if a.only else None
    rows = []
    for w in workloads:
        if only and w["workload"] not in only:
            continue
        path = os.path.join(a.models_dir, w["model"])
        if not os.path.exists(path):
            sys.exit(f"{path}: missing (./dev test or ./dev bench makes the models)")
        feeds = {i["name"]: np.zeros(i["dims"], DTYPES[i["type"]]) for i in w["inputs"]}
        systems = {}
        for threads, name in [(1, "onnxruntime, Python, 1 thread"), (0, "onnxruntime, Python, default threads")]:
            o = ort.SessionOptions()
            o.intra_op_num_threads = threads
            systems[name] = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
        runs = {name: (s, feeds, 1) for name, s in systems.items()}
        # The ceiling for batching across requests: 8 rows a run, time per row
        # (only for models whose leading dimension is set per call).
        default = systems["onnxruntime, Python, default threads"]
        if all(not isinstance(i.shape[0], int) for i in default.get_inputs()):
            batch8 = {k: np.concatenate([v] * 8) for k, v in feeds.items()}
            runs["onnxruntime, Python, default threads, batch 8, per row"] = (default, batch8, 8)
        samples = {name: [] for name in runs}
        for rep in range(a.reps + 3):
            for name, (s, x, rows_per_run) in runs.items():
                t = time.perf_counter()
                s.run(None, x)
                if rep >= 3:
                    samples[name].append((time.perf_counter() - t) * 1e3 / rows_per_run)
        for name, xs in samples.items():
            rows.append({"section": "device-inference", "workload": w["workload"], "system": name + ", model only",
                         "metric": "inference", "unit": "ms", "samples": xs, "baseline": False, "better": "lower"})
            print(f"{w['workload']}: {name}: median {sorted(xs)[len(xs) // 2]:.3f} ms", file=sys.stderr)
    with open(a.rows, "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
