// The Lambda@Edge entry point of a package made by `verge-edge pack`.
//
// Module scope holds what warm invocations reuse: the manifest, the compiled
// core modules, and the component instance with the graphs it has loaded. An
// instance that trapped is dropped and the next invocation makes a new one.
// Every invocation is logged as one JSON line (the component's own output
// during the call goes into it); component errors and traps follow the
// package's on-error setting.

import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import {
  EventError,
  OutcomeError,
  QuotaError,
  failure,
  fromOutcome,
  passThrough,
  recordOf,
  toRequest,
} from './cloudfront.mjs';
import { hostImports } from './host.mjs';
import { packageModels } from './models.mjs';
import { onnxruntimeEngine } from './onnxruntime.mjs';
import { wasiImports } from './wasi.mjs';

// The wasi:nn engines a package may name (verge.json `engine.name`) whose
// engine runs outside Wasm: each gives the `verge:inference/engine` import
// (`imports`) and `prepare()`, awaited before each invocation. tract (and the
// compact engine) are linked inside the provider component instead.
const HOST_ENGINES = { onnxruntime: onnxruntimeEngine };

function log(level, fields) {
  console.log(JSON.stringify({ level, time: new Date().toISOString(), ...fields }));
}

// Component output kept for one invocation's log line (CloudWatch takes 256 KB a line).
const OUTPUT_LINES = 50;
const OUTPUT_LINE_CHARS = 1000;

/** A handler for the package in `dir` (the folder holding verge.json). */
export function createHandler(dir) {
  const manifest = JSON.parse(readFileSync(join(dir, 'verge.json'), 'utf8'));
  const models = packageModels(dir, manifest);
  const hostEngine = HOST_ENGINES[manifest.engine?.name];
  const engine = hostEngine?.({ dir, manifest, models });
  const cores = new Map();
  // Per-invocation facts the host imports read.
  const call = {
    placement: 'edge-origin',
    limits: { maxBodyBytes: 0, deadlineMs: 0, memoryBytes: 0 },
    remainingMs: () => 0,
  };
  let instance = null;
  let module = null;
  let output = [];

  async function getCoreModule(name) {
    if (!cores.has(name)) {
      cores.set(name, readFile(join(dir, 'component', name)).then((b) => WebAssembly.compile(b)));
    }
    return cores.get(name);
  }

  async function handlerOf() {
    if (!instance) {
      module ??= await import(pathToFileURL(join(dir, 'component', 'component.js')).href);
      const imports = {
        ...wasiImports((stream, line) => {
          if (output.length < OUTPUT_LINES) output.push(`${stream}: ${line.slice(0, OUTPUT_LINE_CHARS)}`);
        }),
        ...hostImports({ manifest, models, call }),
        ...(engine ? { 'verge:inference/engine': engine.imports } : {}),
      };
      instance = await module.instantiate(getCoreModule, imports);
    }
    return instance.handler ?? instance['verge:inference/handler'];
  }

  return async function handler(event, context) {
    const started = process.hrtime.bigint();
    let record;
    try {
      record = recordOf(event);
    } catch (e) {
      // Nothing sensible to pass on: CloudFront gets an error for a malformed event.
      log('error', { kind: 'malformed-event', message: e.message });
      throw e;
    }
    const { eventType } = record;
    // The quotas of this event, from the table verge-edge packed.
    const limits = manifest.limits[eventType];
    const deadline = Date.now() + manifest.timeout_s * 1000;
    output = [];
    const ms = () => Number(process.hrtime.bigint() - started) / 1e6;
    const componentOutput = () => (output.length ? { output } : {});

    const onError = (kind, message) => {
      log('error', { kind, message, event_type: eventType, on_error: manifest.on_error, ms: ms(), ...componentOutput() });
      return manifest.on_error === 'fail' ? failure(record, message) : passThrough(record);
    };

    let request;
    try {
      request = toRequest(record);
    } catch (e) {
      if (e instanceof EventError) return onError('malformed-event', e.message);
      throw e;
    }

    let outcome;
    try {
      const h = await handlerOf();
      // Models given as URLs are fetched before the first call (then kept), and a
      // host engine loads the package's models (once).
      await models.ready(deadline - Date.now());
      await engine?.prepare();
      // Set only now: from here to the log line all is synchronous, so no
      // other invocation can change these before they are read.
      call.placement = eventType.startsWith('viewer-') ? 'edge-viewer' : 'edge-origin';
      call.limits = {
        maxBodyBytes: limits.body_bytes,
        deadlineMs: manifest.timeout_s * 1000,
        memoryBytes: manifest.memory_mb * 1024 * 1024,
      };
      call.remainingMs = () =>
        typeof context?.getRemainingTimeInMillis === 'function'
          ? context.getRemainingTimeInMillis()
          : deadline - Date.now();
      output = [];
      outcome = h.handle(request);
    } catch (e) {
      if (e?.payload?.tag) {
        // The component's own error value: the instance stays usable.
        return onError(e.payload.tag, String(e.payload.val));
      }
      // A trap (or a broken instance): drop it, the next call starts afresh.
      instance = null;
      return onError('trap', String(e?.message ?? e));
    }
    try {
      const { result, notes } = fromOutcome(record, outcome, limits);
      log('info', {
        kind: outcome.tag,
        event_type: eventType,
        ms: ms(),
        ...(notes.length ? { notes } : {}),
        ...componentOutput(),
      });
      return result;
    } catch (e) {
      if (e instanceof QuotaError) return onError('quota', e.message);
      if (e instanceof OutcomeError) return onError('invalid-outcome', e.message);
      return onError('internal', String(e?.message ?? e));
    }
  };
}

const here = dirname(fileURLToPath(import.meta.url));
let packaged = null;

/** The Lambda handler: `index.handler`. */
export async function handler(event, context) {
  packaged ??= createHandler(here);
  return packaged(event, context);
}
