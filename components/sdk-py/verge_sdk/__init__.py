"""verge-sdk for Python: what a verge component needs besides its own logic, the Python twin of
the Rust SDK (components/sdk). Built into a component with componentize-py against wit/'s
`component` world, whose bindings (`wit_world`) it imports:

    from verge_sdk import handle, json

    Handler = handle(lambda req: json(200, {"echo": req.text()}))

No numpy in a component: tensors hold `array.array`s. Errors raised as VergeError keep their kind
(invalid-input, model, internal); any other exception becomes `internal`, as a panic does in Rust.
"""

from __future__ import annotations

import array
import json as _json
import math
import struct
from typing import Any, Iterable, Mapping, Sequence

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import graph as _graph
from wit_world.imports import host as _host
from wit_world.imports import tensor as _tensor
from wit_world.imports import types as _types
from wit_world.imports import wasi_config_store as _store

__all__ = [
    "VergeError", "invalid", "model_error", "internal", "Request", "Outcome", "respond", "json",
    "annotate", "defer", "Tensor", "Outputs", "Model", "settings", "placement", "remaining_ms",
    "format_f32", "handle",
]


# ------------------------------------------------------------------ errors

class VergeError(Exception):
    """Why a request got no outcome: `verge:inference/types.error`."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind, self.message = kind, message


def invalid(message: str) -> VergeError:
    """The request itself is wrong (a 4xx)."""
    return VergeError("invalid-input", message)


def model_error(message: str) -> VergeError:
    """The model or its engine failed."""
    return VergeError("model", message)


def internal(message: str) -> VergeError:
    """Anything else (a bad setting, a bug)."""
    return VergeError("internal", message)


def _nn_message(e: Exception) -> str:
    """A `wasi:nn` failure's code (as the Rust SDK spells it) and message."""
    r = e.value if isinstance(e, Err) else e
    try:
        code = "".join(w.capitalize() for w in r.code().name.split("_"))
        data = r.data()
    except Exception:  # not a wasi:nn error resource
        return str(e)
    return f"wasi:nn {code}: {data}" if data else f"wasi:nn {code}"


# ------------------------------------------------------------------ numbers

def format_f32(x: float) -> str:
    """A 32-bit float as Rust's `{}` prints it: the shortest decimal that reads back to the same
    f32, never in exponent form, so scores read the same from every language's build."""
    f = struct.unpack("<f", struct.pack("<f", x))[0]
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    if f == 0:
        return "-0" if math.copysign(1, f) < 0 else "0"
    for p in range(1, 10):
        s = f"{f:.{p - 1}e}"
        if struct.unpack("<f", struct.pack("<f", float(s)))[0] == f:
            break
    mantissa, exp = s.split("e")
    negative = mantissa.startswith("-")
    digits = mantissa.lstrip("-").replace(".", "").rstrip("0") or "0"
    e = int(exp)
    if e < 0:
        out = "0." + "0" * (-e - 1) + digits
    elif len(digits) <= e + 1:
        out = digits + "0" * (e + 1 - len(digits))
    else:
        out = digits[: e + 1] + "." + digits[e + 1:]
    return ("-" if negative else "") + out


# ------------------------------------------------------------------ requests and outcomes

class Request:
    """One request: `verge:inference/types.request`, with helpers."""

    def __init__(self, req: _types.Request):
        self.content_type = req.content_type
        self.body = bytes(req.body)
        self.attributes = list(req.attributes)
        self.truncated = req.truncated

    def bytes(self) -> bytes:
        return self.body

    def text(self) -> str:
        """The body as UTF-8 text (invalid-input when it is not)."""
        try:
            return self.body.decode("utf-8")
        except UnicodeDecodeError:
            raise invalid("the body is not UTF-8 text") from None

    def json(self) -> Any:
        """The body parsed as JSON (invalid-input when it is not)."""
        try:
            return _json.loads(self.text())
        except ValueError as e:
            raise invalid(f"the body is not JSON: {e}") from None

    def attribute(self, key: str) -> str | None:
        """A request attribute by its (lower-case) key."""
        return next((v for k, v in self.attributes if k == key.lower()), None)


def _pairs(headers: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> list[tuple[str, str]]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(k), str(v)) for k, v in items]


class Outcome:
    """What a handler returns: made by respond, json, annotate or defer."""

    def __init__(self, value: _types.Outcome):
        self.value = value

    def with_header(self, key: str, value: Any) -> "Outcome":
        """Adds a response header (respond) or an annotation (annotate)."""
        v = self.value
        if isinstance(v, _types.Outcome_Respond):
            v.value.headers.append((key, str(value)))
        elif isinstance(v, _types.Outcome_Annotate):
            v.value.append((key, str(value)))
        else:
            raise internal("a deferral carries no headers")
        return self


def respond(status: int, body: bytes | str, content_type: str = "application/octet-stream",
            headers: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> Outcome:
    """Answer now: `body` is bytes or text."""
    data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    return Outcome(_types.Outcome_Respond(_types.Response(status, content_type, data, _pairs(headers))))


def json(status: int, value: Any, headers: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> Outcome:
    """Answer now with JSON: a string is sent as it is, anything else is serialised compactly."""
    text = value if isinstance(value, str) else _json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return respond(status, text, "application/json", headers)


def annotate(headers: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> Outcome:
    """Let the request go on, with these headers."""
    return Outcome(_types.Outcome_Annotate(_pairs(headers)))


def defer(reason: str) -> Outcome:
    """Hand the request over (to the origin, the cloud), with a reason."""
    return Outcome(_types.Outcome_Defer(str(reason)))


# ------------------------------------------------------------------ tensors

# wasi:nn's element types and the array.array type codes that hold them.
_TYPES = {"FP32": "f", "FP64": "d", "I32": "i", "I64": "q", "U8": "B"}
_BY_CODE = {code: name for name, code in _TYPES.items()}


def _count(dims: Sequence[int]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


class Tensor:
    """A tensor: dimensions and an `array.array` of its elements, checked when built and read."""

    def __init__(self, dims: Sequence[int], values: array.array | Sequence[float], type: str | None = None):
        if not isinstance(values, array.array):
            values = array.array(_TYPES[type or "FP32"], values)
        name = _BY_CODE.get(values.typecode)
        if name is None or values.itemsize != struct.calcsize(values.typecode):
            raise internal(f"tensor values of array type '{values.typecode}' are not a wasi:nn type "
                           "(use 'f', 'd', 'i', 'q' or 'B')")
        if type is not None and type != name:
            raise internal(f"tensor values are {name}, {type} asked for")
        dims = [int(d) for d in dims]
        if any(d < 0 or d > 0xFFFFFFFF for d in dims):
            raise internal(f"tensor dimensions {dims} must be whole numbers")
        n = _count(dims)
        if n != len(values):
            raise internal(f"tensor dimensions {dims} hold {n} elements, {len(values)} given")
        self.dims, self.type, self.values = dims, name, values

    def as_type(self, type: str) -> array.array:
        """The elements, if they are of `type` ("FP32", ...)."""
        if self.type != type:
            raise model_error(f"expected a {type} tensor, the model gave {self.type}")
        return self.values

    def expect_dims(self, expected: Sequence[int | None]) -> "Tensor":
        """Checks the dimensions; `None` matches any size."""
        ok = len(self.dims) == len(expected) and all(e is None or e == d for d, e in zip(self.dims, expected))
        if not ok:
            want = ", ".join("?" if e is None else str(e) for e in expected)
            raise model_error(f"expected a tensor of dimensions [{want}], the model gave {self.dims}")
        return self

    def _to_nn(self) -> _tensor.Tensor:
        return _tensor.Tensor(self.dims, getattr(_tensor.TensorType, self.type), self.values.tobytes())

    @staticmethod
    def _from_nn(t: _tensor.Tensor) -> "Tensor":
        name, dims = t.ty().name, list(t.dimensions())
        code = _TYPES.get(name)
        if code is None:
            raise model_error(f"the model gave a {name} tensor, which this SDK does not read")
        values = array.array(code)
        data = t.data()
        if len(data) != _count(dims) * values.itemsize:
            raise model_error(f"a {name} tensor of dimensions {dims} needs {_count(dims) * values.itemsize} "
                              f"bytes, got {len(data)}")
        values.frombytes(data)
        return Tensor(dims, values)


# ------------------------------------------------------------------ models

class Outputs:
    """A model's outputs, by name, in the order the model gave them."""

    def __init__(self, items: list[tuple[str, Tensor]]):
        self.items = items

    def get(self, name: str) -> Tensor:
        for n, t in self.items:
            if n == name:
                return t
        names = _json.dumps([n for n, _ in self.items])
        raise model_error(f"the model has no output named '{name}' (it gave {names})")

    def first(self) -> Tensor:
        if not self.items:
            raise model_error("the model returned no output")
        return self.items[0][1]


_loaded: dict[str, Any] = {}


class Model:
    """A graph the host deployed by name, loaded once per instance."""

    def __init__(self, name: str, graph: Any):
        self.name, self.graph = name, graph

    @staticmethod
    def load(name: str) -> "Model":
        g = _loaded.get(name)
        if g is None:
            try:
                g = _graph.load_by_name(name)
            except Err as e:
                raise model_error(f"loading model '{name}': {_nn_message(e)}") from None
            _loaded[name] = g
        return Model(name, g)

    def run(self, inputs: Mapping[str, Tensor] | Iterable[tuple[str, Tensor]]) -> Outputs:
        """Runs the model on named inputs."""
        items = inputs.items() if isinstance(inputs, Mapping) else inputs
        named = []
        for n, t in items:
            if not isinstance(t, Tensor):
                raise internal(f"input '{n}' is not a Tensor")
            named.append((n, t._to_nn()))
        try:
            outputs = self.graph.init_execution_context().compute(named)
        except Err as e:
            raise model_error(f"running model '{self.name}': {_nn_message(e)}") from None
        return Outputs([(n, Tensor._from_nn(t)) for n, t in outputs])


# ------------------------------------------------------------------ settings

class _Settings:
    """Per-deployment settings (`wasi:config`), parsed to a type; empty counts as unset."""

    def get(self, key: str) -> str | None:
        try:
            v = _store.get(key)
        except Err as e:
            raise internal(f"reading setting {key}: {e.value}") from None
        return v.strip() if v is not None and v.strip() else None

    def string(self, key: str, default: str) -> str:
        v = self.get(key)
        return default if v is None else v

    def number(self, key: str, default: float) -> float:
        v = self.get(key)
        if v is None:
            return default
        try:
            return float(v)
        except ValueError:
            raise internal(f"setting {key} = {_json.dumps(v)} is not a valid number") from None

    def boolean(self, key: str, default: bool) -> bool:
        v = self.get(key)
        if v is None:
            return default
        if v in ("true", "false"):
            return v == "true"
        raise internal(f"setting {key} = {_json.dumps(v)} is not a valid bool: expected true or false")

    def with_prefix(self, prefix: str) -> list[tuple[str, str]]:
        """Every setting whose key starts with `prefix`, the prefix removed, sorted by key."""
        try:
            everything = _store.get_all()
        except Err as e:
            raise internal(f"reading settings: {e.value}") from None
        return sorted((k[len(prefix):], v) for k, v in everything if k.startswith(prefix))


settings = _Settings()


# ------------------------------------------------------------------ the host

def placement() -> str:
    """Where the component runs: "device", "edge-viewer", "edge-origin" or "local"."""
    return _host.get_placement().name.lower().replace("_", "-")


def remaining_ms() -> int:
    """Milliseconds left of this call's deadline."""
    return _host.remaining_ms()


# ------------------------------------------------------------------ the export

def _wit_error(e: BaseException) -> Err:
    if isinstance(e, VergeError):
        kinds = {"invalid-input": _types.Error_InvalidInput, "model": _types.Error_Model}
        return Err(kinds.get(e.kind, _types.Error_Internal)(e.message))
    return Err(_types.Error_Internal(f"{type(e).__name__}: {e}"))


def handle(fn):
    """The `Handler` export from a function of a Request that returns an Outcome (or raises):
    `Handler = handle(my_function)` in the app module componentize-py builds."""

    class Handler(exports.Handler):
        def handle(self, req: _types.Request) -> _types.Outcome:
            try:
                outcome = fn(Request(req))
            except Exception as e:  # every failure becomes the WIT error, never a trap
                raise _wit_error(e) from None
            if not isinstance(outcome, Outcome):
                raise _wit_error(internal("the handler returned no outcome (respond, json, annotate or defer)"))
            return outcome.value

    return Handler
