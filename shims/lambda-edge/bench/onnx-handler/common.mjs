// What the four baseline handlers share: how they log, how they print a
// float32 (as the components do), their settings file, their onnxruntime
// session, the request's body decoded and its answer (headers added or a JSON
// response), the way a failure lets the request through, and the Lambda entry
// point. edge-bench.mjs ships this file in every baseline zip beside the job's
// index.mjs.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import ort from 'onnxruntime-node';

/** A request the job cannot take (logged as invalid-input). */
export class InvalidInput extends Error {}

/** A float32 as Rust's `{}` prints it: the shortest decimal that reads back as the same f32, no exponent. */
export function f32String(x) {
  for (let p = 1; p <= 9; p++) {
    const d = Number(x.toPrecision(p));
    if (Math.fround(d) === x) {
      const s = String(d);
      return s.includes('e') ? d.toFixed(20).replace(/\.?0+$/, '') : s;
    }
  }
  return String(x);
}

export function log(level, fields) {
  console.log(JSON.stringify({ level, time: new Date().toISOString(), ...fields }));
}

/** `dir/config.json` (the deployment's settings), or {} without one. */
export function readConfig(dir) {
  const path = join(dir, 'config.json');
  return existsSync(path) ? JSON.parse(readFileSync(path, 'utf8')) : {};
}

/**
 * The model's onnxruntime session, created on the first call and reused while
 * the instance is warm (module scope in Lambda terms).
 */
export function lazySession(modelPath, sessionOptions) {
  let session = null;
  return () => (session ??= ort.InferenceSession.create(modelPath, { executionProviders: ['cpu'], ...sessionOptions }));
}

/** The request going on to the origin with `add` ({ name: value }) among its headers. */
export function withHeaders(request, add) {
  const headers = { ...request.headers };
  for (const [key, value] of Object.entries(add)) headers[key] = [{ key, value }];
  request.headers = headers;
  return request;
}

/** A generated response: JSON `body` with `status`, and `add` ({ name: value }) after its Content-Type. */
export function jsonResponse(status, body, add = {}) {
  const headers = { 'content-type': [{ key: 'Content-Type', value: 'application/json' }] };
  for (const [key, value] of Object.entries(add)) headers[key] = [{ key, value }];
  return { status, headers, body, bodyEncoding: 'text' };
}

/** A failed call: logged, and the request goes on to the origin unchanged. */
function passOnError(request, e, ms) {
  log('error', { kind: e instanceof InvalidInput ? 'invalid-input' : 'error', message: String(e?.message ?? e), ms });
  return request;
}

/**
 * An origin-request handler around `answer(bytes, request)`, which gets the
 * body as a Buffer and resolves to `{ reply, log }`: what CloudFront gets and
 * the fields of the invocation's log line. No body or a truncated one passes
 * the request on (every job needs the whole body); so does a failure.
 */
export function bodyHandler(answer) {
  return async function handler(event) {
    const started = process.hrtime.bigint();
    const ms = () => Number(process.hrtime.bigint() - started) / 1e6;
    const request = event.Records[0].cf.request;
    const body = request.body;
    if (typeof body?.data !== 'string' || body.inputTruncated) {
      log('info', { kind: 'pass', reason: body?.inputTruncated ? 'truncated body' : 'no body', ms: ms() });
      return request;
    }
    try {
      const bytes = Buffer.from(body.data, body.encoding === 'text' ? 'utf8' : 'base64');
      const { reply, log: fields } = await answer(bytes, request);
      log('info', { ...fields, ms: ms() });
      return reply;
    } catch (e) {
      return passOnError(request, e, ms());
    }
  };
}

/** The Lambda entry point (`index.handler`) over a job's `createHandler`, made on first use. */
export function lambdaHandler(createHandler) {
  let packaged = null;
  return async (event, context) => {
    packaged ??= createHandler();
    return packaged(event, context);
  };
}
