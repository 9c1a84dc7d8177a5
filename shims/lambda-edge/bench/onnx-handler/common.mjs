// What the four baseline handlers share: how they log, how they print a
// float32 (as the components do), their settings file, the way a failure lets
// the request through, and the Lambda entry point. edge-bench.mjs ships this
// file in every baseline zip beside the job's index.mjs.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

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

/** A failed call: logged, and the request goes on to the origin unchanged. */
export function passOnError(request, e, ms) {
  log('error', { kind: e instanceof InvalidInput ? 'invalid-input' : 'error', message: String(e?.message ?? e), ms });
  return request;
}

/** The Lambda entry point (`index.handler`) over a job's `createHandler`, made on first use. */
export function lambdaHandler(createHandler) {
  let packaged = null;
  return async (event, context) => {
    packaged ??= createHandler();
    return packaged(event, context);
  };
}
