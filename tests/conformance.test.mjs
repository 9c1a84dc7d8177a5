// Cross-host conformance: the same file-type component (same sha256) over the
// same real files, on the device host (`verge-device run`) and through the
// packed Lambda@Edge handler (the zip unzipped and invoked with origin-request
// events). Labels must be identical and scores within 1e-4.
//
// Environment:
//   VERGE_DEVICE          the verge-device binary
//   VERGE_WASM_DIR        the built components (file_type.wasm)
//   VERGE_MODELS_DIR      models/.cache (magika-standard-v3-3/model.onnx)
//   VERGE_EDGE_PACKAGES   a folder holding the pack `file-type-conformance`, made with
//                           verge-edge pack --component file_type.wasm --model magika=<model.onnx>
//                             --trigger origin-request --include-body --memory 512 --timeout 30
//                             --config mode=respond --out $VERGE_EDGE_PACKAGES/file-type-conformance
//   VERGE_CORPUS          a text file, one path per line (tests/reference/corpus.py --out FILE)
//   VERGE_CONFORMANCE_FILES  how many files to take (default 64), evenly spaced over the
//                            corpus (which is grouped by category), among readable files of
//                            at most 1 MB (the origin-request body limit)
//
//   node --test tests/conformance.test.mjs

import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { scratch } from '../shims/lambda-edge/test/scratch.mjs';

const ENV = ['VERGE_DEVICE', 'VERGE_WASM_DIR', 'VERGE_MODELS_DIR', 'VERGE_EDGE_PACKAGES', 'VERGE_CORPUS'];
const unset = ENV.filter((n) => !process.env[n]);
if (unset.length && process.env.VERGE_REQUIRE_ALL === '1') {
  throw new Error(`set ${unset.join(', ')}: the conformance test needs them`);
}
const { VERGE_DEVICE, VERGE_WASM_DIR, VERGE_MODELS_DIR, VERGE_EDGE_PACKAGES, VERGE_CORPUS } = process.env;
const WANT = Number(process.env.VERGE_CONFORMANCE_FILES ?? 64);
const MIN_FILES = 60;
const TOLERANCE = 1e-4;
const BODY_LIMIT = 1024 * 1024;

const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');

/** Evenly spaced files of the corpus that an origin-request can carry whole. */
function pickFiles() {
  const candidates = readFileSync(VERGE_CORPUS, 'utf8').split('\n').map((l) => l.trim()).filter((p) => {
    if (!p) return false;
    try {
      const s = statSync(p);
      if (!s.isFile() || s.size > BODY_LIMIT) return false;
      readFileSync(p, { flag: 'r' }).subarray(0, 1);
      return true;
    } catch {
      return false;
    }
  });
  const step = Math.max(1, Math.floor(candidates.length / WANT));
  return candidates.filter((_, i) => i % step === 0).slice(0, WANT);
}

/** Whether this verge-device offers `run --backend compact` (hosts built before the compact engine do not). */
let deviceCompact;
function deviceHasCompact() {
  deviceCompact ??= /^\s*- compact:/m.test(spawnSync(VERGE_DEVICE, ['run', '--help'], { encoding: 'utf8' }).stdout ?? '');
  return deviceCompact;
}

/**
 * The device's backends: tract (built in) and ONNX Runtime (the library the
 * tests use); with `compact`, also the compact engine (for components whose
 * models it runs) when this verge-device has it, else a diagnostic says it is
 * left out (a failure under VERGE_REQUIRE_ALL=1).
 */
function deviceBackends(t, { compact = false } = {}) {
  const lib = process.env.VERGE_ONNXRUNTIME_LIB;
  if (!lib && process.env.VERGE_REQUIRE_ALL === '1') throw new Error('set VERGE_ONNXRUNTIME_LIB: the device runs on ONNX Runtime too');
  const backends = [['tract', []], ...(lib ? [['onnxruntime', ['--backend', 'onnxruntime', '--onnxruntime-lib', lib]]] : [])];
  if (compact && deviceHasCompact()) backends.push(['compact', ['--backend', 'compact']]);
  else if (compact) {
    const why = `${VERGE_DEVICE} has no \`run --backend compact\` (built before it: rebuild verge-device)`;
    if (process.env.VERGE_REQUIRE_ALL === '1') throw new Error(why);
    t.diagnostic(`no device row on the compact backend: ${why}`);
  }
  return backends;
}

/**
 * The edge's engines: the pack NAME (tract in Wasm) and NAME-onnxruntime (the
 * Node binding), both origin-request; NAME-compact (the compact engine) is a
 * viewer-request pack, for the components whose models it runs.
 */
const EDGE_ENGINES = [['tract', '', 'origin-request'], ['onnxruntime', '-onnxruntime', 'origin-request']];
const COMPACT_ENGINE = ['compact', '-compact', 'viewer-request'];

test('file-type: device host and packed Lambda@Edge handler agree, on every engine of each', { skip: unset.length ? `set ${unset.join(', ')}` : false }, async (t) => {
  const wasm = join(VERGE_WASM_DIR, 'file_type.wasm');
  const model = join(VERGE_MODELS_DIR, 'magika-standard-v3-3', 'model.onnx');
  const wasmSha = sha256(readFileSync(wasm));
  const files = pickFiles();
  assert.ok(files.length >= MIN_FILES, `only ${files.length} usable files in ${VERGE_CORPUS}`);

  // The device side: one process per backend, one JSON line per input.
  const devices = deviceBackends(t).map(([backend, flags]) => {
    const run = spawnSync(VERGE_DEVICE, ['run', wasm, '--model', `magika=${model}`, '--config', 'mode=respond', ...flags,
      ...files.flatMap((f) => ['--input', f])], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
    assert.equal(run.status, 0, `verge-device run (${backend}) failed (${run.status}): ${run.stderr}`);
    return [backend, new Map(run.stdout.trim().split('\n').map((l) => JSON.parse(l)).map((o) => [o.input, o]))];
  });

  // The edge side: each zip as deployed, unzipped and called once per file.
  const event = JSON.parse(readFileSync(new URL('../shims/lambda-edge/test/fixtures/origin-request.json', import.meta.url), 'utf8'));
  const context = { getRemainingTimeInMillis: () => 30000 };
  const edges = [];
  for (const [engine, suffix] of EDGE_ENGINES) {
    const pack = join(VERGE_EDGE_PACKAGES, `file-type-conformance${suffix}`);
    const dir = scratch('verge-conformance-');
    assert.ok(existsSync(join(pack, 'function.zip')), `${pack}/function.zip is missing`);
    execFileSync('python3', ['-m', 'zipfile', '-e', join(pack, 'function.zip'), dir]);
    const manifest = JSON.parse(readFileSync(join(dir, 'verge.json'), 'utf8'));
    assert.equal(manifest.trigger, 'origin-request');
    assert.equal(manifest.config.mode, 'respond');
    assert.equal(manifest.engine.name, engine);
    assert.equal(manifest.component.sha256, wasmSha, `the pack was made from another file_type.wasm: re-pack ${pack}`);
    const { handler } = await import(pathToFileURL(join(dir, 'index.mjs')).href);
    const logs = [];
    t.mock.method(console, 'log', (line) => logs.push(JSON.parse(line)));
    const edge = new Map();
    try {
      for (const f of files) {
        const e = structuredClone(event);
        e.Records[0].cf.request.body = {
          action: 'read-only', data: readFileSync(f).toString('base64'), encoding: 'base64', inputTruncated: false,
        };
        const result = await handler(e, context);
        assert.equal(result.status, '200', `${f}: ${JSON.stringify(result).slice(0, 300)}`);
        edge.set(f, JSON.parse(result.body));
      }
    } finally {
      console.log.mock.restore();
    }
    assert.deepEqual(logs.filter((l) => l.level !== 'info'), [], `no errors logged at the edge (${engine})`);
    edges.push([engine, edge, manifest]);
  }

  for (const [backend, device] of devices) {
    for (const [engine, edge, manifest] of edges) {
      let maxDiff = 0;
      let worst = '';
      const mismatches = [];
      for (const f of files) {
        const d = device.get(f)?.respond?.body;
        const e = edge.get(f);
        assert.ok(d, `verge-device (${backend}) gave no verdict for ${f}: ${JSON.stringify(device.get(f))}`);
        for (const k of ['label', 'dl_label', 'group', 'mime_type', 'is_text']) {
          if (d[k] !== e[k]) mismatches.push(`${f}: ${k} device ${d[k]} edge ${e[k]}`);
        }
        const diff = Math.abs(d.score - e.score);
        if (diff > maxDiff) [maxDiff, worst] = [diff, f];
      }
      const labels = new Set(files.map((f) => edge.get(f).label));
      t.diagnostic(`device on ${backend} vs edge on ${engine}: component sha256 ${wasmSha} (composed ${manifest.composed_sha256}); ${files.length} files, ${labels.size} distinct labels; max |score difference| ${maxDiff.toExponential(2)}${worst ? ` (${worst})` : ''}`);
      assert.deepEqual(mismatches, [], `device on ${backend} vs edge on ${engine}`);
      assert.ok(maxDiff <= TOLERANCE, `device on ${backend} vs edge on ${engine}: max score difference ${maxDiff} > ${TOLERANCE} on ${worst}`);
    }
  }
});

// ---------------------------------------------------------------------------
// The model components of issue 5 (every component whose model fits an origin
// trigger): fraud-score, text-embed and image-classify, each the same .wasm
// (same sha256) through `verge-device run` and through its packed handler
// (origin-request events, the input as a base64 body). Outcomes must be the
// same kind (respond / annotate / defer) with the same status, labels and
// decisions; numbers within 1e-4; embeddings with cosine >= 0.9999 and max
// |difference| <= 1e-4. The device gets exactly the settings baked into the
// pack (its verge.json `config`), which must be the ones below.
//
// Packs, in VERGE_EDGE_PACKAGES (`./dev` edge_packages makes them):
//   fraud-score-conformance     fraud_score.wasm, --model fraud-score=models/.cache/fraud-score/model.onnx
//                               --config mode=respond --config low=0.25 --config high=0.6
//   text-embed-conformance      text_embed.wasm, --model minilm=models/.cache/minilm-l6-v2-int8/model-gather-first.onnx
//                               --config mode=respond --config label.food=... (TEXT_CONFIG below)
//   image-classify-conformance  image_classify.wasm,
//                               --model efficientnet-lite0=models/.cache/efficientnet-lite0/model.onnx
//                               --config mode=respond
// each with --trigger origin-request --include-body --timeout 30, and each also as
// NAME-onnxruntime (--engine onnxruntime). fraud-score's model also runs on the
// compact engine, so it has a viewer pack too:
//   fraud-score-conformance-compact  the same as fraud-score-conformance but --engine compact
//                               --trigger viewer-request (128 MB, 5 s), called with viewer-request
//                               events; and the device runs it on `--backend compact` as well,
//                               when the verge-device at hand has that backend.
// fraud-score's outcomes must then be identical on every row (device backend or
// edge engine): the same kind, status, body, headers and printed score.
//
// Inputs: fraud-score's feature objects are written here to a temporary folder;
// text-embed's sentences likewise; image-classify takes scikit-image's photos
// that models/fetch.py extracts (models/.cache/skimage-*). With
// VERGE_REQUIRE_ALL=1 a missing input (component, model, pack, photo) fails the
// test; otherwise it skips.

const NEEDED = ['VERGE_DEVICE', 'VERGE_WASM_DIR', 'VERGE_MODELS_DIR', 'VERGE_EDGE_PACKAGES'];
const unsetModels = NEEDED.filter((n) => !process.env[n]);
const REQUIRE_ALL = process.env.VERGE_REQUIRE_ALL === '1';
const EMBEDDING_MIN_COSINE = 0.9999;

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : NaN;
};
const fmtMs = (x) => (Number.isFinite(x) ? `${x.toFixed(1)} ms` : 'n/a');

/** Files a test needs; with VERGE_REQUIRE_ALL=1 a missing one fails, else the test skips. */
function haveAll(t, paths) {
  const missing = paths.filter((p) => !existsSync(p));
  if (!missing.length) return true;
  const msg = `missing: ${missing.join(', ')}`;
  if (REQUIRE_ALL) assert.fail(`${msg} (VERGE_REQUIRE_ALL=1)`);
  t.skip(msg);
  return false;
}

/** An outcome as verge-device prints it, in one shape: { kind, status, headers, body, reason, error }. */
function deviceOutcome(line) {
  if (line.respond) {
    const r = line.respond;
    return { kind: 'respond', status: r.status, headers: r.headers ?? {}, body: r.body, contentType: r.content_type };
  }
  if (line.annotate) return { kind: 'annotate', headers: line.annotate };
  if ('defer' in line) return { kind: 'defer', reason: line.defer };
  return { kind: 'error', error: line.error ?? line };
}

/** What the packed handler returned to CloudFront, in the same shape (`sent` is the request sent). */
function edgeOutcome(result, sent) {
  if (result.status !== undefined) {
    const headers = {};
    for (const [name, list] of Object.entries(result.headers ?? {})) {
      if (name !== 'content-type') headers[name] = list.map((h) => h.value).join(', ');
    }
    const text = Buffer.from(result.body ?? '', result.bodyEncoding === 'base64' ? 'base64' : 'utf8').toString('utf8');
    const contentType = result.headers?.['content-type']?.[0]?.value ?? '';
    const body = /json/.test(contentType) ? JSON.parse(text) : text;
    return { kind: 'respond', status: Number(result.status), headers, body, contentType };
  }
  // The request passed on: deferred (x-verge-deferred) or annotated (headers it did not have).
  const added = {};
  for (const [name, list] of Object.entries(result.headers ?? {})) {
    if (!sent.headers[name]) added[name] = list.map((h) => h.value).join(', ');
  }
  if ('x-verge-deferred' in added) return { kind: 'defer', reason: added['x-verge-deferred'] };
  return { kind: 'annotate', headers: added };
}

/**
 * The device side: one `verge-device run` per content type, all the pack's
 * settings as --config. Returns Map(file → { outcome, ms }).
 */
function runDevice(wasm, models, config, inputs, flags = []) {
  const out = new Map();
  const byType = new Map();
  for (const i of inputs) byType.set(i.contentType, [...(byType.get(i.contentType) ?? []), i.file]);
  for (const [contentType, files] of byType) {
    const args = ['run', wasm, ...Object.entries(models).flatMap(([n, p]) => ['--model', `${n}=${p}`]),
      '--content-type', contentType,
      ...Object.entries(config).flatMap(([k, v]) => ['--config', `${k}=${v}`]),
      ...flags,
      ...files.flatMap((f) => ['--input', f])];
    const run = spawnSync(VERGE_DEVICE, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
    assert.ok(run.status === 0 || run.status === 2, `verge-device run failed (${run.status}): ${run.stderr}`);
    for (const line of run.stdout.trim().split('\n').map((l) => JSON.parse(l))) {
      out.set(line.input, { outcome: deviceOutcome(line), ms: line.ms });
    }
  }
  return out;
}

/**
 * The edge side: the pack's zip unzipped and its handler called once per input,
 * in order, on one warm instance, with events of the pack's trigger (verge.json
 * `trigger`: origin-request, or viewer-request, whose event has no `origin`).
 * Returns { manifest, dir, results: Map(file → { outcome, ms }), logs }.
 */
async function runEdge(t, packName, inputs) {
  const pack = join(VERGE_EDGE_PACKAGES, packName);
  const dir = scratch(`verge-conformance-${packName}-`);
  execFileSync('python3', ['-m', 'zipfile', '-e', join(pack, 'function.zip'), dir]);
  const manifest = JSON.parse(readFileSync(join(dir, 'verge.json'), 'utf8'));
  const { handler } = await import(pathToFileURL(join(dir, 'index.mjs')).href);
  assert.ok(['origin-request', 'viewer-request'].includes(manifest.trigger), `${packName} is packed for ${manifest.trigger}, not a request trigger`);
  const event = JSON.parse(readFileSync(new URL(`../shims/lambda-edge/test/fixtures/${manifest.trigger}.json`, import.meta.url), 'utf8'));
  const context = { getRemainingTimeInMillis: () => manifest.timeout_s * 1000 };
  const logs = [];
  const results = new Map();
  t.mock.method(console, 'log', (line) => logs.push(JSON.parse(line)));
  try {
    for (const { file, contentType } of inputs) {
      const e = structuredClone(event);
      const req = e.Records[0].cf.request;
      const body = readFileSync(file);
      req.headers['content-type'] = [{ key: 'Content-Type', value: contentType }];
      req.headers['content-length'] = [{ key: 'Content-Length', value: String(body.length) }];
      req.body = { action: 'read-only', data: body.toString('base64'), encoding: 'base64', inputTruncated: false };
      const sent = structuredClone(req);
      const started = performance.now();
      const result = await handler(e, context);
      const ms = performance.now() - started;
      results.set(file, { outcome: edgeOutcome(result, sent), ms });
    }
  } finally {
    console.log.mock.restore();
  }
  return { manifest, dir, results, logs };
}

/** The checks every pack shares: trigger, body, settings, the component's and models' sha256. */
function checkManifest(manifest, { wasm, models, config, trigger = 'origin-request' }) {
  assert.equal(manifest.trigger, trigger);
  assert.equal(manifest.include_body, true);
  assert.ok(manifest.timeout_s <= 30, `timeout ${manifest.timeout_s} s`);
  assert.deepEqual(manifest.config, config, 'the pack was made with other settings than this test expects');
  const wasmSha = sha256(readFileSync(wasm));
  assert.equal(manifest.component.sha256, wasmSha, `the pack was made from another ${manifest.component.name}: re-pack it`);
  for (const [name, path] of Object.entries(models)) {
    assert.equal(manifest.models?.[name]?.sha256, sha256(readFileSync(path)), `model ${name} in the pack is not ${path}`);
  }
  return wasmSha;
}

/**
 * Device and edge side by side, on every edge engine (pack NAME-conformance
 * and NAME-conformance-onnxruntime; with `compact`, also the viewer-request
 * pack NAME-conformance-compact and the device's compact backend) against
 * every device backend; `compare(file, d, e)` pushes mismatches and returns
 * the numbers' max |diff|.
 */
async function conformance(t, { name, wasmFile, models, config, inputs, compare, summary, compact = false, compactTrigger = COMPACT_ENGINE[2] }) {
  const wasm = join(VERGE_WASM_DIR, wasmFile);
  const engines = compact ? [...EDGE_ENGINES, [COMPACT_ENGINE[0], COMPACT_ENGINE[1], compactTrigger]] : EDGE_ENGINES;
  const packs = engines.map(([engine, suffix, trigger]) => [engine, `${name}-conformance${suffix}`, trigger]);
  if (!haveAll(t, [wasm, ...Object.values(models), ...inputs.map((i) => i.file), ...packs.map(([, p]) => join(VERGE_EDGE_PACKAGES, p, 'function.zip'))])) return;

  const edges = [];
  for (const [engine, packName, trigger] of packs) {
    const edge = await runEdge(t, packName, inputs);
    checkManifest(edge.manifest, { wasm, models, config, trigger });
    assert.equal(edge.manifest.engine.name, engine);
    assert.deepEqual(edge.logs.filter((l) => l.level !== 'info'), [], `no errors logged at the edge (${engine})`);
    edges.push([engine, edge]);
  }
  const wasmSha = sha256(readFileSync(wasm));
  const devices = deviceBackends(t, { compact }).map(([backend, flags]) => [backend, runDevice(wasm, models, edges[0][1].manifest.config, inputs, flags)]);

  for (const [backend, device] of devices) {
    for (const [engine, edge] of edges) {
      const mismatches = [];
      let maxDiff = 0;
      let worst = '';
      for (const { file } of inputs) {
        const d = device.get(file)?.outcome;
        const e = edge.results.get(file)?.outcome;
        assert.ok(d, `verge-device (${backend}) gave no outcome for ${file}`);
        assert.notEqual(d.kind, 'error', `${file}: verge-device (${backend}): ${JSON.stringify(d.error)}`);
        if (d.kind !== e.kind) {
          mismatches.push(`${file}: device ${d.kind} edge ${e.kind} (${JSON.stringify(e).slice(0, 200)})`);
          continue;
        }
        if (d.kind === 'respond' && (d.status !== e.status || d.contentType !== e.contentType)) {
          mismatches.push(`${file}: status/content type device ${d.status} ${d.contentType} edge ${e.status} ${e.contentType}`);
        }
        const diff = compare(file, d, e, mismatches);
        if (diff > maxDiff) [maxDiff, worst] = [diff, file];
      }
      const edgeMs = inputs.map((i) => edge.results.get(i.file).ms);
      const deviceMs = inputs.map((i) => device.get(i.file).ms);
      const pair = `device on ${backend} vs edge on ${engine} (${edge.manifest.trigger})`;
      t.diagnostic(`${pair}: component sha256 ${wasmSha} (composed ${edge.manifest.composed_sha256}, memory ${edge.manifest.memory_mb} MB)`);
      if (summary) t.diagnostic(summary(inputs.map((i) => edge.results.get(i.file).outcome)));
      t.diagnostic(`${pair}: ${inputs.length} inputs; max |difference| ${maxDiff.toExponential(2)}${worst ? ` (${worst})` : ''}`);
      t.diagnostic(`${pair}: per request: edge first (cold) ${fmtMs(edgeMs[0])}, warm median ${fmtMs(median(edgeMs.slice(1)))}; device median ${fmtMs(median(deviceMs))} (fresh instance per request)`);
      assert.deepEqual(mismatches, [], pair);
      assert.ok(maxDiff <= TOLERANCE, `${pair}: max difference ${maxDiff} > ${TOLERANCE} on ${worst}`);
    }
  }
  return { devices, edges, device: devices[0][1], edge: edges[0][1] };
}

/** Pushes a mismatch when |a - b| > TOLERANCE (or either is not a number); returns |a - b|. */
function close(mismatches, what, a, b) {
  const diff = Math.abs(Number(a) - Number(b));
  if (!Number.isFinite(diff)) {
    mismatches.push(`${what}: device ${a} edge ${b} (not numbers)`);
    return 0;
  }
  if (diff > TOLERANCE) mismatches.push(`${what}: device ${a} edge ${b}`);
  return diff;
}

const skipModels = unsetModels.length ? `set ${unsetModels.join(', ')}` : false;

// fraud-score: thresholds set so the three outcomes all occur (the model's scores
// top out near 0.68 on these synthetic transactions, under the default high of 0.8).
const FRAUD_CONFIG = { mode: 'respond', low: '0.25', high: '0.6' };
const FRAUD_ROWS = {
  // → annotate (score ≈ 0.005): a small card-present purchase on an old card
  'local-small': { amount: 12.5, hour: 14, distance_km: 2, merchant_risk: 0.1, card_age_days: 1400, txn_last_24h: 1, foreign: false, card_present: true },
  // → annotate (≈ 0.07): a held-out row of models/fraud_score.py, rounded
  'evening': { amount: 215.65, hour: 19, distance_km: 45.63, merchant_risk: 0.39, card_age_days: 501.6, txn_last_24h: 1, foreign: 0, card_present: 1 },
  // → defer (≈ 0.55): the held-out row with the highest probability
  'night-foreign': { amount: 250.97, hour: 1, distance_km: 65.6, merchant_risk: 0.31, card_age_days: 454.8, txn_last_24h: 4, foreign: 1, card_present: 0 },
  // → defer (≈ 0.53)
  'late-risky': { amount: 120, hour: 23, distance_km: 150, merchant_risk: 0.6, card_age_days: 200, txn_last_24h: 3, foreign: 1, card_present: 0 },
  // → block, 403 (≈ 0.67)
  'far-new-card': { amount: 2400, hour: 3, distance_km: 800, merchant_risk: 0.95, card_age_days: 5, txn_last_24h: 12, foreign: true, card_present: false },
  // → block, 403 (≈ 0.68)
  'burst': { amount: 900, hour: 2, distance_km: 300, merchant_risk: 0.8, card_age_days: 30, txn_last_24h: 8, foreign: true, card_present: false },
};

// fraud-score is written three times, with each language's SDK: Rust,
// JavaScript (componentize-qjs: small enough for the viewer) and Python
// (componentize-py: 18 MB, so its compact pack is an origin one). Each is held
// to the same rows, and all three to each other's outcomes.
const FRAUD_LANGUAGES = [
  ['rust', 'fraud-score', 'fraud_score.wasm', 'viewer-request'],
  ['javascript', 'fraud-score-js', 'fraud_score_js.wasm', 'viewer-request'],
  ['python', 'fraud-score-py', 'fraud_score_py.wasm', 'origin-request'],
];
const fraudByLanguage = new Map();

for (const [language, name, wasmFile, compactTrigger] of FRAUD_LANGUAGES) test(`fraud-score in ${language}: device host and packed Lambda@Edge handler agree`, { skip: skipModels }, async (t) => {
  const dir = scratch('verge-conformance-fraud-');
  const inputs = Object.entries(FRAUD_ROWS).map(([name, row]) => {
    const file = join(dir, `${name}.json`);
    writeFileSync(file, JSON.stringify(row));
    return { file, contentType: 'application/json' };
  });
  const score = (o) => (o.kind === 'annotate' ? o.headers['x-fraud-score']
    : o.kind === 'respond' ? o.body?.fraud_score
      : o.reason.match(/fraud score (\S+) is between/)?.[1]);
  const compared = await conformance(t, {
    name,
    wasmFile,
    models: { 'fraud-score': join(VERGE_MODELS_DIR, 'fraud-score', 'model.onnx') },
    config: FRAUD_CONFIG,
    inputs,
    compact: true,
    compactTrigger,
    compare(file, d, e, mismatches) {
      if (d.kind === 'annotate' && Object.keys(d.headers).join() !== Object.keys(e.headers).join()) {
        mismatches.push(`${file}: annotated headers device ${Object.keys(d.headers)} edge ${Object.keys(e.headers)}`);
      }
      if (d.kind === 'respond') {
        for (const k of ['decision', 'threshold']) {
          if (d.body[k] !== e.body[k]) mismatches.push(`${file}: ${k} device ${d.body[k]} edge ${e.body[k]}`);
        }
        close(mismatches, `${file}: x-fraud-score header`, d.headers['x-fraud-score'], e.headers['x-fraud-score']);
      }
      if (d.kind === 'defer') {
        const strip = (r) => r.replace(/fraud score \S+ is/, 'fraud score _ is');
        if (strip(d.reason) !== strip(e.reason)) mismatches.push(`${file}: reason device ${d.reason} edge ${e.reason}`);
      }
      return close(mismatches, `${file}: fraud score`, score(d), score(e));
    },
    summary: (outcomes) => `outcomes: ${outcomes.map((o) => `${o.kind}${o.status ? ` ${o.status}` : ''} ${score(o)}`).join('; ')}`,
  });
  if (!compared) return;
  const kinds = new Set([...compared.edge.results.values()].map((r) => r.outcome.kind));
  assert.deepEqual([...kinds].sort(), ['annotate', 'defer', 'respond'], 'the inputs cover annotate, defer and block');
  // Identical, not only close: every device backend and edge engine (origin
  // and viewer packs) gives each input the very same outcome, printed score included.
  const rows = [
    ...compared.devices.map(([backend, d]) => [`device ${backend}`, (f) => d.get(f)?.outcome]),
    ...compared.edges.map(([engine, e]) => [`edge ${engine} (${e.manifest.trigger})`, (f) => e.results.get(f)?.outcome]),
  ];
  const canonical = (o) => JSON.stringify({ kind: o?.kind, status: o?.status, body: o?.body, headers: o?.headers, reason: o?.reason });
  const differ = [];
  for (const { file } of inputs) {
    const [first, ...rest] = rows.map(([row, get]) => [row, canonical(get(file))]);
    for (const [row, c] of rest) if (c !== first[1]) differ.push(`${file}: ${first[0]} ${first[1]}, ${row} ${c}`);
  }
  t.diagnostic(`identical outcomes on ${rows.length} rows (${rows.map(([r]) => r).join(', ')}): ${inputs.length - new Set(differ.map((d) => d.split(':')[0])).size} of ${inputs.length} inputs`);
  assert.ok(rows.some(([r]) => r.startsWith(`edge compact (${compactTrigger})`)), 'the compact pack is among the rows');
  assert.deepEqual(differ, []);
  fraudByLanguage.set(language, Object.fromEntries(Object.keys(FRAUD_ROWS).map((row, i) => [row, canonical(rows[0][1](inputs[i].file))])));
});

test('fraud-score: Rust, JavaScript and Python give every row the same outcome', { skip: skipModels }, (t) => {
  if (fraudByLanguage.size < FRAUD_LANGUAGES.length) {
    const msg = `compared in ${[...fraudByLanguage.keys()].join(', ') || 'no language'} only`;
    if (REQUIRE_ALL) assert.fail(msg);
    return t.skip(msg);
  }
  const [rust, ...others] = FRAUD_LANGUAGES.map(([language]) => [language, fraudByLanguage.get(language)]);
  for (const [language, outcomes] of others) assert.deepEqual(outcomes, rust[1], `${language} against rust`);
  t.diagnostic(`identical in ${FRAUD_LANGUAGES.map(([l]) => l).join(', ')} over ${Object.keys(FRAUD_ROWS).length} transactions`);
});

// text-embed: reference sentences per label; the inputs are plain text.
const TEXT_CONFIG = {
  mode: 'respond',
  'label.food': 'I ate a delicious pizza for dinner|The soup was too salty',
  'label.sports': 'The team won the football match|She ran a marathon in under three hours',
  'label.weather': 'It will rain tomorrow afternoon|The sky is clear and sunny',
};
const SENTENCES = {
  food: 'We had spaghetti and a glass of red wine.',
  weather: 'Heavy snow is expected over the weekend.',
  sports: 'The striker scored twice in the second half.',
  unicode: 'Crème brûlée, café au lait — und ein Stück Käsekuchen 🍰.',
  // Over 128 tokens: truncated.
  long: Array.from({ length: 12 }, (_, i) => `Sentence ${i + 1} says the forecast calls for light showers near the coast.`).join(' '),
};

test('text-embed: device host and packed Lambda@Edge handler agree', { skip: skipModels }, async (t) => {
  const dir = scratch('verge-conformance-text-');
  const inputs = Object.entries(SENTENCES).map(([name, text]) => {
    const file = join(dir, `${name}.txt`);
    writeFileSync(file, text);
    return { file, contentType: 'text/plain; charset=utf-8' };
  });
  let minCosine = 1;
  let maxEmbeddingDiff = 0;
  const compared = await conformance(t, {
    name: 'text-embed',
    wasmFile: 'text_embed.wasm',
    models: { minilm: join(VERGE_MODELS_DIR, 'minilm-l6-v2-int8', 'model-gather-first.onnx') },
    config: TEXT_CONFIG,
    inputs,
    compare(file, d, e, mismatches) {
      if (d.kind !== 'respond') {
        mismatches.push(`${file}: ${d.kind}, expected respond`);
        return 0;
      }
      for (const k of ['tokens', 'truncated', 'label']) {
        if (d.body[k] !== e.body[k]) mismatches.push(`${file}: ${k} device ${d.body[k]} edge ${e.body[k]}`);
      }
      let diff = close(mismatches, `${file}: similarity`, d.body.similarity, e.body.similarity);
      const labels = Object.keys(d.body.similarities ?? {});
      if (labels.join() !== Object.keys(e.body.similarities ?? {}).join()) mismatches.push(`${file}: labels differ`);
      for (const l of labels) diff = Math.max(diff, close(mismatches, `${file}: similarity ${l}`, d.body.similarities[l], e.body.similarities?.[l]));
      const [a, b] = [d.body.embedding, e.body.embedding];
      if (!Array.isArray(a) || !Array.isArray(b) || a.length !== 384 || b.length !== 384) {
        mismatches.push(`${file}: embedding lengths device ${a?.length} edge ${b?.length}`);
        return diff;
      }
      let dot = 0, na = 0, nb = 0, maxAbs = 0;
      a.forEach((x, i) => {
        dot += x * b[i]; na += x * x; nb += b[i] * b[i];
        maxAbs = Math.max(maxAbs, Math.abs(x - b[i]));
      });
      const cos = dot / Math.sqrt(na * nb);
      minCosine = Math.min(minCosine, cos);
      maxEmbeddingDiff = Math.max(maxEmbeddingDiff, maxAbs);
      if (!(cos >= EMBEDDING_MIN_COSINE)) mismatches.push(`${file}: embedding cosine ${cos} < ${EMBEDDING_MIN_COSINE}`);
      if (!(maxAbs <= TOLERANCE)) mismatches.push(`${file}: embedding max |difference| ${maxAbs} > ${TOLERANCE}`);
      return Math.max(diff, maxAbs);
    },
    summary: (outcomes) => `labels: ${outcomes.map((o) => `${o.body?.label} ${o.body?.similarity} (${o.body?.tokens} tokens${o.body?.truncated ? ', truncated' : ''})`).join('; ')}`,
  });
  if (!compared) return;
  t.diagnostic(`embeddings: min cosine ${minCosine.toFixed(7)}, max |difference| ${maxEmbeddingDiff.toExponential(2)}`);
  const labels = [...compared.edge.results.values()].slice(0, 3).map((r) => r.outcome.body.label);
  assert.deepEqual(labels, ['food', 'weather', 'sports'], 'the first three sentences find their labels');
  assert.equal(compared.edge.results.get(inputs.at(-1).file).outcome.body.truncated, true, 'the long text is truncated');
});

// image-classify: scikit-image's photographs (models/manifest.toml: skimage-*).
const IMAGES = [
  ['skimage-chelsea', 'chelsea.png', 'image/png'],
  ['skimage-coffee', 'coffee.png', 'image/png'],
  ['skimage-rocket', 'rocket.jpg', 'image/jpeg'],
];

test('image-classify: device host and packed Lambda@Edge handler agree', { skip: skipModels }, async (t) => {
  const inputs = IMAGES.map(([dir, file, contentType]) => ({ file: join(VERGE_MODELS_DIR, dir, file), contentType }));
  await conformance(t, {
    name: 'image-classify',
    wasmFile: 'image_classify.wasm',
    models: { 'efficientnet-lite0': join(VERGE_MODELS_DIR, 'efficientnet-lite0', 'model.onnx') },
    config: { mode: 'respond' },
    inputs,
    compare(file, d, e, mismatches) {
      if (d.kind !== 'respond') {
        mismatches.push(`${file}: ${d.kind}, expected respond`);
        return 0;
      }
      const [a, b] = [d.body.top ?? [], e.body.top ?? []];
      if (a.length !== 5 || a.length !== b.length) mismatches.push(`${file}: top-k lengths device ${a.length} edge ${b.length}`);
      let diff = 0;
      a.forEach((x, i) => {
        if (x.index !== b[i]?.index || x.label !== b[i]?.label) {
          mismatches.push(`${file}: rank ${i + 1} device ${x.index} ${x.label} edge ${b[i]?.index} ${b[i]?.label}`);
        }
        diff = Math.max(diff, close(mismatches, `${file}: rank ${i + 1} score`, x.score, b[i]?.score));
      });
      return diff;
    },
    summary: (outcomes) => `top-1: ${outcomes.map((o) => `${o.body?.top?.[0]?.label} ${o.body?.top?.[0]?.score}`).join('; ')}`,
  });
});

// ---------------------------------------------------------------------------
// The probe on both hosts: state (`count`), settings (`config:KEY`) and the
// kinds and messages of errors, including a wasi:nn error's code, are the
// same on the device and at the edge. The edge side is the pack
// probe-origin-fail (--config greeting=hello --on-error fail), the device
// gets the same setting. Each command is the first of a fresh instance on
// both hosts (state in a one-shot run lives for one instance; a fresh
// container's starts empty too).

const PROBE_COMMANDS = ['count', 'config:greeting', 'config:nothing-set', 'invalid', 'nn:nosuch:x:1:f32', 'nn:', 'defer', 'annotate', 'trap'];

test('probe: state, settings and error kinds agree between the device and the edge', { skip: skipModels }, async (t) => {
  const wasm = join(VERGE_WASM_DIR, 'probe.wasm');
  if (!haveAll(t, [wasm, join(VERGE_EDGE_PACKAGES, 'probe-origin-fail', 'function.zip')])) return;
  const dir = scratch('verge-conformance-probe-');
  const inputs = PROBE_COMMANDS.map((command, i) => {
    const file = join(dir, `command-${i}.txt`);
    writeFileSync(file, command);
    return { file, command };
  });
  // Device: one `run` per command, so each is the first call of its instance.
  const device = inputs.map(({ file }) => {
    const run = spawnSync(VERGE_DEVICE, ['run', wasm, '--config', 'greeting=hello', '--input', file], { encoding: 'utf8' });
    assert.ok(run.status === 0 || run.status === 2, `verge-device run failed (${run.status}): ${run.stderr}`);
    const line = JSON.parse(run.stdout.trim());
    if (!line.error) return deviceOutcome(line);
    // "invalid input: …" / "model error: …": the host's prefix before the component's message.
    const message = line.error.message.replace(/^(invalid input|model error|internal error): /, '');
    return { kind: 'error', error: { kind: line.error.kind, message } };
  });
  // Edge: a fresh container per command.
  const zipDir = (i) => {
    const d = scratch(`verge-conformance-probe-edge-${i}-`);
    execFileSync('python3', ['-m', 'zipfile', '-e', join(VERGE_EDGE_PACKAGES, 'probe-origin-fail', 'function.zip'), d]);
    return d;
  };
  const fixtureEvent = JSON.parse(readFileSync(new URL('../shims/lambda-edge/test/fixtures/origin-request.json', import.meta.url), 'utf8'));
  const edge = [];
  for (const [i, { command }] of inputs.entries()) {
    const { handler } = await import(pathToFileURL(join(zipDir(i), 'index.mjs')).href);
    const e = structuredClone(fixtureEvent);
    const req = e.Records[0].cf.request;
    req.body = { action: 'read-only', data: Buffer.from(command).toString('base64'), encoding: 'base64', inputTruncated: false };
    const sent = structuredClone(req);
    const logs = [];
    t.mock.method(console, 'log', (line) => logs.push(JSON.parse(line)));
    let result;
    try {
      result = await handler(e, { getRemainingTimeInMillis: () => 30000 });
    } finally {
      console.log.mock.restore();
    }
    const failed = logs.find((l) => l.level === 'error');
    edge.push(failed ? { kind: 'error', error: { kind: failed.kind, message: failed.message } } : edgeOutcome(result, sent));
  }
  const mismatches = [];
  inputs.forEach(({ command }, i) => {
    const [d, e] = [device[i], edge[i]];
    // A trap's message is each engine's backtrace: the kind must agree.
    if (d.error?.kind === 'trap' && e.error?.kind === 'trap') return;
    const pick = (o) => JSON.stringify({ kind: o.kind, status: o.status, body: o.body, headers: o.headers, reason: o.reason, error: o.error });
    if (pick(d) !== pick(e)) mismatches.push(`${command}: device ${pick(d)} edge ${pick(e)}`);
  });
  t.diagnostic(`probe commands: ${inputs.map(({ command }, i) => `${command} → ${device[i].kind}${device[i].error ? ` ${device[i].error.kind}` : ''}`).join('; ')}`);
  assert.deepEqual(mismatches, []);
  assert.deepEqual(device[0].body, { hits: 1 });
  assert.deepEqual(device[1].body, { value: 'hello' });
  assert.match(device[4].error.message, /^ErrorCode::NotFound: no model named 'nosuch' is deployed$/);
});
