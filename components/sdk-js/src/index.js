// verge-sdk for JavaScript: what a verge component needs besides its own
// logic, the JavaScript twin of the Rust SDK (components/sdk). Built into a
// component with componentize-qjs against wit/'s `component` world:
//
//   import { handle, json } from "verge-sdk";
//   export const handler = handle((req) => json(200, { echo: req.text() }));
//
// Errors thrown as VergeError keep their kind (invalid-input, model,
// internal); anything else thrown becomes `internal`, as a panic does in Rust.

import graph from "wasi:nn/graph@0.2.0-rc-2024-10-28";
import { Tensor as NnTensor } from "wasi:nn/tensor@0.2.0-rc-2024-10-28";
import store from "wasi:config/store@0.2.0-rc.1";
import hostApi from "verge:inference/host@0.1.0";

// ------------------------------------------------------------------ errors

/** Why a request got no outcome: `verge:inference/types.error`. */
export class VergeError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
  }
}
/** The request itself is wrong (a 4xx). */
export const invalid = (message) => new VergeError("invalid-input", message);
/** The model or its engine failed. */
export const modelError = (message) => new VergeError("model", message);
/** Anything else (a bad setting, a bug). */
export const internal = (message) => new VergeError("internal", message);

// `wasi:nn`'s error codes as the Rust SDK spells them (InvalidArgument, …).
const pascal = (code) => String(code).split("-").map((w) => w.charAt(0).toUpperCase() + w.slice(1)).join("");

/** A `wasi:nn` failure: an imported call's error resource, with its code and message. */
function nnError(e) {
  const r = e && e.payload !== undefined ? e.payload : e;
  let code, data;
  try {
    code = pascal(r.code());
    data = r.data();
  } catch {
    return internal(String(e && e.message ? e.message : e));
  }
  return modelError(data ? `wasi:nn ${code}: ${data}` : `wasi:nn ${code}`);
}

// ------------------------------------------------------------------ text

// QuickJS has no TextEncoder/TextDecoder: UTF-8 through the URI functions.
export function utf8Decode(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  try {
    return decodeURIComponent(escape(s));
  } catch {
    throw invalid("the body is not UTF-8 text");
  }
}

export function utf8Encode(text) {
  const s = unescape(encodeURIComponent(text));
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/**
 * A 32-bit float as Rust's `{}` prints it: the shortest decimal that reads
 * back to the same f32, never in exponent form, so that scores read the same
 * from a JavaScript, a Python and a Rust build of one component.
 */
export function formatF32(x) {
  const f = Math.fround(x);
  if (Number.isNaN(f)) return "NaN";
  if (!Number.isFinite(f)) return f > 0 ? "inf" : "-inf";
  if (f === 0) return Object.is(f, -0) ? "-0" : "0";
  let p = 1;
  let s = f.toPrecision(1);
  for (; p <= 9; p++) {
    s = f.toPrecision(p);
    if (Math.fround(Number(s)) === f) break;
  }
  let [mantissa, exp] = Number(s).toExponential(p - 1).split("e");
  const negative = mantissa.startsWith("-");
  if (negative) mantissa = mantissa.slice(1);
  const digits = mantissa.replace(".", "").replace(/0+$/, "") || "0";
  const e = Number(exp);
  let out;
  if (e < 0) out = "0." + "0".repeat(-e - 1) + digits;
  else if (digits.length <= e + 1) out = digits + "0".repeat(e + 1 - digits.length);
  else out = digits.slice(0, e + 1) + "." + digits.slice(e + 1);
  return (negative ? "-" : "") + out;
}

// ------------------------------------------------------------------ requests and outcomes

/** One request: `verge:inference/types.request`, with helpers. */
export class Request {
  constructor(req) {
    this.contentType = req.contentType;
    this.body = req.body;
    this.attributes = req.attributes;
    this.truncated = req.truncated;
  }
  /** The body as bytes. */
  bytes() {
    return this.body;
  }
  /** The body as UTF-8 text (invalid-input when it is not). */
  text() {
    return utf8Decode(this.body);
  }
  /** The body parsed as JSON (invalid-input when it is not). */
  json() {
    const text = this.text();
    try {
      return JSON.parse(text);
    } catch (e) {
      throw invalid(`the body is not JSON: ${e.message}`);
    }
  }
  /** A request attribute by its (lower-case) key. */
  attribute(key) {
    const hit = this.attributes.find(([k]) => k === key.toLowerCase());
    return hit ? hit[1] : undefined;
  }
}

/** What a handler returns: respond, annotate or defer. */
export class Outcome {
  constructor(tag, val) {
    this.tag = tag;
    this.val = val;
  }
  /** Adds a response header (respond) or an annotation (annotate). */
  withHeader(key, value) {
    if (this.tag === "respond") this.val.headers.push([key, String(value)]);
    else if (this.tag === "annotate") this.val.push([key, String(value)]);
    else throw internal("a deferral carries no headers");
    return this;
  }
}

const pairs = (headers) =>
  (Array.isArray(headers) ? headers : Object.entries(headers || {})).map(([k, v]) => [String(k), String(v)]);

/** Answer now: `body` is bytes or text. */
export function respond(status, body, { contentType = "application/octet-stream", headers = [] } = {}) {
  const bytes = typeof body === "string" ? utf8Encode(body) : body;
  return new Outcome("respond", { status, contentType, body: bytes, headers: pairs(headers) });
}

/** Answer now with JSON: a string is sent as it is, anything else is stringified. */
export function json(status, value, headers = []) {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return respond(status, text, { contentType: "application/json", headers });
}

/** Let the request go on, with these headers (an object or [key, value] pairs). */
export function annotate(headers) {
  return new Outcome("annotate", pairs(headers));
}

/** Hand the request over (to the origin, the cloud), with a reason. */
export function defer(reason) {
  return new Outcome("defer", String(reason));
}

// ------------------------------------------------------------------ tensors

const TYPES = [
  ["FP32", Float32Array],
  ["FP64", Float64Array],
  ["I32", Int32Array],
  ["I64", BigInt64Array],
  ["U8", Uint8Array],
];
const typeOf = (values) => TYPES.find(([, T]) => values instanceof T);

function count(dims) {
  return dims.reduce((n, d) => n * d, 1);
}

/** A tensor: dimensions and a TypedArray of its elements, checked when built and when read. */
export class Tensor {
  /** `values` is a Float32Array, Float64Array, Int32Array, BigInt64Array or Uint8Array. */
  constructor(dims, values) {
    const hit = typeOf(values);
    if (!hit) throw internal("tensor values must be a Float32Array, Float64Array, Int32Array, BigInt64Array or Uint8Array");
    if (!dims.every((d) => Number.isInteger(d) && d >= 0 && d <= 0xffffffff)) {
      throw internal(`tensor dimensions ${JSON.stringify(dims)} must be whole numbers`);
    }
    const n = count(dims);
    if (n !== values.length) {
      throw internal(`tensor dimensions ${JSON.stringify(dims)} hold ${n} elements, ${values.length} given`);
    }
    this.dims = dims.slice();
    this.type = hit[0];
    this.values = values;
  }
  /** The elements, if they are of `type` ("FP32", …). */
  as(type) {
    if (this.type !== type) throw modelError(`expected a ${type} tensor, the model gave ${this.type}`);
    return this.values;
  }
  /** Checks the dimensions; `null` matches any size. */
  expectDims(expected) {
    const ok = this.dims.length === expected.length && this.dims.every((d, i) => expected[i] === null || expected[i] === d);
    if (!ok) {
      const want = expected.map((e) => (e === null ? "?" : String(e))).join(", ");
      throw modelError(`expected a tensor of dimensions [${want}], the model gave ${JSON.stringify(this.dims)}`);
    }
    return this;
  }
  toNn() {
    const v = this.values;
    const bytes = new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
    return new NnTensor(new Uint32Array(this.dims), this.type, bytes);
  }
  static fromNn(t) {
    const type = t.ty();
    const dims = Array.from(t.dimensions());
    const hit = TYPES.find(([name]) => name === type);
    if (!hit) throw modelError(`the model gave a ${type} tensor, which this SDK does not read`);
    // A copy: the bytes may not be aligned for the element type.
    const data = t.data().slice();
    const T = hit[1];
    if (data.byteLength !== count(dims) * T.BYTES_PER_ELEMENT) {
      throw modelError(`a ${type} tensor of dimensions ${JSON.stringify(dims)} needs ${count(dims) * T.BYTES_PER_ELEMENT} bytes, got ${data.byteLength}`);
    }
    const tensor = Object.create(Tensor.prototype);
    tensor.dims = dims;
    tensor.type = type;
    tensor.values = new T(data.buffer, data.byteOffset, count(dims));
    return tensor;
  }
}

// ------------------------------------------------------------------ models

/** A model's outputs, by name, in the order the model gave them. */
export class Outputs {
  constructor(list) {
    this.list = list;
  }
  get(name) {
    const hit = this.list.find(([n]) => n === name);
    if (!hit) {
      throw modelError(`the model has no output named '${name}' (it gave ${JSON.stringify(this.list.map(([n]) => n))})`);
    }
    return hit[1];
  }
  first() {
    if (this.list.length === 0) throw modelError("the model returned no output");
    return this.list[0][1];
  }
}

const loaded = new Map();

/** A graph the host deployed by name, loaded once per instance. */
export class Model {
  constructor(name, g) {
    this.name = name;
    this.graph = g;
  }
  static load(name) {
    let g = loaded.get(name);
    if (!g) {
      try {
        g = graph.loadByName(name);
      } catch (e) {
        throw modelError(`loading model '${name}': ${nnError(e).message}`);
      }
      loaded.set(name, g);
    }
    return new Model(name, g);
  }
  /** Runs the model on named inputs: `{ name: Tensor }` or `[[name, Tensor], …]`. */
  run(inputs) {
    const named = (Array.isArray(inputs) ? inputs : Object.entries(inputs)).map(([n, t]) => {
      if (!(t instanceof Tensor)) throw internal(`input '${n}' is not a Tensor`);
      return [n, t.toNn()];
    });
    let outputs;
    try {
      outputs = this.graph.initExecutionContext().compute(named);
    } catch (e) {
      throw modelError(`running model '${this.name}': ${nnError(e).message}`);
    }
    return new Outputs(outputs.map(([n, t]) => [n, Tensor.fromNn(t)]));
  }
}

// ------------------------------------------------------------------ settings

/** Per-deployment settings (`wasi:config`), parsed to the default's type. */
export const settings = {
  /** The value, trimmed, or undefined when unset or empty (as the Rust SDK reads it). */
  get(key) {
    let v;
    try {
      v = store.get(key);
    } catch (e) {
      throw internal(`reading setting ${key}: ${e && e.payload ? JSON.stringify(e.payload) : e}`);
    }
    if (v === undefined || v === null || v.trim() === "") return undefined;
    return v.trim();
  },
  /** A string setting, or `fallback`. */
  string(key, fallback) {
    const v = this.get(key);
    return v === undefined ? fallback : v;
  },
  /** A number setting, or `fallback`; a value that is not a number is an internal error. */
  number(key, fallback) {
    const v = this.get(key);
    if (v === undefined) return fallback;
    const n = Number(v);
    if (Number.isNaN(n) && v !== "NaN") throw internal(`setting ${key} = ${JSON.stringify(v)} is not a valid number`);
    return n;
  },
  /** A boolean setting ("true"/"false"), or `fallback`. */
  boolean(key, fallback) {
    const v = this.get(key);
    if (v === undefined) return fallback;
    if (v === "true" || v === "false") return v === "true";
    throw internal(`setting ${key} = ${JSON.stringify(v)} is not a valid bool: expected true or false`);
  },
  /** Every setting whose key starts with `prefix`, the prefix removed, sorted by key. */
  withPrefix(prefix) {
    let all;
    try {
      all = store.getAll();
    } catch (e) {
      throw internal(`reading settings: ${e}`);
    }
    return all.filter(([k]) => k.startsWith(prefix)).map(([k, v]) => [k.slice(prefix.length), v]).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  },
};

// ------------------------------------------------------------------ the host

/** Where the component runs: "device", "edge-viewer", "edge-origin" or "local". */
export const placement = () => hostApi.getPlacement();
/** Milliseconds left of this call's deadline. */
export const remainingMs = () => hostApi.remainingMs();

// ------------------------------------------------------------------ the export

function witError(e) {
  if (e instanceof VergeError) return { tag: e.kind, val: e.message };
  return { tag: "internal", val: String(e && e.message ? e.message : e) };
}

/**
 * The `handler` export from a function of a Request that returns an Outcome
 * (or throws): `export const handler = handle((req) => …)`.
 */
export function handle(fn) {
  return {
    handle(req) {
      let outcome;
      try {
        outcome = fn(new Request(req));
      } catch (e) {
        throw witError(e);
      }
      if (!(outcome instanceof Outcome)) {
        throw witError(internal("the handler returned no outcome (respond, json, annotate or defer)"));
      }
      return { tag: outcome.tag, val: outcome.val };
    },
  };
}
