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
import { existsSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';

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

test('file-type: device host and packed Lambda@Edge handler agree', { skip: unset.length ? `set ${unset.join(', ')}` : false }, async (t) => {
  const wasm = join(VERGE_WASM_DIR, 'file_type.wasm');
  const model = join(VERGE_MODELS_DIR, 'magika-standard-v3-3', 'model.onnx');
  const wasmSha = sha256(readFileSync(wasm));
  const files = pickFiles();
  assert.ok(files.length >= MIN_FILES, `only ${files.length} usable files in ${VERGE_CORPUS}`);

  // The device side: one process, one JSON line per input.
  const run = spawnSync(VERGE_DEVICE, ['run', wasm, '--model', `magika=${model}`, '--config', 'mode=respond',
    ...files.flatMap((f) => ['--input', f])], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  assert.equal(run.status, 0, `verge-device run failed (${run.status}): ${run.stderr}`);
  const device = new Map(run.stdout.trim().split('\n').map((l) => JSON.parse(l)).map((o) => [o.input, o]));

  // The edge side: the zip as deployed, unzipped and called once per file.
  const pack = join(VERGE_EDGE_PACKAGES, 'file-type-conformance');
  const dir = mkdtempSync(join(tmpdir(), 'verge-conformance-'));
  assert.ok(existsSync(join(pack, 'function.zip')), `${pack}/function.zip is missing`);
  execFileSync('python3', ['-m', 'zipfile', '-e', join(pack, 'function.zip'), dir]);
  const manifest = JSON.parse(readFileSync(join(dir, 'verge.json'), 'utf8'));
  assert.equal(manifest.trigger, 'origin-request');
  assert.equal(manifest.config.mode, 'respond');
  assert.equal(manifest.component.sha256, wasmSha, `the pack was made from another file_type.wasm: re-pack ${pack}`);
  const { handler } = await import(pathToFileURL(join(dir, 'index.mjs')).href);
  const event = JSON.parse(readFileSync(new URL('../shims/lambda-edge/test/fixtures/origin-request.json', import.meta.url), 'utf8'));
  const context = { getRemainingTimeInMillis: () => 30000 };

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
  assert.deepEqual(logs.filter((l) => l.level !== 'info'), [], 'no errors logged at the edge');

  let maxDiff = 0;
  let worst = '';
  const mismatches = [];
  for (const f of files) {
    const d = device.get(f)?.respond?.body;
    const e = edge.get(f);
    assert.ok(d, `verge-device gave no verdict for ${f}: ${JSON.stringify(device.get(f))}`);
    for (const k of ['label', 'dl_label', 'group', 'mime_type', 'is_text']) {
      if (d[k] !== e[k]) mismatches.push(`${f}: ${k} device ${d[k]} edge ${e[k]}`);
    }
    const diff = Math.abs(d.score - e.score);
    if (diff > maxDiff) [maxDiff, worst] = [diff, f];
  }
  const labels = new Set(files.map((f) => edge.get(f).label));
  t.diagnostic(`component sha256 ${wasmSha}: device ran ${wasm}, edge ran ${manifest.component.name} from the zip (manifest sha256 ${manifest.component.sha256}, composed ${manifest.composed_sha256})`);
  t.diagnostic(`${files.length} files, ${labels.size} distinct labels; max |score difference| ${maxDiff.toExponential(2)}${worst ? ` (${worst})` : ''}`);
  assert.deepEqual(mismatches, []);
  assert.ok(maxDiff <= TOLERANCE, `max score difference ${maxDiff} > ${TOLERANCE} on ${worst}`);
});
