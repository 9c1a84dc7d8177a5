"""The behaviour suite's models (components/nn/suite/cases.json names them),
written with the onnx package's own helpers, so that no verge code builds
what verge is tested on.

    python models.py OUT_DIR

Writes OUT_DIR/<name>.onnx for every model below, and two that are not
models at all: `corrupt` (bytes no ONNX reader accepts) and `truncated` (the
first half of `add`).
"""

import os
import sys

import onnx
from onnx import TensorProto, helper

OPSET = [helper.make_opsetid("", 17)]


def save(out, name, nodes, inputs, outputs):
    graph = helper.make_graph(nodes, name, inputs, outputs)
    model = helper.make_model(graph, opset_imports=OPSET, ir_version=8, producer_name="verge-nn-suite")
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    with open(os.path.join(out, f"{name}.onnx"), "wb") as f:
        f.write(data)
    return data


def value(name, ty, dims):
    return helper.make_tensor_value_info(name, ty, dims)


def main(out):
    os.makedirs(out, exist_ok=True)
    # sum = a + b, prod = a * b, over [batch, 4] with batch symbolic.
    add = save(
        out,
        "add",
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Mul", ["a", "b"], ["prod"])],
        [value("a", TensorProto.FLOAT, ["batch", 4]), value("b", TensorProto.FLOAT, ["batch", 4])],
        [value("sum", TensorProto.FLOAT, ["batch", 4]), value("prod", TensorProto.FLOAT, ["batch", 4])],
    )
    # Every wasi:nn element type but bf16 (an engine capability: ONNX Runtime
    # has it, tract and onnxruntime-node do not), through Identity.
    types = [
        ("fp16", TensorProto.FLOAT16),
        ("fp32", TensorProto.FLOAT),
        ("fp64", TensorProto.DOUBLE),
        ("u8", TensorProto.UINT8),
        ("i32", TensorProto.INT32),
        ("i64", TensorProto.INT64),
    ]
    save(
        out,
        "types",
        [helper.make_node("Identity", [f"x_{t}"], [f"y_{t}"]) for t, _ in types],
        [value(f"x_{t}", ty, ["n", 2]) for t, ty in types],
        [value(f"y_{t}", ty, ["n", 2]) for t, ty in types],
    )
    # Outputs wasi:nn cannot carry as they are: widened to i32 / i64.
    narrow = [
        ("bool", TensorProto.BOOL),
        ("i8", TensorProto.INT8),
        ("i16", TensorProto.INT16),
        ("u16", TensorProto.UINT16),
        ("u32", TensorProto.UINT32),
    ]
    save(
        out,
        "widen",
        [helper.make_node("Cast", ["x"], [f"y_{t}"], to=ty) for t, ty in narrow],
        [value("x", TensorProto.INT32, [4])],
        [value(f"y_{t}", ty, [4]) for t, ty in narrow],
    )
    # A dimension the model leaves unnamed.
    save(
        out,
        "unnamed",
        [helper.make_node("Relu", ["x"], ["y"])],
        [value("x", TensorProto.FLOAT, [None, 3])],
        [value("y", TensorProto.FLOAT, [None, 3])],
    )
    # An input type wasi:nn cannot carry: refused at load.
    save(
        out,
        "bool_input",
        [helper.make_node("Not", ["x"], ["y"])],
        [value("x", TensorProto.BOOL, [2])],
        [value("y", TensorProto.BOOL, [2])],
    )
    with open(os.path.join(out, "corrupt.onnx"), "wb") as f:
        f.write(b"\xff\xff\xff\xff this is not an ONNX model")
    with open(os.path.join(out, "truncated.onnx"), "wb") as f:
        f.write(add[: len(add) // 2])


if __name__ == "__main__":
    main(sys.argv[1])
