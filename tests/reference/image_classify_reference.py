#!/usr/bin/env python3
"""Reference answers for the `image-classify` component: each test photograph decoded with
Pillow, preprocessed as the component does (models/efficientnet_lite0.py `preprocess`: centre
square crop, bilinear resize to 224 with half-pixel centres, ImageNet mean/std) and run by
onnxruntime on the converted EfficientNet-Lite0.

Writes one JSON line per image: {"image", "format", "probabilities" (1000), "tensor" (path of the
preprocessed input, raw little-endian float32 [1,3,224,224], for native tract in the test),
"ort_ms" (median of 5 single-thread runs)}.

Usage: image_classify_reference.py --tensors DIR [--models DIR] > OUT.jsonl
"""

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[2]
IMAGES = [("skimage-chelsea", "chelsea.png"), ("skimage-coffee", "coffee.png"), ("skimage-rocket", "rocket.jpg")]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=Path, default=REPO / "models" / ".cache")
    ap.add_argument("--tensors", type=Path, required=True, help="directory for the preprocessed tensors")
    args = ap.parse_args()
    spec = importlib.util.spec_from_file_location("effnet", REPO / "models" / "efficientnet_lite0.py")
    effnet = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(effnet)

    model = args.models / "efficientnet-lite0" / "model.onnx"
    if not model.is_file():
        sys.exit(f"{model} is missing: run python models/efficientnet_lite0.py first")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    args.tensors.mkdir(parents=True, exist_ok=True)
    for name, file in IMAGES:
        path = args.models / name / file
        if not path.is_file():
            sys.exit(f"{path} is missing: run python3 models/fetch.py first")
        x = effnet.preprocess(path)[None]
        tensor = (args.tensors / file).with_suffix(".f32")
        tensor.write_bytes(x.astype("<f4").tobytes())
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            (p,) = sess.run(["probabilities"], {"input": x})
            times.append((time.perf_counter() - t0) * 1000)
        print(json.dumps({"image": str(path.resolve()), "format": path.suffix[1:],
                          "probabilities": [float(v) for v in p[0]], "tensor": str(tensor.resolve()),
                          "ort_ms": float(np.median(times))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
