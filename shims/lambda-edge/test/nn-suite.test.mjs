// The wasi:nn behaviour suite (components/nn/suite/cases.json) through the
// packed Lambda@Edge shim: the probe component, packed with the suite's
// models, runs each case inside Wasm and checks it with the suite's own
// checker (the same Rust code the device host's tests use), so codes and
// messages are held to the very same table on every engine and host.
//
// Environment:
//   VERGE_EDGE_PACKAGES  holds the packs below (./dev edge_packages makes them):
//     nn-suite-tract        probe.wasm with every suite model, --trigger origin-request
//                           --include-body --timeout 30 --engine tract (tract in Wasm)
//     nn-suite-onnxruntime  the same with --engine onnxruntime (onnxruntime-node's binding)
//     nn-suite-compact      probe.wasm with the suite's models but corrupt.onnx and truncated.onnx,
//                           --engine compact --trigger viewer-request --include-body: the viewer
//                           pack (compact engine); its cases go as viewer-request events. The two
//                           cases of those models are skipped there, visibly (skipped subtests and
//                           a diagnostic): `verge-edge pack` refuses a file that is not a model the
//                           compact engine runs, at pack time, so they cannot reach that engine's
//                           load. The test checks that refusal for each left-out model with
//   VERGE_EDGE            the verge-edge binary,
//   VERGE_WASM_DIR        the built components (probe.wasm), and
//   VERGE_NN_SUITE_MODELS the suite's models (components/nn/suite/models.py writes them)
//                         (skipped without them, a failure under VERGE_REQUIRE_ALL=1).

import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { scratch } from './scratch.mjs';

const { VERGE_EDGE_PACKAGES: PACKAGES, VERGE_EDGE, VERGE_NN_SUITE_MODELS } = process.env;
const REQUIRE_ALL = process.env.VERGE_REQUIRE_ALL === '1';
if (!PACKAGES && REQUIRE_ALL) throw new Error('set VERGE_EDGE_PACKAGES: the behaviour suite needs its packs');

const { cases } = JSON.parse(readFileSync(new URL('../../../components/nn/suite/cases.json', import.meta.url), 'utf8'));
const fixtures = {
  'origin-request': JSON.parse(readFileSync(new URL('fixtures/origin-request.json', import.meta.url), 'utf8')),
  'viewer-request': JSON.parse(readFileSync(new URL('fixtures/viewer-request.json', import.meta.url), 'utf8')),
};

/** The packs, and the suite's models each leaves out (with why). */
const PACKS = {
  'nn-suite-tract': {},
  'nn-suite-onnxruntime': {},
  'nn-suite-compact': {
    corrupt: 'verge-edge pack refuses non-models for the compact engine at pack time, so corrupt.onnx is not in this pack',
    truncated: 'verge-edge pack refuses non-models for the compact engine at pack time, so truncated.onnx is not in this pack',
  },
};

/** One case as an event of the pack's trigger: the case in the body, the command in a header. */
function event(c, trigger) {
  const e = structuredClone(fixtures[trigger]);
  assert.ok(e, `no fixture for a ${trigger} event`);
  const { request } = e.Records[0].cf;
  request.headers.probe = [{ key: 'probe', value: 'nn-case' }];
  request.body = { action: 'read-only', data: Buffer.from(JSON.stringify(c)).toString('base64'), encoding: 'base64', inputTruncated: false };
  return e;
}

/** `verge-edge pack` refuses each of `models` for this pack's engine and trigger: why they are left out. */
async function packRefuses(t, manifest, models) {
  const unset = ['VERGE_EDGE', 'VERGE_WASM_DIR', 'VERGE_NN_SUITE_MODELS'].filter((n) => !process.env[n]);
  if (unset.length) {
    assert.ok(!REQUIRE_ALL, `set ${unset.join(', ')}: the test checks that verge-edge pack refuses ${models.join(', ')}`);
    await t.test(`verge-edge pack refuses ${models.join(', ')}`, { skip: `set ${unset.join(', ')}` }, () => {});
    return;
  }
  const wasm = join(process.env.VERGE_WASM_DIR, 'probe.wasm');
  for (const model of models) {
    const file = join(VERGE_NN_SUITE_MODELS, `${model}.onnx`);
    assert.ok(existsSync(file), `${file} is missing`);
    const out = scratch(`verge-refused-${model}-`);
    const run = spawnSync(VERGE_EDGE, ['pack', '--component', wasm,
      '--model', `${model}=${file}`, '--engine', manifest.engine.name, '--trigger', manifest.trigger, '--include-body', '--out', out], { encoding: 'utf8' });
    assert.notEqual(run.status, 0, `verge-edge pack took ${model}.onnx for the ${manifest.engine.name} engine`);
    assert.match(run.stderr, new RegExp(`model '${model}'`), `verge-edge pack's refusal names the model: ${run.stderr}`);
    assert.ok(!existsSync(join(out, 'function.zip')), 'a refused pack writes no zip');
    t.diagnostic(`verge-edge pack --engine ${manifest.engine.name} --trigger ${manifest.trigger} refuses ${model}.onnx: ${run.stderr.trim()}`);
  }
}

for (const [pack, leftOut] of Object.entries(PACKS)) {
  const zip = PACKAGES && join(PACKAGES, pack, 'function.zip');
  const skip = !PACKAGES ? 'set VERGE_EDGE_PACKAGES' : !existsSync(zip) && !REQUIRE_ALL ? `${zip} is missing` : false;
  test(`wasi:nn behaviour suite: ${pack} (packed shim)`, { skip }, async (t) => {
    assert.ok(existsSync(zip), `${zip} is missing`);
    const dir = scratch(`verge-${pack}-`);
    execFileSync('python3', ['-m', 'zipfile', '-e', zip, dir]);
    const manifest = JSON.parse(readFileSync(join(dir, 'verge.json'), 'utf8'));
    // The cases of models this pack leaves out: skipped by name, saying why; the
    // pack must indeed lack them (else they would run).
    const skipped = cases.filter((c) => c.model in leftOut);
    for (const model of Object.keys(leftOut)) {
      assert.ok(!(model in manifest.models), `${pack} holds ${model}: run its case instead of skipping it`);
      assert.ok(skipped.some((c) => c.model === model), `no case of cases.json uses ${model}: drop it from the list`);
    }
    for (const c of skipped) {
      t.diagnostic(`skipped on ${pack}: '${c.name}': ${leftOut[c.model]}`);
      await t.test(c.name, { skip: leftOut[c.model] }, () => {});
    }
    if (Object.keys(leftOut).length) await packRefuses(t, manifest, Object.keys(leftOut));
    const run = cases.filter((c) => !(c.model in leftOut));
    const context = { getRemainingTimeInMillis: () => manifest.timeout_s * 1000 };
    const { handler } = await import(pathToFileURL(join(dir, 'index.mjs')).href);
    const logs = [];
    t.mock.method(console, 'log', (line) => logs.push(line));
    const failed = [];
    try {
      for (const c of run) {
        const result = await handler(event(c, manifest.trigger), context);
        const body = result.status === '200' ? JSON.parse(Buffer.from(result.body, result.bodyEncoding === 'base64' ? 'base64' : 'utf8')) : null;
        if (!body?.ok) failed.push(`${c.name}: ${body ? body.why : JSON.stringify(result).slice(0, 300)}`);
      }
    } finally {
      console.log.mock.restore();
    }
    t.diagnostic(`wasi:nn behaviour suite on ${pack} (${manifest.trigger}, engine ${manifest.engine.name}): ` +
      `${run.length - failed.length} passed, ${failed.length} failed, ${skipped.length} skipped`);
    assert.deepEqual(failed, [], logs.slice(-5).join('\n'));
  });
}
