// Viewer triggers: the packs made for viewer-request (the compact wasi:nn
// engine, zips of a few hundred KB), each unzipped and called as Lambda@Edge
// would, with viewer-request events.
//
//   1. scikit-learn models through the packed zip: every case of
//      $VERGE_SKLEARN_CASES/cases.json (models/sklearn_cases.py: inputs, the
//      outputs onnxruntime gave, a tolerance) runs inside Wasm through the probe's
//      `nn-case` command, checked by the behaviour suite's own checker. A case
//      whose JSON does not fit the viewer's 40 KB request body is split by rows
//      into cases that do (none does today: the largest is ~20 KB, ~27 KB in base64).
//   2. Viewer limits as Lambda caps them: per viewer pack, a child
//      `node --max-old-space-size=96` (a V8 heap cap inside the 128 MB a viewer
//      function gets) imports the unzipped package, answers one cold and WARM
//      (200) warm invocations of realistic events, and reports its peak RSS
//      (process.resourceUsage().maxRSS). Every answer must be the expected one
//      and the peak RSS at most 128 MB. Nothing here is timed (see bench/edge-bench.mjs).
//   3. The fraud cascade: fraud-score-viewer (compact engine, low 0.2, high 0.5)
//      then fraud-score-origin (onnxruntime engine, low 0.2, high 0.4)
//      on the same requests. The viewer answers 403 exactly when score >= its
//      high; otherwise the request it passes on (annotated with x-fraud-score,
//      or deferred with x-verge-deferred) becomes the origin-request event's
//      request, and the origin decides with its own thresholds. Both functions
//      run the same model on different engines: their scores must be the same
//      printed numbers, and the viewer's x-fraud-score must reach the origin.
//      The same again with fraud-score-conformance-compact as the viewer (high
//      0.6). (This model's scores stay under ~0.74, the maximum a search
//      found, so the thresholds are set where its clear cases are.)
//
// Environment:
//   VERGE_EDGE_PACKAGES    holds the packs (./dev test makes them):
//     fraud-score-viewer               fraud_score.wasm, viewer-request, --include-body, low 0.2, high 0.5
//     fraud-score-conformance-compact  the same with --config mode=respond low=0.25 high=0.6
//     fraud-score-origin               fraud_score.wasm, origin-request, onnxruntime, --memory 1024 --timeout 30, low 0.2, high 0.4
//     sklearn-viewer                   probe.wasm with the 13 scikit-learn models, viewer-request, --include-body
//     nn-suite-compact                 probe.wasm with the behaviour suite's models, viewer-request, --include-body
//   VERGE_SKLEARN_CASES    models/sklearn_cases.py's output folder (cases.json, models/)
//   VERGE_FRAUD_REFERENCE  held-out rows of models/fraud_score.py --reference (features, proba)
// Missing ones skip the tests that need them, saying which; under
// VERGE_REQUIRE_ALL=1 they fail.
//
//   node --test shims/lambda-edge/test/viewer.test.mjs

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { getHeapStatistics } from 'node:v8';
import { scratch } from './scratch.mjs';

const KB = 1024;
const MB = 1024 * KB;
const VIEWER_MEMORY = 128 * MB;
const OLD_SPACE_MB = 96;
const WARM = 200;
const CHILD_TIMEOUT_MS = 60_000;

// ---------------------------------------------------------------- shared

const fixtures = {
  'viewer-request': JSON.parse(readFileSync(new URL('fixtures/viewer-request.json', import.meta.url), 'utf8')),
  'origin-request': JSON.parse(readFileSync(new URL('fixtures/origin-request.json', import.meta.url), 'utf8')),
};

/** A request event of `trigger` carrying `body`, as CloudFront sends it with include-body. */
function requestEvent(trigger, body, { contentType = 'application/json', headers = {} } = {}) {
  const e = structuredClone(fixtures[trigger]);
  assert.ok(e, `no fixture for a ${trigger} event`);
  const req = e.Records[0].cf.request;
  const bytes = Buffer.from(body);
  req.headers['content-type'] = [{ key: 'Content-Type', value: contentType }];
  req.headers['content-length'] = [{ key: 'Content-Length', value: String(bytes.length) }];
  for (const [k, v] of Object.entries(headers)) req.headers[k] = [{ key: k, value: v }];
  req.body = { action: 'read-only', data: bytes.toString('base64'), encoding: 'base64', inputTruncated: false };
  return e;
}

/**
 * What CloudFront gets, in one small shape: a generated response
 * `{ status, body }` (the body as text), or the request passed on with the
 * headers the function added or changed, `{ passed: { name: value } }`.
 */
function answerOf(result, sent) {
  if (result?.status !== undefined) {
    return { status: Number(result.status), body: Buffer.from(result.body ?? '', result.bodyEncoding === 'base64' ? 'base64' : 'utf8').toString('utf8') };
  }
  const passed = {};
  for (const [name, list] of Object.entries(result?.headers ?? {})) {
    const value = list.map((h) => h.value).join(', ');
    const before = sent.headers?.[name]?.map((h) => h.value).join(', ');
    if (value !== before) passed[name] = value;
  }
  return { passed };
}

// ---------------------------------------------------------------- the child (item 2)

/**
 * `node --max-old-space-size=96 viewer.test.mjs --viewer-child SPEC.json`:
 * SPEC { dir, events (a JSON file: a list of events), warm, timeoutMs, out }.
 * Imports the package, answers events[0] cold, then `warm` more, cycling
 * through the events; writes { answers: [[event index, answer]], maxrss_kb,
 * heap_limit_mb, errors, logged }.
 */
async function child(specPath) {
  const spec = JSON.parse(readFileSync(specPath, 'utf8'));
  const events = JSON.parse(readFileSync(spec.events, 'utf8'));
  // The shim logs one JSON line per invocation: count them, keep the non-info ones.
  let logged = 0;
  const errors = [];
  console.log = (line) => {
    logged++;
    try {
      if (JSON.parse(line).level !== 'info' && errors.length < 20) errors.push(String(line).slice(0, 500));
    } catch {
      if (errors.length < 20) errors.push(String(line).slice(0, 500));
    }
  };
  const { handler } = await import(pathToFileURL(join(spec.dir, 'index.mjs')).href);
  const context = { getRemainingTimeInMillis: () => spec.timeoutMs };
  const answers = [];
  for (let i = 0; i <= spec.warm; i++) {
    const k = i % events.length;
    const event = structuredClone(events[k]);
    const sent = structuredClone(event.Records[0].cf.request);
    answers.push([k, answerOf(await handler(event, context), sent)]);
  }
  writeFileSync(spec.out, JSON.stringify({
    answers,
    maxrss_kb: process.resourceUsage().maxRSS,
    heap_limit_mb: getHeapStatistics().heap_size_limit / MB,
    errors,
    logged,
  }));
}

/** Peak RSS (MB) of a bare `node` under the same heap cap: what the package adds is the rest. */
let bareNode;
function bareNodeMb() {
  bareNode ??= Number(execFileSync(process.execPath, [`--max-old-space-size=${OLD_SPACE_MB}`, '-e',
    'process.stdout.write(String(process.resourceUsage().maxRSS))'], { encoding: 'utf8' })) / KB;
  return bareNode;
}

/** Runs the child on `dir` with `events`; resolves with what it wrote. */
function runChild(dir, events, timeoutMs) {
  const tmp = scratch('verge-viewer-child-');
  const eventsPath = join(tmp, 'events.json');
  const specPath = join(tmp, 'spec.json');
  const out = join(tmp, 'out.json');
  writeFileSync(eventsPath, JSON.stringify(events));
  writeFileSync(specPath, JSON.stringify({ dir, events: eventsPath, warm: WARM, timeoutMs, out }));
  return new Promise((ok, fail) => {
    const p = spawn(process.execPath, [`--max-old-space-size=${OLD_SPACE_MB}`, fileURLToPath(import.meta.url), '--viewer-child', specPath],
      { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    const timer = setTimeout(() => p.kill('SIGKILL'), CHILD_TIMEOUT_MS);
    p.stderr.on('data', (d) => (err = (err + d).slice(-4000)));
    p.on('error', (e) => {
      clearTimeout(timer);
      fail(e);
    });
    p.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (code !== 0) fail(new Error(`the child for ${dir} exited ${code ?? signal}: ${err}`));
      else ok(JSON.parse(readFileSync(out, 'utf8')));
    });
  });
}

// ---------------------------------------------------------------- the tests

async function tests() {
  const { test } = await import('node:test');
  const { VERGE_EDGE_PACKAGES: PACKAGES, VERGE_SKLEARN_CASES: SKLEARN, VERGE_FRAUD_REFERENCE: REFERENCE } = process.env;
  const REQUIRE_ALL = process.env.VERGE_REQUIRE_ALL === '1';
  const need = (...names) => {
    const unset = names.filter((n) => !process.env[n]);
    if (unset.length && REQUIRE_ALL) throw new Error(`set ${unset.join(', ')}: the viewer tests need them`);
    return unset.length ? `set ${unset.join(', ')}` : false;
  };

  /** A pack unzipped into a fresh folder (a cold container), its manifest checked to be a viewer one. */
  function unpack(name) {
    const zip = join(PACKAGES, name, 'function.zip');
    assert.ok(existsSync(zip), `${zip} is missing: ./dev test packs it`);
    const dir = scratch(`verge-${name}-`);
    execFileSync('python3', ['-m', 'zipfile', '-e', zip, dir]);
    const manifest = JSON.parse(readFileSync(join(dir, 'verge.json'), 'utf8'));
    return { dir, manifest, zip };
  }
  async function handlerOf(dir) {
    return (await import(pathToFileURL(join(dir, 'index.mjs')).href)).handler;
  }
  function assertViewer(name, manifest) {
    assert.equal(manifest.trigger, 'viewer-request', `${name} is packed for ${manifest.trigger}`);
    assert.equal(manifest.include_body, true, `${name} is packed without the body`);
    assert.ok(manifest.memory_mb <= 128 && manifest.timeout_s <= 5, `${name}: ${manifest.memory_mb} MB, ${manifest.timeout_s} s`);
  }
  /** Calls `fn` with the shim's log lines captured; returns them (parsed). */
  async function quietly(t, fn) {
    const logs = [];
    t.mock.method(console, 'log', (line) => logs.push(JSON.parse(line)));
    try {
      await fn();
    } finally {
      console.log.mock.restore();
    }
    return logs;
  }

  // ------------------------------------------------------------ scikit-learn cases

  const ELEMENT_BYTES = { fp16: 2, bf16: 2, fp32: 4, fp64: 8, u8: 1, i32: 4, i64: 8 };

  /**
   * The case as request bodies of at most `limit` bytes, counted in base64 (the
   * form the event carries: conservative, so it fits whether CloudFront's 40 KB
   * counts the body before or after encoding): the case itself when it fits,
   * else its rows in consecutive slices (every tensor whose first dimension is
   * the batch cut the same way).
   */
  function fitCase(c, limit) {
    const size = (x) => Buffer.byteLength(Buffer.from(JSON.stringify(x)).toString('base64'));
    if (size(c) <= limit) return [c];
    const rows = c.inputs[0].dims[0];
    const tensors = [...c.inputs, ...(c.outputs ?? [])];
    assert.ok(rows > 1 && tensors.every((x) => x.dims[0] === rows), `${c.name} is over ${limit} bytes and cannot be cut by rows`);
    const slice = (x, from, to) => {
      const per = x.dims.slice(1).reduce((a, b) => a * b, 1);
      const dims = [to - from, ...x.dims.slice(1)];
      if (x.values) return { ...x, dims, values: x.values.slice(from * per, to * per) };
      const bytes = per * ELEMENT_BYTES[x.type];
      return { ...x, dims, b64: Buffer.from(x.b64, 'base64').subarray(from * bytes, to * bytes).toString('base64') };
    };
    for (let parts = 2; parts <= rows; parts++) {
      const step = Math.ceil(rows / parts);
      const pieces = [];
      for (let from = 0; from < rows; from += step) {
        const to = Math.min(rows, from + step);
        pieces.push({
          ...c,
          name: `${c.name} rows ${from}..${to - 1}`,
          inputs: c.inputs.map((x) => slice(x, from, to)),
          ...(c.outputs ? { outputs: c.outputs.map((x) => slice(x, from, to)) } : {}),
        });
      }
      if (pieces.every((p) => size(p) <= limit)) return pieces;
    }
    assert.fail(`${c.name}: even one row is over ${limit} bytes`);
  }

  /** A probe `nn-case` request for one case. */
  const nnCaseEvent = (trigger, c) => requestEvent(trigger, JSON.stringify(c), { headers: { probe: 'nn-case' } });
  const nnCaseVerdict = (a) => {
    if (a.status !== 200) return `no answer: ${JSON.stringify(a).slice(0, 300)}`;
    const body = JSON.parse(a.body);
    return body.ok ? null : body.why;
  };

  const sklearnSkip = need('VERGE_EDGE_PACKAGES', 'VERGE_SKLEARN_CASES');
  test('scikit-learn models through the packed viewer zip (sklearn-viewer, compact engine)', { skip: sklearnSkip }, async (t) => {
    const { cases } = JSON.parse(readFileSync(join(SKLEARN, 'cases.json'), 'utf8'));
    const { dir, manifest, zip } = unpack('sklearn-viewer');
    assertViewer('sklearn-viewer', manifest);
    assert.equal(manifest.engine.name, 'compact');
    const models = new Set(cases.map((c) => c.model));
    for (const m of models) assert.ok(manifest.models[m], `sklearn-viewer lacks the model ${m}: re-pack it`);
    const limit = manifest.limits['viewer-request'].body_bytes;
    const sizes = cases.map((c) => [c.name, Buffer.byteLength(JSON.stringify(c))]);
    const largest = sizes.reduce((a, b) => (b[1] > a[1] ? b : a));
    const split = cases.filter((c) => fitCase(c, limit).length > 1).map((c) => c.name);
    // The splitting itself, held: the largest case cut as if the limit were half its size.
    const largestCase = cases.find((c) => c.name === largest[0]);
    const halves = fitCase(largestCase, Math.ceil(Buffer.byteLength(JSON.stringify(largestCase)) * 4 / 3 / 2) + 200);
    assert.ok(halves.length >= 2, 'the largest case splits');
    assert.equal(halves.reduce((n, c) => n + c.inputs[0].dims[0], 0), largestCase.inputs[0].dims[0], 'the pieces hold every row');
    const bodies = [...cases.flatMap((c) => fitCase(c, limit)), ...halves];
    t.diagnostic(`${cases.length} cases of ${models.size} models (${JSON.parse(readFileSync(join(SKLEARN, 'cases.json'), 'utf8')).about}); ` +
      `zip ${(readFileSync(zip).length / KB).toFixed(0)} KB; viewer body limit ${limit} bytes; largest case ${largest[0]}: ` +
      `${largest[1]} bytes of JSON, ${Math.ceil(largest[1] / 3) * 4} in base64; ` +
      `${split.length ? `split by rows to fit: ${split.join(', ')}` : 'every case fits one request whole'}; ` +
      `the largest also runs cut into ${halves.length} (${halves.map((c) => c.inputs[0].dims[0]).join(' + ')} rows) to hold the splitting`);
    const handler = await handlerOf(dir);
    const context = { getRemainingTimeInMillis: () => manifest.timeout_s * 1000 };
    const failed = [];
    const logs = await quietly(t, async () => {
      for (const c of bodies) {
        const event = nnCaseEvent(manifest.trigger, c);
        assert.ok(Buffer.from(event.Records[0].cf.request.body.data, 'base64').length <= limit);
        const sent = structuredClone(event.Records[0].cf.request);
        const why = nnCaseVerdict(answerOf(await handler(event, context), sent));
        if (why) failed.push(`${c.name}: ${why}`);
      }
    });
    t.diagnostic(`scikit-learn on sklearn-viewer: ${bodies.length - failed.length} of ${bodies.length} requests passed`);
    assert.deepEqual(failed, [], logs.filter((l) => l.level !== 'info').slice(-5).map((l) => JSON.stringify(l)).join('\n'));
  });

  // ------------------------------------------------------------ fraud-score inputs

  const threshold = (manifest, key, fallback) => Number(manifest.config?.[key] ?? fallback);
  /** fraud-score's settings in a pack: its defaults (components/fraud-score) where unset. */
  const thresholdsOf = (manifest) => ({ low: threshold(manifest, 'low', 0.3), high: threshold(manifest, 'high', 0.8) });

  // Feature objects above the held-out rows' range (they top out at ~0.55):
  // the rows of tests/conformance.test.mjs, and the highest-scoring one a
  // search over the feature space found (≈ 0.74, the model's ceiling as far as found).
  const HIGH_ROWS = {
    'late-risky': { amount: 120, hour: 23, distance_km: 150, merchant_risk: 0.6, card_age_days: 200, txn_last_24h: 3, foreign: 1, card_present: 0 },
    'far-new-card': { amount: 2400, hour: 3, distance_km: 800, merchant_risk: 0.95, card_age_days: 5, txn_last_24h: 12, foreign: true, card_present: false },
    'burst': { amount: 900, hour: 2, distance_km: 300, merchant_risk: 0.8, card_age_days: 30, txn_last_24h: 8, foreign: true, card_present: false },
    'highest-found': { amount: 201.885, hour: 1, distance_km: 105.807, merchant_risk: 1, card_age_days: 311.556, txn_last_24h: 5, foreign: 1, card_present: 0 },
  };

  /**
   * Held-out rows spanning the score range: every 50th by score, the 4 each
   * side of 0.3 and the 8 highest, then HIGH_ROWS (no reference score).
   */
  function fraudInputs() {
    const rows = readFileSync(REFERENCE, 'utf8').trim().split('\n').map((l) => JSON.parse(l)).sort((a, b) => a.proba - b.proba);
    assert.ok(rows.length >= 100 && rows.every((r) => r.features && Number.isFinite(r.proba)), `${REFERENCE}: not fraud_score.py --reference rows`);
    const picked = new Set(rows.filter((_, i) => i % 50 === 0));
    const at = rows.findIndex((r) => r.proba >= 0.3);
    rows.slice(Math.max(0, at - 4), at + 4).forEach((r) => picked.add(r));
    rows.slice(-8).forEach((r) => picked.add(r));
    return [
      ...[...picked].sort((a, b) => a.proba - b.proba).map((r) => ({ name: `held-out p=${r.proba.toFixed(4)}`, features: r.features, proba: r.proba })),
      ...Object.entries(HIGH_ROWS).map(([name, features]) => ({ name, features, proba: null })),
    ];
  }

  /** fraud-score's answer: { kind: block | annotate | defer, score (the printed number), or why not }. */
  function fraudAnswer(a) {
    if (a.status !== undefined) {
      const body = JSON.parse(a.body);
      return { kind: a.status === 403 && body.decision === 'block' ? 'block' : `respond ${a.status}`, score: String(body.fraud_score), threshold: body.threshold };
    }
    if (a.passed['x-verge-deferred']) {
      return { kind: 'defer', score: a.passed['x-verge-deferred'].match(/^fraud score (\S+) is between/)?.[1], reason: a.passed['x-verge-deferred'] };
    }
    if (a.passed['x-fraud-score']) return { kind: 'annotate', score: a.passed['x-fraud-score'] };
    return { kind: 'passed unchanged', score: undefined, passed: a.passed };
  }

  /** What fraud-score must decide for `score` with these thresholds. */
  const expectedKind = (score, { low, high }) => (score >= high ? 'block' : score < low ? 'annotate' : 'defer');

  /** Why `a` is not the answer for input `i` under `th`, or null. */
  function fraudMismatch(a, i, th) {
    const f = fraudAnswer(a);
    const score = Number(f.score);
    if (!Number.isFinite(score)) return `${i.name}: no score in ${JSON.stringify(a).slice(0, 200)}`;
    if (f.kind !== expectedKind(score, th)) return `${i.name}: ${f.kind} for score ${f.score} (low ${th.low}, high ${th.high})`;
    if (i.proba !== null && Math.abs(score - i.proba) > 1e-5) return `${i.name}: score ${f.score}, the reference ${i.proba}`;
    if (f.kind === 'block' && f.threshold !== th.high) return `${i.name}: threshold ${f.threshold} in the 403, not ${th.high}`;
    return null;
  }

  // ------------------------------------------------------------ viewer limits

  /** Each viewer pack, and what its events are made from. */
  const VIEWER_PACKS = {
    'fraud-score-viewer': ['VERGE_FRAUD_REFERENCE'],
    'fraud-score-conformance-compact': ['VERGE_FRAUD_REFERENCE'],
    'sklearn-viewer': ['VERGE_SKLEARN_CASES'],
    'nn-suite-compact': [],
  };

  /** Realistic events for a pack, and a check of each answer: { events, check(answer, k) → why | null, kinds? }. */
  function workload(name, manifest) {
    if (name.startsWith('fraud-score')) {
      const th = thresholdsOf(manifest);
      const inputs = fraudInputs();
      return {
        what: `${inputs.length} transactions (low ${th.low}, high ${th.high})`,
        events: inputs.map((i) => requestEvent(manifest.trigger, JSON.stringify(i.features))),
        check: (a, k) => fraudMismatch(a, inputs[k], th),
        kind: (a) => fraudAnswer(a).kind,
        score: (a) => fraudAnswer(a).score,
      };
    }
    if (name === 'sklearn-viewer') {
      const { cases } = JSON.parse(readFileSync(join(SKLEARN, 'cases.json'), 'utf8'));
      const bodies = cases.flatMap((c) => fitCase(c, manifest.limits['viewer-request'].body_bytes));
      return {
        what: `${bodies.length} scikit-learn cases`,
        events: bodies.map((c) => nnCaseEvent(manifest.trigger, c)),
        check: (a, k) => nnCaseVerdict(a) && `${bodies[k].name}: ${nnCaseVerdict(a)}`,
      };
    }
    if (name === 'nn-suite-compact') {
      const { cases } = JSON.parse(readFileSync(new URL('../../../components/nn/suite/cases.json', import.meta.url), 'utf8'));
      // Not corrupt.onnx and truncated.onnx, which the packer refuses (nn-suite.test.mjs).
      const run = cases.filter((c) => !['corrupt', 'truncated'].includes(c.model));
      return {
        what: `${run.length} behaviour-suite cases (all but the corrupt and truncated models')`,
        events: run.map((c) => nnCaseEvent(manifest.trigger, c)),
        check: (a, k) => nnCaseVerdict(a) && `${run[k].name}: ${nnCaseVerdict(a)}`,
      };
    }
    throw new Error(`no workload for ${name}`);
  }

  for (const [name, inputs] of Object.entries(VIEWER_PACKS)) {
    const skip = need('VERGE_EDGE_PACKAGES', ...inputs);
    test(`viewer limits: ${name} under a 128 MB process (a cold and ${WARM} warm invocations)`, { skip }, async (t) => {
      const { dir, manifest, zip } = unpack(name);
      assertViewer(name, manifest);
      const w = workload(name, manifest);
      for (const e of w.events) {
        const bytes = Buffer.from(e.Records[0].cf.request.body.data, 'base64').length;
        assert.ok(bytes <= manifest.limits['viewer-request'].body_bytes, `a ${bytes}-byte body is over the viewer limit`);
      }
      const r = await runChild(dir, w.events, manifest.timeout_s * 1000);
      assert.equal(r.answers.length, WARM + 1);
      const wrong = r.answers.map(([k, a], i) => {
        const why = w.check(a, k);
        return why && `invocation ${i}${i === 0 ? ' (cold)' : ''}: ${why}`;
      }).filter(Boolean);
      // The same event gets the same answer, cold or warm.
      const first = new Map();
      for (const [i, [k, a]] of r.answers.entries()) {
        const s = JSON.stringify(a);
        if (!first.has(k)) first.set(k, s);
        else if (first.get(k) !== s) wrong.push(`invocation ${i}: event ${k} answered ${s.slice(0, 200)}, before ${first.get(k).slice(0, 200)}`);
      }
      const kinds = w.kind ? [...new Set(r.answers.map(([, a]) => w.kind(a)))].sort() : null;
      const rssMb = r.maxrss_kb / KB;
      t.diagnostic(`${name} (${manifest.engine.name} engine, zip ${(readFileSync(zip).length / KB).toFixed(0)} KB): ${w.what}; ` +
        `1 cold + ${WARM} warm invocations, ${r.answers.length - wrong.length} answered as expected` +
        `${kinds ? ` (outcomes: ${kinds.join(', ')})` : ''}; peak RSS ${rssMb.toFixed(1)} MB of ${VIEWER_MEMORY / MB} MB (node alone ${bareNodeMb().toFixed(1)} MB) ` +
        `(V8 heap limit ${r.heap_limit_mb.toFixed(0)} MB); ${r.logged} log lines, ${r.errors.length} not info`);
      assert.deepEqual(wrong.slice(0, 10), [], `${wrong.length} wrong answers`);
      assert.deepEqual(r.errors, [], 'no errors logged');
      assert.equal(r.logged, WARM + 1, 'one log line per invocation');
      if (name === 'fraud-score-conformance-compact') assert.deepEqual(kinds, ['annotate', 'block', 'defer'], 'the events give every outcome');
      if (name === 'fraud-score-viewer') assert.deepEqual(kinds, ['annotate', 'block', 'defer'], 'the events give every outcome');
      assert.ok(r.maxrss_kb * KB <= VIEWER_MEMORY, `peak RSS ${rssMb.toFixed(1)} MB is over the viewer's ${VIEWER_MEMORY / MB} MB`);
    });
  }

  // ------------------------------------------------------------ the cascade

  const cascadeSkip = need('VERGE_EDGE_PACKAGES', 'VERGE_FRAUD_REFERENCE');
  for (const viewerPack of ['fraud-score-viewer', 'fraud-score-conformance-compact']) {
    test(`fraud cascade: ${viewerPack} (viewer-request) then fraud-score-origin (origin-request)`, { skip: cascadeSkip }, async (t) => {
      const viewer = unpack(viewerPack);
      const origin = unpack('fraud-score-origin');
      assertViewer(viewerPack, viewer.manifest);
      assert.equal(origin.manifest.trigger, 'origin-request');
      assert.equal(viewer.manifest.component.sha256, origin.manifest.component.sha256, 'the same fraud_score.wasm at both');
      assert.deepEqual(viewer.manifest.models, origin.manifest.models, 'the same model at both');
      const [vt, ot] = [thresholdsOf(viewer.manifest), thresholdsOf(origin.manifest)];
      const vh = await handlerOf(viewer.dir);
      const oh = await handlerOf(origin.dir);
      const inputs = fraudInputs();
      const mismatches = [];
      const paths = new Map();
      let maxDiff = 0;
      // Each call's log line names its outcome (respond, annotate, defer): an
      // origin annotating with the x-fraud-score the viewer set changes nothing
      // visible in the request, so the line is what tells it from a pass.
      const logs = [];
      t.mock.method(console, 'log', (line) => logs.push(JSON.parse(line)));
      const TAG = { block: 'respond', annotate: 'annotate', defer: 'defer' };
      try {
        for (const i of inputs) {
          const body = JSON.stringify(i.features);
          const ve = requestEvent('viewer-request', body);
          const sent = structuredClone(ve.Records[0].cf.request);
          const result = await vh(ve, { getRemainingTimeInMillis: () => viewer.manifest.timeout_s * 1000 });
          const va = answerOf(result, sent);
          const v = fraudAnswer(va);
          const why = fraudMismatch(va, i, vt);
          if (why) mismatches.push(`viewer: ${why}`);
          if (logs.at(-1)?.kind !== TAG[v.kind]) mismatches.push(`${i.name}: the viewer logged ${logs.at(-1)?.kind}, answered ${v.kind}`);
          if (v.kind === 'block') {
            paths.set(`viewer 403`, (paths.get(`viewer 403`) ?? 0) + 1);
            continue;
          }
          // The request the viewer passed on reaches the origin: CloudFront adds
          // the origin and its own forwarding headers, the body goes along.
          assert.equal(result.status, undefined);
          const oe = structuredClone(fixtures['origin-request']);
          const fx = oe.Records[0].cf.request;
          const req = structuredClone(result);
          req.origin = fx.origin;
          for (const h of ['x-forwarded-for', 'via']) req.headers[h] ??= fx.headers[h];
          oe.Records[0].cf.request = req;
          const toOrigin = structuredClone(req);
          const oresult = await oh(oe, { getRemainingTimeInMillis: () => origin.manifest.timeout_s * 1000 });
          const oa = answerOf(oresult, toOrigin);
          const tag = logs.at(-1)?.kind;
          if (tag === 'annotate' && !oa.passed['x-fraud-score']) oa.passed['x-fraud-score'] = oresult.headers?.['x-fraud-score']?.[0]?.value;
          const o = fraudAnswer(oa);
          if (tag !== TAG[o.kind]) mismatches.push(`${i.name}: the origin logged ${tag}, answered ${o.kind}`);
          // The origin's own verdict, with its thresholds.
          const owhy = fraudMismatch(oa, i, ot);
          if (owhy) mismatches.push(`origin: ${owhy}`);
          // Same model, compact vs onnxruntime: the same printed score.
          if (o.score !== v.score) mismatches.push(`${i.name}: score at the viewer ${v.score}, at the origin ${o.score}`);
          maxDiff = Math.max(maxDiff, Math.abs(Number(o.score) - Number(v.score)));
          // What the viewer added reached the origin and goes on past it.
          if (v.kind === 'annotate') {
            if (toOrigin.headers['x-fraud-score']?.[0]?.value !== v.score) mismatches.push(`${i.name}: the viewer's x-fraud-score did not reach the origin`);
            if (oresult.status === undefined && oresult.headers['x-fraud-score']?.[0]?.value !== v.score) {
              mismatches.push(`${i.name}: x-fraud-score ${JSON.stringify(oresult.headers['x-fraud-score'])} after the origin, the viewer set ${v.score}`);
            }
          }
          if (v.kind === 'defer' && toOrigin.headers['x-verge-deferred']?.[0]?.value !== v.reason) {
            mismatches.push(`${i.name}: the viewer's x-verge-deferred did not reach the origin`);
          }
          if (oresult.status === undefined && oresult.body?.data !== toOrigin.body.data) mismatches.push(`${i.name}: the body changed on the way`);
          const path = `viewer ${v.kind} → origin ${o.kind}`;
          paths.set(path, (paths.get(path) ?? 0) + 1);
        }
      } finally {
        console.log.mock.restore();
      }
      const range = inputs.filter((i) => i.proba !== null).map((i) => i.proba);
      t.diagnostic(`${inputs.length} transactions (held-out scores ${Math.min(...range).toFixed(4)}–${Math.max(...range).toFixed(4)}, ` +
        `and ${Object.keys(HIGH_ROWS).length} above them); viewer ${viewer.manifest.engine.name} low ${vt.low} high ${vt.high}, ` +
        `origin ${origin.manifest.engine.name} low ${ot.low} high ${ot.high}`);
      t.diagnostic(`paths: ${[...paths].map(([p, n]) => `${p} ×${n}`).join('; ')}; scores identical as printed (max |difference| ${maxDiff})`);
      assert.deepEqual(mismatches, []);
      assert.deepEqual(logs.filter((l) => l.level !== 'info'), [], 'no errors logged');
      // Every branch the thresholds allow is taken.
      const want = viewerPack === 'fraud-score-viewer'
        ? ['viewer 403', 'viewer annotate → origin annotate', 'viewer defer → origin block', 'viewer defer → origin defer']
        : ['viewer 403', 'viewer annotate → origin annotate', 'viewer annotate → origin defer', 'viewer defer → origin block', 'viewer defer → origin defer'];
      assert.deepEqual([...paths.keys()].sort(), want, 'the inputs take every path these thresholds allow');
    });
  }
}

if (process.argv[2] === '--viewer-child') await child(process.argv[3]);
else await tests();
