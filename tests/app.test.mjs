// One source, the same answers: the example application (examples/shop) built
// with `verge build` from its manifest alone, the device side started as
// `verge-device serve` on dist/device/ (a real mosquitto on loopback as its
// broker), and every dist/edge/ package invoked on the same inputs.
//
// * Every edge function whose settings are the device route's (fraud-score at
//   origin-request) must give the device's outcomes: the same kind, status,
//   headers and body, numbers within 1e-4.
// * Every edge function (the viewer step of the cascade too, whose thresholds
//   differ by design, and text-embed, which runs only at the edge) is compared
//   by `verge check` with the device host on its own settings: exit 0.
// No setting is given on a command line: they come from the manifest only. The
// copy of the manifest differs from the example only in the broker and API
// addresses (loopback ports of this test).
//
// Environment: VERGE_APP (the verge binary), VERGE_DEVICE, VERGE_WASM_DIR,
// VERGE_MODELS_DIR, VERGE_ONNXRUNTIME_NODE; with VERGE_REQUIRE_ALL=1 a missing
// one fails.
//
//   node --test tests/app.test.mjs

import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { scratch } from '../shims/lambda-edge/test/scratch.mjs';

import { invoke } from '../shims/lambda-edge/src/invoke.mjs';

const ENV = ['VERGE_APP', 'VERGE_DEVICE', 'VERGE_WASM_DIR', 'VERGE_MODELS_DIR', 'VERGE_ONNXRUNTIME_NODE'];
const unset = ENV.filter((n) => !process.env[n]);
if (unset.length && process.env.VERGE_REQUIRE_ALL === '1') throw new Error(`set ${unset.join(', ')}: the app test needs them`);
const TOLERANCE = 1e-4;
const SHOP = fileURLToPath(new URL('../examples/shop/', import.meta.url));

const freePort = () => new Promise((resolve, reject) => {
  const s = createServer();
  s.once('error', reject);
  s.listen(0, '127.0.0.1', () => {
    const { port } = s.address();
    s.close(() => resolve(port));
  });
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `url` until it answers 200 (at most `tries` times). */
async function waitReady(url, child, tries = 300) {
  for (let i = 0; i < tries; i++) {
    if (child.exitCode !== null) throw new Error(`the daemon exited with ${child.exitCode}`);
    try {
      if ((await fetch(url)).status === 200) return;
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  throw new Error(`${url} did not become ready`);
}

/** An outcome as the device API answers it, in invoke.mjs's shape. */
function deviceOutcome(o) {
  if (o.respond) return { kind: 'respond', status: o.respond.status, headers: o.respond.headers ?? {}, content_type: o.respond.content_type, body: o.respond.body };
  if (o.annotate) return { kind: 'annotate', headers: o.annotate };
  if ('defer' in o) return { kind: 'defer', reason: o.defer };
  return { kind: 'error', error: o.error };
}

/** Where two outcomes differ; numbers (also inside strings) within the tolerance. */
function differences(a, b, at = 'outcome', out = []) {
  const numbers = (s) => s.split(/(-?\d+(?:\.\d+)?(?:e[-+]?\d+)?)/i);
  if (typeof a === 'number' && typeof b === 'number') {
    if (!(Math.abs(a - b) <= TOLERANCE)) out.push(`${at}: ${a} vs ${b}`);
  } else if (typeof a === 'string' && typeof b === 'string') {
    const [x, y] = [numbers(a), numbers(b)];
    const same = x.length === y.length && x.every((p, i) => (i % 2 ? Math.abs(Number(p) - Number(y[i])) <= TOLERANCE : p === y[i]));
    if (!same) out.push(`${at}: ${JSON.stringify(a)} vs ${JSON.stringify(b)}`);
  } else if (a && b && typeof a === 'object' && typeof b === 'object') {
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) differences(a[k], b[k], `${at}.${k}`, out);
  } else if (a !== b) {
    out.push(`${at}: ${JSON.stringify(a)} vs ${JSON.stringify(b)}`);
  }
  return out;
}

test('the shop: built from one manifest, serve on dist/device and every dist/edge package agree', { skip: unset.length ? `set ${unset.join(', ')}` : false, timeout: 600_000 }, async (t) => {
  const dir = scratch('verge-app-');
  const [brokerPort, apiPort] = [await freePort(), await freePort()];
  let broker;
  let daemon;
  try {
    // The example, with this test's loopback addresses for the broker and the API.
    cpSync(SHOP, join(dir, 'shop'), { recursive: true });
    const manifestPath = join(dir, 'shop', 'verge.app.toml');
    const manifest = readFileSync(manifestPath, 'utf8')
      .replace('api = { listen = "127.0.0.1:8470" }', `api = { listen = "127.0.0.1:${apiPort}" }`)
      .replace(/\[device\.daemon\.mqtt\][\s\S]*$/, `[device.daemon.mqtt]\nhost = "127.0.0.1"\nport = ${brokerPort}\nclient_id = "{thing}-verge"\n`);
    assert.notEqual(manifest, readFileSync(join(SHOP, 'verge.app.toml'), 'utf8'));
    writeFileSync(manifestPath, manifest);

    const out = join(dir, 'dist');
    const build = spawnSync(process.env.VERGE_APP, ['build', manifestPath, '--out', out, '--measure', '0',
      '--device-binary', `amd64=${process.env.VERGE_DEVICE}`], {
      encoding: 'utf8', env: { ...process.env, VERGE_NN_PROVIDER_DIR: process.env.VERGE_WASM_DIR },
    });
    assert.equal(build.status, 0, `verge build: ${build.stderr}`);
    t.diagnostic(build.stdout.trim());

    // The device: mosquitto, then serve on dist/device/artifacts/verge.json.
    const conf = join(dir, 'mosquitto.conf');
    writeFileSync(conf, `listener ${brokerPort} 127.0.0.1\nallow_anonymous true\npersistence false\n`);
    broker = spawn(existsMosquitto(), ['-c', conf], { stdio: 'ignore' });
    daemon = spawn(process.env.VERGE_DEVICE, ['serve', '--config', join(out, 'device/artifacts/verge.json'),
      '--state-dir', join(dir, 'state'), '--thing-name', 'test-shop'], { stdio: ['ignore', 'ignore', 'inherit'] });
    await waitReady(`http://127.0.0.1:${apiPort}/readyz`, daemon);
    const config = JSON.parse(readFileSync(join(out, 'device/artifacts/verge.json'), 'utf8'));

    const inputs = readdirSync(join(SHOP, 'inputs')).filter((f) => f.startsWith('tx-')).map((f) => join(SHOP, 'inputs', f));
    const device = new Map();
    for (const file of inputs) {
      const res = await fetch(`http://127.0.0.1:${apiPort}/v1/infer/fraud-score`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: readFileSync(file),
      });
      const answer = await res.json();
      assert.ok(answer.outbox && !answer.outbox.error, `the outcome was queued for the cloud: ${JSON.stringify(answer)}`);
      device.set(file, deviceOutcome(answer));
    }

    // The edge: every package; those with the route's settings must match it.
    const packages = readdirSync(join(out, 'edge'), { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name);
    assert.deepEqual(packages.sort(), ['fraud-score-origin-request', 'fraud-score-viewer-request', 'text-embed-origin-request']);
    let compared = 0;
    for (const name of packages) {
      const unzipped = join(dir, 'edge', name);
      execFileSync('python3', ['-m', 'zipfile', '-e', join(out, 'edge', name, 'function.zip'), unzipped]);
      const meta = JSON.parse(readFileSync(join(unzipped, 'verge.json'), 'utf8'));
      const route = Object.values(config.routes).find((r) => `${r.component}` === name.replace(/-(viewer|origin)-(request|response)$/, ''));
      const contentType = name.startsWith('text-embed') ? 'text/plain' : 'application/json';
      const files = name.startsWith('text-embed') ? readdirSync(join(SHOP, 'inputs')).filter((f) => f.endsWith('.txt')).map((f) => join(SHOP, 'inputs', f)) : inputs;
      const results = await invoke(unzipped, files.map((file) => ({ file, content_type: contentType })));
      for (const r of results) assert.notEqual(r.outcome.kind, 'error', `${name} on ${r.file}: ${JSON.stringify(r.outcome)}`);
      if (!route || JSON.stringify(meta.config) !== JSON.stringify(route.config)) {
        t.diagnostic(`${name}: settings ${JSON.stringify(meta.config)} are not a device route's: compared by verge check below`);
        continue;
      }
      for (const r of results) {
        assert.deepEqual(differences(device.get(r.file), r.outcome), [], `${name} vs serve on ${r.file}`);
        compared++;
      }
      t.diagnostic(`${name}: ${results.length} outcomes identical to serve's (${[...new Set(results.map((r) => r.outcome.kind))].join(', ')})`);
    }
    assert.equal(compared, inputs.length, 'fraud-score at origin-request has the device route settings');

    // Every edge function against the device host on its own settings.
    const check = spawnSync(process.env.VERGE_APP, ['check', manifestPath,
      ...inputs.flatMap((f) => ['--input', f])], {
      encoding: 'utf8', env: { ...process.env, VERGE_NN_PROVIDER_DIR: process.env.VERGE_WASM_DIR },
    });
    t.diagnostic(check.stdout.trim());
    assert.equal(check.status, 0, `verge check: ${check.stderr}\n${check.stdout}`);
  } finally {
    daemon?.kill('SIGTERM');
    broker?.kill('SIGTERM');
    await sleep(200);
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Debian puts mosquitto in /usr/sbin, which a non-root PATH may lack. */
function existsMosquitto() {
  return ['/usr/sbin/mosquitto', '/usr/bin/mosquitto'].find((p) => existsSync(p)) ?? 'mosquitto';
}
