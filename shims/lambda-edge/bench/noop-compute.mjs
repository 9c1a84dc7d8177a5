#!/usr/bin/env node
// The fixed cost of wasi:nn at the edge: a no-op compute (the behaviour
// suite's `add` model on [1, 4]) through each engine's packed zip, timed
// inside the component by the probe's `nn-repeat` command (tensors made,
// compute, outputs read back: every crossing of the transpiled glue), next to
// the same model on onnxruntime-node's binding called directly from JS (the
// floor a hand-written handler pays).
//
//   node shims/lambda-edge/bench/noop-compute.mjs [--calls N] [--rows FILE]
//     packs nn-suite-tract and nn-suite-onnxruntime from $VERGE_EDGE_PACKAGES;
//     the binding from $VERGE_ONNXRUNTIME_NODE; the model from $VERGE_NN_SUITE_MODELS.

import { execFileSync } from 'node:child_process';
import { appendFileSync, mkdtempSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const calls = Number(opt('--calls', 5000));
const rowsFile = opt('--rows');
const { VERGE_EDGE_PACKAGES, VERGE_ONNXRUNTIME_NODE, VERGE_NN_SUITE_MODELS } = process.env;
const fixture = JSON.parse(readFileSync(new URL('../test/fixtures/origin-request.json', import.meta.url), 'utf8'));

async function throughPack(pack) {
  const dir = mkdtempSync(join(tmpdir(), `verge-noop-${pack}-`));
  execFileSync('python3', ['-m', 'zipfile', '-e', join(VERGE_EDGE_PACKAGES, pack, 'function.zip'), dir]);
  const { handler } = await import(pathToFileURL(join(dir, 'index.mjs')).href);
  const once = async (n) => {
    const e = structuredClone(fixture);
    e.Records[0].cf.request.headers.probe = [{ key: 'probe', value: `nn-repeat:${n}:add:a:1,4:f32+b:1,4:f32` }];
    const log = console.log;
    console.log = () => {};
    try {
      const r = await handler(e, { getRemainingTimeInMillis: () => 30000 });
      if (r.status !== '200') throw new Error(`${pack}: ${JSON.stringify(r).slice(0, 300)}`);
      return JSON.parse(r.body).ns_per_compute / 1000;
    } finally {
      console.log = log;
    }
  };
  await once(calls / 10);
  return once(calls);
}

function direct() {
  const require = createRequire(import.meta.url);
  const b = require(join(VERGE_ONNXRUNTIME_NODE, 'bin/napi-v6/linux/x64/onnxruntime_binding.node'));
  b.initOrtOnce(3, class { constructor(type, data, dims) { Object.assign(this, { type, data, dims }); } }, true);
  const s = new b.InferenceSession();
  s.loadModel(join(VERGE_NN_SUITE_MODELS, 'add.onnx'), { intraOpNumThreads: 1 });
  const t = () => ({ type: 'float32', dims: [1, 4], data: new Float32Array(4), location: 'cpu' });
  const run = () => s.run({ a: t(), b: t() }, { sum: null, prod: null }, {});
  for (let i = 0; i < calls / 10; i++) run();
  const t0 = performance.now();
  for (let i = 0; i < calls; i++) run();
  return ((performance.now() - t0) * 1000) / calls;
}

const results = [
  ['onnxruntime-node binding, called from JS', direct()],
  ['verge zip (onnxruntime), from the component', await throughPack('nn-suite-onnxruntime')],
  ['verge zip (wasm), from the component', await throughPack('nn-suite-tract')],
];
for (const [system, us] of results) {
  console.log(`no-op compute: ${system}: ${us.toFixed(2)} µs`);
  if (rowsFile) {
    appendFileSync(rowsFile, JSON.stringify({
      section: 'edge', workload: 'no-op compute', system, metric: 'per compute', unit: 'µs',
      samples: [Math.round(us * 1000) / 1000], baseline: system.startsWith('onnxruntime-node'), better: 'lower',
    }) + '\n');
  }
}
