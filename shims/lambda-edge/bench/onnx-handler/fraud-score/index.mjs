// The fraud-score baseline for the edge benchmark (bench/edge-bench.mjs): what
// a web team would write without verge. A plain Lambda@Edge origin-request
// handler that reads a transaction's features from the JSON body, runs the
// fraud model (models/fraud_score.py: a scikit-learn random forest as one ONNX
// TreeEnsembleClassifier) with onnxruntime-node and answers as the verge
// fraud-score component does (components/fraud-score/src/lib.rs):
//
// * score < low: the request goes on with `x-fraud-score`;
// * score >= high: 403 with {"decision":"block","fraud_score":…,"threshold":…};
// * in between: the request goes on to the origin with `x-verge-deferred`
//   saying why (the header the verge shim uses, so that both give CloudFront
//   the same result).
//
// Deployed layout (the zip's root; edge-bench.mjs builds it from this file):
//   index.mjs  common.mjs  package.json  config.json ({"low": 0.3, "high": 0.8}, optional)
//   node_modules/onnxruntime-{node,common}  model/fraud-score.onnx
// Lambda handler: `index.handler`. An invalid body or a model error passes the
// request on unchanged (verge's `--on-error pass`); every invocation logs one
// JSON line.

import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import ort from 'onnxruntime-node';

import {
  InvalidInput, bodyHandler, f32String, jsonResponse, lambdaHandler, lazySession, readConfig, withHeaders,
} from '../common.mjs';

const here = dirname(fileURLToPath(import.meta.url));

/** The model's inputs, in its order (FEATURES in models/fraud_score.py). */
export const FEATURES = ['amount', 'hour', 'distance_km', 'merchant_risk', 'card_age_days', 'txn_last_24h', 'foreign', 'card_present'];

/** The feature vector from a JSON object of named numbers (booleans count as 0/1). */
export function parseFeatures(text) {
  if (!text.trim()) throw new InvalidInput(`empty body: expected a JSON object with the features ${FEATURES.join(', ')}`);
  let value;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new InvalidInput(`the body is not JSON: ${e.message}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new InvalidInput('expected a JSON object of named features, e.g. {"amount": 12.5, ...}');
  }
  const out = new Float32Array(FEATURES.length);
  FEATURES.forEach((name, i) => {
    if (!(name in value)) throw new InvalidInput(`missing feature '${name}'`);
    const v = value[name];
    if (typeof v === 'boolean') out[i] = v ? 1 : 0;
    else if (typeof v === 'number') out[i] = v;
    else throw new InvalidInput(`feature '${name}' must be a number, got ${JSON.stringify(v)}`);
    if (!Number.isFinite(out[i])) throw new InvalidInput(`feature '${name}' must be a finite number, got ${v}`);
  });
  return out;
}

/**
 * A handler over the fraud model. Options: `dir` (the folder holding model/
 * and config.json), or explicit `model`; `low`, `high` (else config.json, else
 * 0.3 and 0.8); `sessionOptions` for onnxruntime.
 */
export function createHandler(opts = {}) {
  const dir = opts.dir ?? here;
  const cfg = readConfig(dir);
  const low = Math.fround(Number(opts.low ?? cfg.low ?? 0.3));
  const high = Math.fround(Number(opts.high ?? cfg.high ?? 0.8));
  if (!(low >= 0 && high <= 1 && low <= high)) throw new Error(`low = ${low}, high = ${high}: need 0 <= low <= high <= 1`);
  const sessionOf = lazySession(opts.model ?? join(dir, 'model/fraud-score.onnx'), opts.sessionOptions);

  return bodyHandler(async (bytes, request) => {
    const features = parseFeatures(bytes.toString('utf8'));
    const s = await sessionOf();
    const out = await s.run({ features: new ort.Tensor('float32', features, [1, FEATURES.length]) }, ['probabilities']);
    const proba = out.probabilities;
    if (proba.dims.join() !== '1,2') throw new Error(`probabilities of shape [${proba.dims}], expected [1,2]`);
    const score = proba.data[1];
    const s32 = f32String(score);
    if (score >= high) {
      const body = `{"decision":"block","fraud_score":${s32},"threshold":${f32String(high)}}`;
      return { reply: jsonResponse('403', body, { 'x-fraud-score': s32 }), log: { kind: 'respond', score } };
    }
    if (score < low) return { reply: withHeaders(request, { 'x-fraud-score': s32 }), log: { kind: 'annotate', score } };
    const reason = `fraud score ${s32} is between ${f32String(low)} and ${f32String(high)}: the origin decides`;
    return { reply: withHeaders(request, { 'x-verge-deferred': reason }), log: { kind: 'defer', score } };
  });
}

/** The Lambda handler: `index.handler`. */
export const handler = lambdaHandler(createHandler);
