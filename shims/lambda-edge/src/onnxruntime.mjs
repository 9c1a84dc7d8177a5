// The ONNX Runtime engine of an edge package: `verge:inference/engine` over
// onnxruntime-node's native binding, called synchronously (the package's
// public API wraps the same synchronous `run` in setImmediate + a Promise,
// which a synchronous wasi:nn cannot wait for).
//
// This is the whole engine: load a model by name (once per container; every
// warm invocation reuses the session) and run tensors. onnxruntime-node 1.31
// reports a load's outcome only through the promise `loadModel` returns, and
// wasi:nn's `load-by-name` is synchronous: so `prepare()` (awaited by the
// shim before each invocation; free once done) loads every model of the
// package, and `load(name)` answers from what it found. Every wasi:nn check,
// widening rule and error message is verge-nn's, compiled into the provider
// component that imports this interface, so none of it is rewritten here.
//
// The binding (`onnxruntime_binding.node`) and `libonnxruntime.so.1` are
// packed side by side under `onnxruntime/` (the binding finds the library
// through its $ORIGIN run path). Models are bundled files, or URLs fetched
// into /tmp before the first call (see models.mjs).

import { createRequire } from 'node:module';
import { join } from 'node:path';

import { withCabiLower } from './engine-abi.mjs';

// ONNX TensorProto.DataType codes ↔ the binding's type names and typed arrays.
const TYPES = {
  1: ['float32', Float32Array],
  2: ['uint8', Uint8Array],
  3: ['int8', Int8Array],
  4: ['uint16', Uint16Array],
  5: ['int16', Int16Array],
  6: ['int32', Int32Array],
  7: ['int64', BigInt64Array],
  9: ['bool', Uint8Array],
  10: ['float16', Uint16Array],
  11: ['float64', Float64Array],
  12: ['uint32', Uint32Array],
  13: ['uint64', BigUint64Array],
};
const CODES = Object.fromEntries(Object.entries(TYPES).map(([code, [name]]) => [name, Number(code)]));
const BF16 = 16;

/** What the binding hands back for each output: kept as it is, turned into bytes on the way out. */
class Output {
  constructor(type, data, dims) {
    this.type = type;
    this.data = data;
    this.dims = dims;
  }
}

/** A thrown value with `payload` becomes the `err` of a WIT `result` (not a trap). */
const failure = (code, message) => ({ payload: { code, message } });

function bytesOf(view) {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

/** A typed array over `data` (a Uint8Array from the component), copied only when misaligned. */
function typedView(View, data) {
  const size = View.BYTES_PER_ELEMENT;
  if (data.byteOffset % size !== 0) data = data.slice();
  return new View(data.buffer, data.byteOffset, data.byteLength / size);
}

function port(m) {
  if (!m.isTensor) return { name: m.name, datum: 0, dims: undefined };
  const dims = m.shape.map((d, i) => {
    if (d >= 0) return { tag: 'fixed', val: BigInt(d) };
    const s = m.symbolicDimensions?.[i];
    return s ? { tag: 'symbol', val: s } : { tag: 'any' };
  });
  return { name: m.name, datum: m.type, dims };
}

/** The binding's errors carry no code: what its words say, in wasi:nn terms. */
function loadCode(message) {
  if (/No Op registered|not implemented|NOT_IMPLEMENTED|Could not find an implementation/i.test(message)) {
    return 'unsupported-operation';
  }
  return 'invalid-encoding';
}

function runCode(message) {
  return /invalid dimensions|invalid rank|Unexpected input data type|INVALID_ARGUMENT/i.test(message)
    ? 'invalid-argument'
    : 'runtime-error';
}

/**
 * The `verge:inference/engine` import of a package whose verge.json says
 * `engine.name: "onnxruntime"`; `models` is the package's (models.mjs).
 */
export function onnxruntimeEngine({ dir, manifest, models }) {
  const settings = manifest.engine;
  let binding;
  // Models by name, and by id (the index `run` is given).
  const sessions = new Map();
  const loaded = [];
  const engineName = `onnxruntime-node ${settings.onnxruntime_node}`;

  function init() {
    if (binding) return binding;
    const require = createRequire(join(dir, 'index.mjs'));
    binding = require(join(dir, settings.binding));
    // Log level 3 = errors only; our own class builds the outputs.
    binding.initOrtOnce(3, Output, true);
    return binding;
  }

  class Model {
    constructor(session, id) {
      this.session = session;
      this.id = id;
      this.inputNames = session.inputMetadata.map((m) => m.name);
      this.fetches = Object.fromEntries(session.outputMetadata.map((m) => [m.name, null]));
      this.outputNames = Object.keys(this.fetches);
    }

    /** The WIT `model` record: what the provider checks inputs against. */
    record() {
      return { id: this.id, inputs: this.session.inputMetadata.map(port), outputs: this.session.outputMetadata.map(port) };
    }

    run(inputs) {
      const feeds = {};
      inputs.forEach((t, i) => {
        const [type, View] = TYPES[t.datum] ?? [];
        if (!type) throw failure('unsupported-operation', `onnxruntime-node takes no tensors of ONNX type ${t.datum}`);
        // The binding takes dims as an Array (the Hybrid path gives one; the glue's own lifting a Uint32Array).
        const dims = Array.isArray(t.dims) ? t.dims : [...t.dims];
        feeds[this.inputNames[i]] = { type, dims, data: typedView(View, t.data), location: 'cpu' };
      });
      let out;
      try {
        out = this.session.run(feeds, this.fetches, {});
      } catch (e) {
        throw failure(runCode(String(e?.message)), `onnxruntime: inference failed: ${e?.message ?? e}`);
      }
      return this.outputNames.map((name) => {
        const t = out[name];
        const datum = CODES[t.type];
        if (datum === undefined) throw failure('unsupported-operation', `output '${name}' has type ${t.type}, which wasi:nn cannot carry`);
        return { dims: t.dims, datum, data: bytesOf(t.data) };
      });
    }
  }

  /** The model at `path` as a Model, or the failure its load is. */
  async function open(path) {
    const b = init();
    const session = new b.InferenceSession();
    try {
      await session.loadModel(path, {
        intraOpNumThreads: settings.threads,
        interOpNumThreads: 1,
        graphOptimizationLevel: 'all',
      });
    } catch (e) {
      return failure(loadCode(String(e?.message)), String(e?.message ?? e));
    }
    const types = [...session.inputMetadata, ...session.outputMetadata].map((m) => m.type);
    if (types.includes(BF16)) {
      return failure('unsupported-operation', 'onnxruntime-node has no bf16 tensors (the model has a bf16 input or output)');
    }
    const model = new Model(session, loaded.length);
    loaded.push(model);
    return model;
  }

  // Once every model has its session or its failure, warm invocations skip the walk.
  let complete = false;
  let preparing = null;
  async function prepareAll() {
    let skipped = false;
    for (const name of models.names()) {
      if (sessions.has(name)) continue;
      let path;
      try {
        path = models.path(name);
      } catch {
        skipped = true; // a URL model not fetched: its load says so, and a later invocation tries again
        continue;
      }
      sessions.set(name, await open(path));
    }
    complete = !skipped;
  }

  return {
    async prepare() {
      if (complete) return;
      preparing ??= prepareAll().finally(() => {
        preparing = null;
      });
      return preparing;
    },
    imports: {
      load(name) {
        if (!sessions.has(name)) {
          // Not deployed (none), or a URL model not fetched (its failure).
          if (models.path(name) === undefined) return undefined;
          throw failure('runtime-error', `model '${name}' was not loaded before the call`);
        }
        const model = sessions.get(name);
        if (model.payload) throw model;
        return model.record();
      },
      run: withCabiLower((id, inputs) => {
        const model = loaded[id];
        if (!model) throw failure('runtime-error', `no model has id ${id}`);
        return model.run(inputs);
      }),
      name: () => engineName,
    },
  };
}
