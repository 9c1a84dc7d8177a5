"""ONNX's own operator tests (the onnx wheel's backend/test/data/node) as
behaviour-suite cases, to count which of them an engine runs: every test
whose inputs are tensors wasi:nn carries (fp16, fp32, fp64, u8, i32, i64) and
whose outputs it carries as they are or widened (bool, i8, i16, u16 to i32; u32
to i64), with the expected outputs widened the same way and a tolerance as
ONNX's backend test runner uses (rtol 1e-3, atol 1e-7).

    python onnx_node_cases.py OUT_DIR

Writes OUT_DIR/models/<test>.onnx and OUT_DIR/cases.json (the suite's format;
tensor data as base64 "b64" little-endian bytes), and prints how many tests it
took and why it left the rest out.
"""

import base64
import collections
import glob
import json
import os
import sys

import numpy as np
import onnx
from onnx import numpy_helper

CARRIED = {
    np.dtype("float16"): "fp16",
    np.dtype("float32"): "fp32",
    np.dtype("float64"): "fp64",
    np.dtype("uint8"): "u8",
    np.dtype("int32"): "i32",
    np.dtype("int64"): "i64",
}
WIDENED = {
    np.dtype("bool"): np.int32,
    np.dtype("int8"): np.int32,
    np.dtype("int16"): np.int32,
    np.dtype("uint16"): np.int32,
    np.dtype("uint32"): np.int64,
}


def tensor(name, array):
    return {
        "name": name,
        "type": CARRIED[array.dtype],
        "dims": [int(d) for d in array.shape],
        "b64": base64.b64encode(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()).decode(),
    }


def load(pb):
    t = onnx.TensorProto()
    with open(pb, "rb") as f:
        t.ParseFromString(f.read())
    return t.name, numpy_helper.to_array(t)


def main(out):
    root = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "node")
    os.makedirs(os.path.join(out, "models"), exist_ok=True)
    cases, skipped = [], collections.Counter()
    for test in sorted(os.listdir(root)):
        d = os.path.join(root, test)
        data = os.path.join(d, "test_data_set_0")
        if not os.path.isdir(data):
            skipped["no test data"] += 1
            continue
        model = onnx.load(os.path.join(d, "model.onnx"))
        names_in = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
        names_out = [o.name for o in model.graph.output]
        try:
            ins = [load(p) for p in sorted(glob.glob(os.path.join(data, "input_*.pb")), key=lambda p: int(p.rsplit("_", 1)[1][:-3]))]
            outs = [load(p) for p in sorted(glob.glob(os.path.join(data, "output_*.pb")), key=lambda p: int(p.rsplit("_", 1)[1][:-3]))]
        except Exception:  # sequences, optionals, maps: not tensors
            skipped["an input or output that is not a tensor"] += 1
            continue
        if len(ins) != len(names_in) or len(outs) != len(names_out):
            skipped["inputs or outputs left out of the data"] += 1
            continue
        arrays_in = [a for _, a in ins]
        arrays_out = [a for _, a in outs]
        if not all(isinstance(a, np.ndarray) and a.dtype in CARRIED for a in arrays_in):
            skipped["an input type wasi:nn does not carry"] += 1
            continue
        widened = []
        for a in arrays_out:
            if not isinstance(a, np.ndarray):
                widened = None
                break
            widened.append(a.astype(WIDENED[a.dtype]) if a.dtype in WIDENED else a)
        if widened is None or not all(a.dtype in CARRIED for a in widened):
            skipped["an output type wasi:nn does not carry"] += 1
            continue
        with open(os.path.join(out, "models", f"{test}.onnx"), "wb") as f:
            f.write(model.SerializeToString())
        cases.append({
            "name": test,
            "model": test,
            "inputs": [tensor(n, a) for n, a in zip(names_in, arrays_in)],
            "outputs": [tensor(n, a) for n, a in zip(names_out, widened)],
            "tolerance": {"rtol": 1e-3, "atol": 1e-7},
            "ops": sorted({n.op_type for n in model.graph.node}),
        })
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({"about": "ONNX's node tests as behaviour-suite cases (onnx_node_cases.py)", "cases": cases}, f)
    left = ", ".join(f"{n} {why}" for why, n in skipped.most_common())
    print(f"{len(cases)} of the onnx {onnx.__version__} node tests are wasi:nn cases ({left})")


if __name__ == "__main__":
    main(sys.argv[1])
