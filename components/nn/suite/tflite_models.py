"""The TensorFlow Lite models of the behaviour suite (tflite-cases.json names
them), written as flatbuffers with the `tflite` package's generated schema
builders, so that no verge code builds what verge is tested on.

    python tflite_models.py OUT_DIR [--check LIB]

Needs `pip install tflite==2.18.0 flatbuffers numpy`. Writes OUT_DIR/<name>.tflite
for every model below (the same bytes on every run), and two that are not
models at all: `corrupt` (bytes no TFLite reader accepts) and `truncated`
(the first half of `add`).

With --check LIB (a TensorFlow Lite C library, libtensorflowlite_c.so) every
written model is loaded through ctypes: the good ones are run on fixed inputs
and their outputs asserted, and for the bad ones the call that failed and what
the library printed to stderr are shown.
"""

import ctypes
import os
import struct
import sys
import tempfile

import importlib

import flatbuffers
from tflite.BuiltinOperator import BuiltinOperator as Op
from tflite.BuiltinOptions import BuiltinOptions
from tflite.TensorType import TensorType as T


def schema(table):
    """The generated module of one schema table (the `tflite` package's
    __init__ shadows each module with its class of the same name)."""
    return importlib.import_module(f"tflite.{table}")


Buffer, Model, Operator, OperatorCode = (schema(t) for t in ("Buffer", "Model", "Operator", "OperatorCode"))
QuantizationParameters, SignatureDef = schema("QuantizationParameters"), schema("SignatureDef")
SubGraph, Tensor, TensorMap = schema("SubGraph"), schema("Tensor"), schema("TensorMap")
AddOptions, MulOptions, ReshapeOptions = schema("AddOptions"), schema("MulOptions"), schema("ReshapeOptions")

SCHEMA_VERSION = 3
DESCRIPTION = "verge-nn-suite"

# Operator versions as a converter would write them for these types.
VERSIONS = {
    (Op.ADD, T.FLOAT32): 1,
    (Op.MUL, T.FLOAT32): 1,
    (Op.RESHAPE, None): 1,
    (Op.DEQUANTIZE, T.INT8): 2,
    (Op.QUANTIZE, T.FLOAT32): 1,
    (Op.CUSTOM, None): 1,
}


class Graph:
    """One subgraph: tensors, operators, and the model's buffers."""

    def __init__(self):
        self.tensors = []  # (name, type, shape, buffer index, quantization)
        self.buffers = [b""]  # buffer 0 is the empty one, as the schema asks
        self.opcodes = []  # (builtin, custom code, version)
        self.ops = []  # (opcode index, inputs, outputs, options type, options)
        self.inputs = []
        self.outputs = []

    def tensor(self, name, ty, shape, data=None, quant=None):
        buffer = 0
        if data is not None:
            self.buffers.append(data)
            buffer = len(self.buffers) - 1
        self.tensors.append((name, ty, list(shape), buffer, quant))
        return len(self.tensors) - 1

    def input(self, name, ty, shape, quant=None):
        self.inputs.append(self.tensor(name, ty, shape, quant=quant))
        return self.inputs[-1]

    def op(self, builtin, inputs, outputs, options=(BuiltinOptions.NONE, None), custom=None, version=1):
        key = (builtin, custom, version)
        if key not in self.opcodes:
            self.opcodes.append(key)
        self.ops.append((self.opcodes.index(key), inputs, outputs) + tuple(options))

    def const_i32(self, name, values):
        return self.tensor(name, T.INT32, [len(values)], data=struct.pack(f"<{len(values)}i", *values))

    def reshape(self, x, name, shape, output=True):
        """RESHAPE x to shape, the new shape given as a constant input as converters do."""
        ty = self.tensors[x][1]
        s = self.const_i32(f"{name}/shape", shape)
        y = self.tensor(name, ty, shape, quant=self.tensors[x][4])
        self.op(Op.RESHAPE, [x, s], [y], (BuiltinOptions.ReshapeOptions, reshape_options(shape)),
                version=VERSIONS[(Op.RESHAPE, None)])
        if output:
            self.outputs.append(y)
        return y


def reshape_options(shape):
    def build(b):
        v = ivec(b, shape)
        R = ReshapeOptions
        R.ReshapeOptionsStart(b)
        R.ReshapeOptionsAddNewShape(b, v)
        return R.ReshapeOptionsEnd(b)

    return build


def no_activation(module, prefix):
    def build(b):
        getattr(module, f"{prefix}Start")(b)
        return getattr(module, f"{prefix}End")(b)

    return build


def vec(b, items, size, prepend, alignment=None):
    b.StartVector(size, len(items), alignment or size)
    for x in reversed(items):
        prepend(x)
    return b.EndVector()


def ivec(b, xs):
    return vec(b, list(xs), 4, b.PrependInt32)


def ovec(b, offsets):
    return vec(b, list(offsets), 4, b.PrependUOffsetTRelative)


def serialize(g, signature=None):
    b = flatbuffers.Builder(1024)

    # Buffers: data aligned to 16 bytes, as converters align it.
    buffers = []
    for data in g.buffers:
        d = vec(b, list(data), 1, b.PrependUint8, alignment=16) if data else None
        Buffer.BufferStart(b)
        if d is not None:
            Buffer.BufferAddData(b, d)
        buffers.append(Buffer.BufferEnd(b))

    tensors = []
    for name, ty, shape, buffer, quant in g.tensors:
        n = b.CreateString(name)
        s = ivec(b, shape)
        q = None
        if quant is not None:
            scale, zero = quant
            sv = vec(b, [scale], 4, b.PrependFloat32)
            zv = vec(b, [zero], 8, b.PrependInt64)
            QuantizationParameters.QuantizationParametersStart(b)
            QuantizationParameters.QuantizationParametersAddScale(b, sv)
            QuantizationParameters.QuantizationParametersAddZeroPoint(b, zv)
            q = QuantizationParameters.QuantizationParametersEnd(b)
        Tensor.TensorStart(b)
        Tensor.TensorAddShape(b, s)
        Tensor.TensorAddType(b, ty)
        Tensor.TensorAddBuffer(b, buffer)
        Tensor.TensorAddName(b, n)
        if q is not None:
            Tensor.TensorAddQuantization(b, q)
        tensors.append(Tensor.TensorEnd(b))

    ops = []
    for index, inputs, outputs, options_type, options in g.ops:
        i = ivec(b, inputs)
        o = ivec(b, outputs)
        opts = options(b) if options is not None else None
        Operator.OperatorStart(b)
        Operator.OperatorAddOpcodeIndex(b, index)
        Operator.OperatorAddInputs(b, i)
        Operator.OperatorAddOutputs(b, o)
        if opts is not None:
            Operator.OperatorAddBuiltinOptionsType(b, options_type)
            Operator.OperatorAddBuiltinOptions(b, opts)
        ops.append(Operator.OperatorEnd(b))

    tv, iv, outv, opv = ovec(b, tensors), ivec(b, g.inputs), ivec(b, g.outputs), ovec(b, ops)
    name = b.CreateString("main")
    SubGraph.SubGraphStart(b)
    SubGraph.SubGraphAddTensors(b, tv)
    SubGraph.SubGraphAddInputs(b, iv)
    SubGraph.SubGraphAddOutputs(b, outv)
    SubGraph.SubGraphAddOperators(b, opv)
    SubGraph.SubGraphAddName(b, name)
    subgraph = SubGraph.SubGraphEnd(b)

    codes = []
    for builtin, custom, version in g.opcodes:
        c = b.CreateString(custom) if custom is not None else None
        OperatorCode.OperatorCodeStart(b)
        # Both fields, as converters write them: readers older than 2.3 see
        # only the deprecated int8 one.
        OperatorCode.OperatorCodeAddDeprecatedBuiltinCode(b, min(builtin, 127))
        OperatorCode.OperatorCodeAddBuiltinCode(b, builtin)
        if c is not None:
            OperatorCode.OperatorCodeAddCustomCode(b, c)
        OperatorCode.OperatorCodeAddVersion(b, version)
        codes.append(OperatorCode.OperatorCodeEnd(b))

    sigs = None
    if signature is not None:
        key, ins, outs = signature

        def maps(pairs):
            ms = []
            for n, idx in pairs:
                s = b.CreateString(n)
                TensorMap.TensorMapStart(b)
                TensorMap.TensorMapAddName(b, s)
                TensorMap.TensorMapAddTensorIndex(b, idx)
                ms.append(TensorMap.TensorMapEnd(b))
            return ovec(b, ms)

        si, so, sk = maps(ins), maps(outs), b.CreateString(key)
        SignatureDef.SignatureDefStart(b)
        SignatureDef.SignatureDefAddInputs(b, si)
        SignatureDef.SignatureDefAddOutputs(b, so)
        SignatureDef.SignatureDefAddSignatureKey(b, sk)
        SignatureDef.SignatureDefAddSubgraphIndex(b, 0)
        sigs = ovec(b, [SignatureDef.SignatureDefEnd(b)])

    cv, sv, bv = ovec(b, codes), ovec(b, [subgraph]), ovec(b, buffers)
    desc = b.CreateString(DESCRIPTION)
    Model.ModelStart(b)
    Model.ModelAddVersion(b, SCHEMA_VERSION)
    Model.ModelAddOperatorCodes(b, cv)
    Model.ModelAddSubgraphs(b, sv)
    Model.ModelAddDescription(b, desc)
    Model.ModelAddBuffers(b, bv)
    if sigs is not None:
        Model.ModelAddSignatureDefs(b, sigs)
    b.Finish(Model.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def models():
    """name -> bytes, in the order they are written."""
    out = {}

    # sum = a + b, prod = a * b over [1, 4], with a "serving_default" signature.
    g = Graph()
    a = g.input("a", T.FLOAT32, [1, 4])
    bb = g.input("b", T.FLOAT32, [1, 4])
    s = g.tensor("sum", T.FLOAT32, [1, 4])
    p = g.tensor("prod", T.FLOAT32, [1, 4])
    g.op(Op.ADD, [a, bb], [s], (BuiltinOptions.AddOptions, no_activation(AddOptions, "AddOptions")),
         version=VERSIONS[(Op.ADD, T.FLOAT32)])
    g.op(Op.MUL, [a, bb], [p], (BuiltinOptions.MulOptions, no_activation(MulOptions, "MulOptions")),
         version=VERSIONS[(Op.MUL, T.FLOAT32)])
    g.outputs = [s, p]
    out["add"] = serialize(g, ("serving_default", [("a", a), ("b", bb)], [("sum", s), ("prod", p)]))

    # One input and one output per type wasi:nn carries and TFLite has, each
    # through RESHAPE to the same shape (a copy for every type).
    g = Graph()
    types = [("u8", T.UINT8), ("f32", T.FLOAT32), ("i32", T.INT32), ("i64", T.INT64)]
    xs = [g.input(f"x_{t}", ty, [2, 3]) for t, ty in types]
    for (t, _), x in zip(types, xs):
        g.reshape(x, f"y_{t}", [2, 3])
    out["types"] = serialize(g)

    # A rank-4 (NHWC) input flattened.
    g = Graph()
    g.reshape(g.input("image", T.FLOAT32, [1, 2, 2, 3]), "flat", [1, 12])
    out["dims"] = serialize(g)

    # A quantized int8 input (scale 0.5, zero point 0), dequantized.
    g = Graph()
    x = g.input("x", T.INT8, [1, 4], quant=(0.5, 0))
    y = g.tensor("y", T.FLOAT32, [1, 4])
    g.op(Op.DEQUANTIZE, [x], [y], version=VERSIONS[(Op.DEQUANTIZE, T.INT8)])
    g.outputs = [y]
    out["int8_input"] = serialize(g)

    # A float input quantized to an int8 output (scale 0.5, zero point 0).
    g = Graph()
    x = g.input("x", T.FLOAT32, [1, 4])
    y = g.tensor("y", T.INT8, [1, 4], quant=(0.5, 0))
    g.op(Op.QUANTIZE, [x], [y], version=VERSIONS[(Op.QUANTIZE, T.FLOAT32)])
    g.outputs = [y]
    out["int8_output"] = serialize(g)

    # A custom operator no resolver has.
    g = Graph()
    x = g.input("x", T.FLOAT32, [1, 4])
    y = g.tensor("y", T.FLOAT32, [1, 4])
    g.op(Op.CUSTOM, [x], [y], custom="VergeNoSuchOp", version=VERSIONS[(Op.CUSTOM, None)])
    g.outputs = [y]
    out["custom_op"] = serialize(g)

    # 64 fixed bytes: the root offset points far past the end, and there is
    # no "TFL3" identifier.
    out["corrupt"] = (b"\xff\xff\xff\x7f" + b"verge: this is not a TFLite flatbuffer. " * 2)[:64]
    out["truncated"] = out["add"][: len(out["add"]) // 2]
    return out


# --- --check: load and run every model through the TFLite C API -------------

CTYPES = {1: ("f", 4), 2: ("i", 4), 3: ("B", 1), 4: ("q", 8), 9: ("b", 1)}

# model -> ({input: values}, {output: expected values}); inputs/outputs are
# matched by tensor name.
RUNS = {
    "add": (
        {"a": [1, 2, 3, 4], "b": [0.5, 0.5, 0.5, 0.5]},
        {"sum": [1.5, 2.5, 3.5, 4.5], "prod": [0.5, 1, 1.5, 2]},
    ),
    "types": (
        {
            "x_u8": [0, 255, 1, 2, 128, 254],
            "x_f32": [0.25, -3, 1.5, 0, 65504, 3.4028234663852886e38],
            "x_i32": [-2147483648, 2147483647, 0, -1, 1, 123456],
            "x_i64": [-9007199254740991, 9007199254740991, 0, -1, 1, 4294967296],
        },
        None,  # outputs equal inputs, y_* for x_*
    ),
    "dims": ({"image": list(range(12))}, {"flat": list(range(12))}),
    "int8_input": ({"x": [-128, -1, 0, 127]}, {"y": [-64, -0.5, 0, 63.5]}),
    "int8_output": ({"x": [-64, -0.5, 1.5, 100]}, {"y": [-128, -1, 3, 127]}),
}


class Stderr:
    """Captures what the library writes to file descriptor 2."""

    def __enter__(self):
        sys.stderr.flush()
        self.file = tempfile.TemporaryFile()
        self.saved = os.dup(2)
        os.dup2(self.file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        libc = ctypes.CDLL(None)
        libc.fflush(None)
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.file.seek(0)
        self.text = self.file.read().decode(errors="replace").strip()
        self.file.close()


def load_lib(path):
    lib = ctypes.CDLL(path)
    P, I, S = ctypes.c_void_p, ctypes.c_int32, ctypes.c_size_t
    sigs = {
        "TfLiteVersion": ([], ctypes.c_char_p),
        "TfLiteModelCreate": ([P, S], P),
        "TfLiteModelDelete": ([P], None),
        "TfLiteInterpreterOptionsCreate": ([], P),
        "TfLiteInterpreterOptionsDelete": ([P], None),
        "TfLiteInterpreterCreate": ([P, P], P),
        "TfLiteInterpreterDelete": ([P], None),
        "TfLiteInterpreterAllocateTensors": ([P], ctypes.c_int),
        "TfLiteInterpreterInvoke": ([P], ctypes.c_int),
        "TfLiteInterpreterGetInputTensorCount": ([P], I),
        "TfLiteInterpreterGetInputTensor": ([P, I], P),
        "TfLiteInterpreterGetOutputTensorCount": ([P], I),
        "TfLiteInterpreterGetOutputTensor": ([P, I], P),
        "TfLiteInterpreterGetSignatureCount": ([P], I),
        "TfLiteInterpreterGetSignatureKey": ([P, I], ctypes.c_char_p),
        "TfLiteInterpreterGetSignatureRunner": ([P, ctypes.c_char_p], P),
        "TfLiteSignatureRunnerGetInputCount": ([P], S),
        "TfLiteSignatureRunnerGetInputName": ([P, I], ctypes.c_char_p),
        "TfLiteSignatureRunnerGetOutputCount": ([P], S),
        "TfLiteSignatureRunnerGetOutputName": ([P, I], ctypes.c_char_p),
        "TfLiteSignatureRunnerDelete": ([P], None),
        "TfLiteTensorType": ([P], ctypes.c_int),
        "TfLiteTensorNumDims": ([P], I),
        "TfLiteTensorDim": ([P, I], I),
        "TfLiteTensorName": ([P], ctypes.c_char_p),
        "TfLiteTensorByteSize": ([P], S),
        "TfLiteTensorCopyFromBuffer": ([P, P, S], ctypes.c_int),
        "TfLiteTensorCopyToBuffer": ([P, P, S], ctypes.c_int),
        "TfLiteTensorQuantizationParams": ([P], QuantParams),
    }
    for name, (args, res) in sigs.items():
        f = getattr(lib, name)
        f.argtypes, f.restype = args, res
    return lib


class QuantParams(ctypes.Structure):
    _fields_ = [("scale", ctypes.c_float), ("zero_point", ctypes.c_int32)]


def describe(lib, t):
    dims = [lib.TfLiteTensorDim(t, d) for d in range(lib.TfLiteTensorNumDims(t))]
    q = lib.TfLiteTensorQuantizationParams(t)
    return lib.TfLiteTensorName(t).decode(), lib.TfLiteTensorType(t), dims, (q.scale, q.zero_point)


class Failed(Exception):
    pass


def open_model(lib, data):
    """(model, options, interpreter); raises Failed(call, stderr) at the first failure."""
    buf = ctypes.create_string_buffer(data, len(data))
    with Stderr() as err:
        model = lib.TfLiteModelCreate(buf, len(data))
    if not model:
        raise Failed("TfLiteModelCreate returned NULL", err.text)
    options = lib.TfLiteInterpreterOptionsCreate()
    with Stderr() as err:
        interp = lib.TfLiteInterpreterCreate(model, options)
    if not interp:
        raise Failed("TfLiteInterpreterCreate returned NULL", err.text)
    with Stderr() as err:
        status = lib.TfLiteInterpreterAllocateTensors(interp)
    if status != 0:
        raise Failed(f"TfLiteInterpreterAllocateTensors returned status {status}", err.text)
    return buf, model, options, interp


def check(lib, out, written):
    print(f"TensorFlow Lite {lib.TfLiteVersion().decode()}")
    bad = []
    for name, data in written.items():
        try:
            keep = open_model(lib, data)
        except Failed as e:
            call, text = e.args
            print(f"{name}: {call}; stderr: {text!r}")
            bad.append(name)
            continue
        _, model, options, interp = keep
        ins = [lib.TfLiteInterpreterGetInputTensor(interp, i) for i in range(lib.TfLiteInterpreterGetInputTensorCount(interp))]
        outs = [lib.TfLiteInterpreterGetOutputTensor(interp, i) for i in range(lib.TfLiteInterpreterGetOutputTensorCount(interp))]
        print(f"{name}: inputs {[describe(lib, t) for t in ins]} outputs {[describe(lib, t) for t in outs]}")
        for k in range(lib.TfLiteInterpreterGetSignatureCount(interp)):
            key = lib.TfLiteInterpreterGetSignatureKey(interp, k)
            r = lib.TfLiteInterpreterGetSignatureRunner(interp, key)
            sin = [lib.TfLiteSignatureRunnerGetInputName(r, i).decode() for i in range(lib.TfLiteSignatureRunnerGetInputCount(r))]
            sout = [lib.TfLiteSignatureRunnerGetOutputName(r, i).decode() for i in range(lib.TfLiteSignatureRunnerGetOutputCount(r))]
            print(f"  signature {key.decode()!r}: inputs {sin} outputs {sout}")
            lib.TfLiteSignatureRunnerDelete(r)
        feeds, expect = RUNS[name]
        if expect is None:
            expect = {"y" + k[1:]: v for k, v in feeds.items()}
        for t in ins:
            tname, ty, _, _ = describe(lib, t)
            code, size = CTYPES[ty]
            raw = struct.pack(f"<{len(feeds[tname])}{code}", *feeds[tname])
            assert len(raw) == lib.TfLiteTensorByteSize(t), (name, tname)
            assert lib.TfLiteTensorCopyFromBuffer(t, raw, len(raw)) == 0
        with Stderr() as err:
            status = lib.TfLiteInterpreterInvoke(interp)
        assert status == 0, (name, status, err.text)
        for t in outs:
            tname, ty, dims, _ = describe(lib, t)
            code, size = CTYPES[ty]
            n = lib.TfLiteTensorByteSize(t)
            raw = ctypes.create_string_buffer(n)
            assert lib.TfLiteTensorCopyToBuffer(t, raw, n) == 0
            got = list(struct.unpack(f"<{n // size}{code}", raw.raw))
            want = expect[tname]
            if code == "f":
                want = list(struct.unpack(f"<{len(want)}f", struct.pack(f"<{len(want)}f", *want)))
            assert got == want, (name, tname, got, want)
            print(f"  {tname} {dims} = {got} ok")
        lib.TfLiteInterpreterDelete(interp)
        lib.TfLiteInterpreterOptionsDelete(options)
        lib.TfLiteModelDelete(model)
    assert bad == ["custom_op", "corrupt", "truncated"], bad


def main(argv):
    args = list(argv)
    lib = None
    if "--check" in args:
        i = args.index("--check")
        lib = args[i + 1]
        del args[i : i + 2]
    if len(args) != 1:
        sys.exit(__doc__)
    out = args[0]
    os.makedirs(out, exist_ok=True)
    written = models()
    for name, data in written.items():
        with open(os.path.join(out, f"{name}.tflite"), "wb") as f:
            f.write(data)
    if lib is not None:
        check(load_lib(lib), out, written)


if __name__ == "__main__":
    main(sys.argv[1:])
