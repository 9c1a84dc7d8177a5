// The onnxruntime engine of an edge package, as deployed: `verge-edge pack
// --engine onnxruntime` zips the shim, the component with the host-engine
// provider composed in and onnxruntime-node's binding; each test unzips it
// into a fresh folder and runs it with nothing but Node. Models too big for
// the zip are URLs: served here from a local HTTP server on the loopback,
// fetched once per container, checked against their sha256.
//
// Environment: VERGE_EDGE (the packer), VERGE_WASM_DIR (probe.wasm and the
// providers), VERGE_NN_SUITE_MODELS (the behaviour suite's models),
// VERGE_ONNXRUNTIME_NODE (the onnxruntime-node package the packer takes the binding from).

import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { scratch } from './scratch.mjs';

const { VERGE_EDGE, VERGE_WASM_DIR, VERGE_NN_SUITE_MODELS } = process.env;
const NEEDED = ['VERGE_EDGE', 'VERGE_WASM_DIR', 'VERGE_NN_SUITE_MODELS', 'VERGE_ONNXRUNTIME_NODE'];
const unset = NEEDED.filter((n) => !process.env[n]);
if (unset.length && process.env.VERGE_REQUIRE_ALL === '1') throw new Error(`set ${unset.join(', ')}`);
const skip = unset.length ? `set ${unset.join(', ')}` : false;

const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');
const fixture = () => JSON.parse(readFileSync(new URL('fixtures/origin-request.json', import.meta.url), 'utf8'));

function pack(args) {
  const out = scratch('verge-pack-ort-');
  const r = spawnSync(VERGE_EDGE, ['pack', '--component', join(VERGE_WASM_DIR, 'probe.wasm'), '--trigger', 'origin-request',
    '--include-body', '--timeout', '30', ...args, '--out', out], { encoding: 'utf8' });
  return { ...r, out };
}

/** Unzips a pack into a fresh folder and imports it: a cold container. */
async function container(out) {
  const dir = scratch('verge-ort-container-');
  execFileSync('python3', ['-m', 'zipfile', '-e', join(out, 'function.zip'), dir]);
  const { handler } = await import(pathToFileURL(join(dir, 'index.mjs')).href);
  const manifest = JSON.parse(readFileSync(join(dir, 'verge.json'), 'utf8'));
  return { handler, manifest, dir };
}

/** Calls the probe with `command` (in the probe header) and `body`; returns { result, logs }. */
async function call(t, handler, command, body = '') {
  const e = fixture();
  const { request } = e.Records[0].cf;
  request.headers.probe = [{ key: 'probe', value: command }];
  request.body = { action: 'read-only', data: Buffer.from(body).toString('base64'), encoding: 'base64', inputTruncated: false };
  const logs = [];
  t.mock.method(console, 'log', (line) => logs.push(JSON.parse(line)));
  try {
    return { result: await handler(e, { getRemainingTimeInMillis: () => 30000 }), logs };
  } finally {
    console.log.mock.restore();
  }
}

const ADD = 'nn:add:a:1,4:f32+b:1,4:f32';

describe('the onnxruntime engine, packed', { skip }, () => {
  test('the package holds the binding, records the engine, and answers', async (t) => {
    const { status, stderr, out } = pack(['--engine', 'onnxruntime', '--memory', '4096', '--model', `add=${join(VERGE_NN_SUITE_MODELS, 'add.onnx')}`]);
    assert.equal(status, 0, stderr);
    const { handler, manifest, dir } = await container(out);
    assert.equal(manifest.engine.name, 'onnxruntime');
    assert.match(manifest.engine.onnxruntime_node, /^\d+\.\d+\.\d+$/);
    assert.equal(manifest.engine.threads, 2, '4096 MB buys two vCPUs');
    assert.ok(manifest.imports.includes('verge:inference/engine'));
    assert.ok(!manifest.imports.includes('verge:inference/models'), 'the host-engine provider reads no bytes');
    const { result } = await call(t, handler, ADD);
    assert.equal(result.status, '200', JSON.stringify(result));
    assert.deepEqual(JSON.parse(result.body), { sum: [1, 4], prod: [1, 4] });
    // The engine ran on the canonical ABI (Hybrid bindings), not through the glue's own lifting.
    const { stats } = await import(pathToFileURL(join(dir, 'engine-abi.mjs')).href);
    assert.equal(stats.lowered, 1, 'the glue asked for the raw run once');
    assert.equal(stats.calls, 1);
    assert.equal(manifest.glue.generator.split(' ')[0], 'js-component-bindgen');
    assert.ok(manifest.glue.byte_copies >= 2 && manifest.glue.bookkeeping_calls > 0, JSON.stringify(manifest.glue));
  });

  test('a URL model is fetched once per container, checked, and kept', async (t) => {
    const bytes = readFileSync(join(VERGE_NN_SUITE_MODELS, 'add.onnx'));
    let hits = 0;
    const server = createServer((req, res) => {
      hits += 1;
      if (req.url === '/add.onnx') res.end(bytes);
      else if (req.url === '/other.onnx') res.end(Buffer.from('not the model'));
      else { res.statusCode = 404; res.end(); }
    });
    await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
    const base = `http://127.0.0.1:${server.address().port}`;
    // A digest of its own so no earlier run left the file in /tmp.
    rmSync(`/tmp/verge-models/${sha256(bytes)}.onnx`, { force: true });
    try {
      const good = pack(['--engine', 'onnxruntime', '--model', `add=${base}/add.onnx#sha256=${sha256(bytes)}`]);
      assert.equal(good.status, 0, good.stderr);
      const { handler, manifest } = await container(good.out);
      assert.deepEqual(manifest.models.add, { url: `${base}/add.onnx`, sha256: sha256(bytes) });
      for (let i = 0; i < 3; i++) {
        const { result } = await call(t, handler, ADD);
        assert.equal(result.status, '200', JSON.stringify(result));
      }
      assert.equal(hits, 1, 'fetched once for three invocations');

      // The wrong bytes: a wasi:nn error naming both digests, and nothing loaded.
      // (Digests no file in /tmp has, so each is fetched.)
      const unseen = (s) => sha256(Buffer.from(`${s} ${process.pid} ${Date.now()}`));
      const wrong = pack(['--engine', 'onnxruntime', '--on-error', 'fail', '--model', `add=${base}/other.onnx#sha256=${unseen('wrong')}`]);
      assert.equal(wrong.status, 0, wrong.stderr);
      const w = await container(wrong.out);
      const bad = await call(t, w.handler, ADD);
      assert.equal(bad.result.status, '503');
      const err = bad.logs.find((l) => l.level === 'error');
      assert.equal(err.kind, 'model');
      assert.match(err.message, /^ErrorCode::InvalidEncoding: model 'add' cannot be loaded: onnxruntime-node [\d.]+: model 'add' could not be fetched: the bytes at .* have sha256 [0-9a-f]{64}, not the [0-9a-f]{64} the package names$/);

      // An unreachable URL: a runtime error, and the function keeps answering.
      const gone = pack(['--engine', 'onnxruntime', '--on-error', 'fail', '--model', `add=${base}/missing.onnx#sha256=${unseen('gone')}`]);
      const g = await container(gone.out);
      const miss = await call(t, g.handler, ADD);
      assert.match(miss.logs.find((l) => l.level === 'error').message, /^ErrorCode::RuntimeError: .*HTTP 404/);
      assert.equal((await call(t, g.handler, 'echo')).result.status, '200');
    } finally {
      server.close();
      // The fetched model is the shim's per-container cache on Lambda; here it is this test's to remove.
      rmSync(`/tmp/verge-models/${sha256(bytes)}.onnx`, { force: true });
    }
  });

  test('pack refuses a URL model on tract, and a URL without its digest', () => {
    const url = 'https://models.invalid/add.onnx';
    let r = pack(['--engine', 'tract', '--model', `add=${url}#sha256=${'0'.repeat(64)}`]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /URL models need --engine onnxruntime/);
    r = pack(['--engine', 'onnxruntime', '--model', `add=${url}`]);
    assert.equal(r.status, 2, 'a usage error');
    assert.match(r.stderr, /a model URL needs its digest/);
  });
});
