// The packed artifact itself: each test unzips a function.zip made by
// `verge-edge pack` into a fresh temporary folder, imports the index.mjs found
// there and calls `handler(event, context)` as Lambda@Edge would.
//
// Environment:
//   VERGE_EDGE_PACKAGES  a folder holding these packs (each `verge-edge pack ... --out $VERGE_EDGE_PACKAGES/NAME`):
//     file-type-origin    --component file_type.wasm --model magika=<models>/magika-standard-v3-3/model.onnx
//                         --trigger origin-request --include-body --memory 512 --timeout 30
//     probe-origin-fail   --component probe.wasm --trigger origin-request --include-body
//                         --on-error fail --timeout 30 --config greeting=hello
//     probe-origin-pass   --component probe.wasm --trigger origin-request --include-body
//                         --on-error pass --memory 128 --timeout 5
//   VERGE_EDGE           the verge-edge binary (pack determinism and refusals)
//   VERGE_WASM_DIR       the built components (file_type.wasm, probe.wasm, nn_provider.wasm)
//   VERGE_MODELS_DIR     models/.cache (magika-standard-v3-3/model.onnx)
// Tests whose inputs are missing are skipped, saying which variable to set,
// except under VERGE_REQUIRE_ALL=1 (./dev test, CI), where that is a failure.
//
// Why no probe pack for a viewer trigger: probe imports wasi:nn, so the tract
// provider is composed in and the zip is ~2.6 MB, over the 1 MB viewer quota
// (pack refuses it; tested below). probe-origin-pass has viewer-compatible
// settings (128 MB, 5 s) and is given viewer events to test the shim's viewer
// rules (placement, 40 KB limits) inside the packed artifact.

import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { crc32, deflateSync } from 'node:zlib';
import { scratch } from './scratch.mjs';

const { VERGE_EDGE_PACKAGES: PACKAGES, VERGE_EDGE, VERGE_WASM_DIR, VERGE_MODELS_DIR } = process.env;
const KB = 1024;
const MB = 1024 * KB;

const missing = (...names) => {
  const unset = names.filter((n) => !process.env[n]);
  if (unset.length && process.env.VERGE_REQUIRE_ALL === '1') {
    throw new Error(`set ${unset.join(', ')}: the packed-artifact tests need them`);
  }
  return unset.length ? `set ${unset.join(', ')}` : false;
};
const needPackages = missing('VERGE_EDGE_PACKAGES');
const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');

/** Unzips a pack into a fresh folder and imports its entry point: a cold container. */
async function unpack(name) {
  const zip = join(PACKAGES, name, 'function.zip');
  assert.ok(existsSync(zip), `${zip} is missing: make it with verge-edge pack (see the top of this file)`);
  const dir = scratch(`verge-${name}-`);
  execFileSync('python3', ['-m', 'zipfile', '-e', zip, dir]);
  const index = await import(pathToFileURL(join(dir, 'index.mjs')).href);
  const manifest = JSON.parse(readFileSync(join(dir, 'verge.json'), 'utf8'));
  return { dir, handler: index.handler, manifest };
}

/** A Lambda context whose remaining time is fixed (so a test can compare it). */
const context = (remaining = 4321) => ({
  functionName: 'us-east-1.verge-test',
  awsRequestId: 'test',
  getRemainingTimeInMillis: () => remaining,
});

function fixture(eventType) {
  return JSON.parse(readFileSync(new URL(`fixtures/${eventType}.json`, import.meta.url), 'utf8'));
}

/** A CloudFront event of this type whose request body is `body` (request events). */
function event(eventType, body, { truncated = false } = {}) {
  const e = fixture(eventType);
  const { request } = e.Records[0].cf;
  if (body !== undefined) {
    request.body = { action: 'read-only', data: Buffer.from(body).toString('base64'), encoding: 'base64', inputTruncated: truncated };
  }
  return e;
}

/** Log lines written during `fn`, parsed (every line the shim writes is JSON). */
async function logged(t, fn) {
  const lines = [];
  t.mock.method(console, 'log', (line) => lines.push(JSON.parse(line)));
  try {
    return { value: await fn(), lines };
  } finally {
    console.log.mock.restore();
  }
}

const bodyJson = (result) => JSON.parse(result.bodyEncoding === 'base64' ? Buffer.from(result.body, 'base64').toString() : result.body);

/** Calls a probe pack with one command and returns the parsed JSON body. */
async function probe(handler, command, eventType = 'origin-request', ctx = context()) {
  const result = await handler(event(eventType, command), ctx);
  assert.equal(result.status, '200', JSON.stringify(result));
  return bodyJson(result);
}

/** A small real PNG (64×64 RGB gradient), made here so the test needs no image file. */
function png(w = 64, h = 64) {
  const chunk = (type, data) => {
    const head = Buffer.alloc(4);
    head.writeUInt32BE(data.length);
    const typed = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(typed));
    return Buffer.concat([head, typed, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  const raw = Buffer.alloc((w * 3 + 1) * h);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) raw.set([x * 4, y * 4, (x * y) & 255], y * (w * 3 + 1) + 1 + x * 3);
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/** A system ELF executable small enough for an origin-request body. */
const smallElf = ['/usr/bin/ls', '/bin/ls', '/usr/bin/env', '/bin/true'].find(
  (p) => existsSync(p) && statSync(p).size <= MB && readFileSync(p).subarray(0, 4).toString('latin1') === '\x7fELF',
);

describe('the zip as packed', { skip: needPackages }, () => {
  const SHIM = ['cabi.mjs', 'cloudfront.mjs', 'engine-abi.mjs', 'host.mjs', 'index.mjs', 'models.mjs', 'onnxruntime.mjs', 'wasi.mjs'];
  for (const name of ['file-type-origin', 'file-type-origin-onnxruntime', 'probe-origin-fail', 'probe-origin-pass']) {
    test(`${name}: holds the shim sources, the transpiled component and a manifest that matches`, async () => {
      const { dir, manifest } = await unpack(name);
      const top = readdirSync(dir).sort();
      // The onnxruntime engine brings the binding and its library; the others nothing native.
      const native = manifest.engine.name === 'onnxruntime' ? ['onnxruntime'] : [];
      assert.deepEqual(top.filter((f) => !['component', 'models', ...native].includes(f)), [...SHIM, 'package.json', 'verge.json'].sort());
      if (native.length) {
        assert.deepEqual(readdirSync(join(dir, 'onnxruntime')).sort(), ['libonnxruntime.so.1', 'onnxruntime_binding.node']);
      }
      assert.ok(readdirSync(join(dir, 'component')).includes('component.js'));
      // A stale verge-edge would pack an older shim: the zip must carry today's sources.
      for (const f of SHIM) {
        assert.equal(readFileSync(join(dir, f), 'utf8'), readFileSync(new URL(`../src/${f}`, import.meta.url), 'utf8'),
          `${f} in the zip differs from shims/lambda-edge/src/${f}: rebuild verge-edge, then re-pack`);
      }
      assert.deepEqual(manifest, JSON.parse(readFileSync(join(PACKAGES, name, 'verge.json'), 'utf8')));
      for (const [model, m] of Object.entries(manifest.models)) {
        assert.equal(sha256(readFileSync(join(dir, m.file))), m.sha256, model);
      }
      if (VERGE_WASM_DIR) {
        const wasm = join(VERGE_WASM_DIR, manifest.component.name);
        assert.equal(sha256(readFileSync(wasm)), manifest.component.sha256, `${wasm} is not the packed component: re-pack`);
      }
      const template = JSON.parse(readFileSync(join(PACKAGES, name, 'template.json'), 'utf8'));
      const fn = template.Resources.EdgeFunction.Properties;
      assert.equal(fn.Runtime, 'nodejs22.x');
      assert.deepEqual(fn.Architectures, ['x86_64']);
      assert.equal(fn.Handler, 'index.handler');
      assert.equal(fn.MemorySize, manifest.memory_mb);
      assert.equal(fn.Timeout, manifest.timeout_s);
      const [assoc] = template.Resources.Distribution.Properties.DistributionConfig.DefaultCacheBehavior.LambdaFunctionAssociations;
      assert.equal(assoc.EventType, manifest.trigger);
      assert.equal(assoc.IncludeBody, manifest.include_body);
    });
  }
});

describe('file-type, packed for origin-request', { skip: needPackages }, () => {
  test('labels a real PNG, ELF and JSON body through annotate headers, the request passed on', async (t) => {
    const { handler, manifest } = await unpack('file-type-origin');
    assert.equal(manifest.trigger, 'origin-request');
    assert.equal(manifest.models.magika.file, 'models/magika.onnx');
    const bodies = [
      ['png', 'image', png()],
      ['json', 'code', Buffer.from(JSON.stringify(fixture('origin-response'), null, 2))],
    ];
    if (smallElf) bodies.push(['elf', 'executable', readFileSync(smallElf)]);
    else t.diagnostic('no small system ELF found: the elf case is skipped');
    for (const [label, group, body] of bodies) {
      const e = event('origin-request', body);
      const { value: result, lines } = await logged(t, () => handler(e, context(29000)));
      assert.equal(result.headers['x-file-type']?.[0].value, label, JSON.stringify(result.headers));
      assert.equal(result.headers['x-file-type-group'][0].value, group);
      assert.ok(result.headers['x-file-type-mime'][0].value.length > 0);
      const score = Number(result.headers['x-file-type-score'][0].value);
      assert.ok(score > 0.9 && score <= 1, `${label} score ${score}`);
      // Annotated, not answered: the request goes on to the origin with its body untouched.
      assert.equal(result.uri, '/files/upload.bin');
      assert.equal(result.body.data, e.Records[0].cf.request.body.data);
      assert.equal(result.status, undefined);
      assert.equal(lines.length, 1);
      assert.equal(lines[0].kind, 'annotate');
    }
  });

  test('a truncated body is reported to the component, which defers to the origin', async () => {
    const { handler } = await unpack('file-type-origin');
    const first = readFileSync(process.execPath).subarray(0, MB); // CloudFront's first 1 MB of a larger upload
    const result = await handler(event('origin-request', first, { truncated: true }), context());
    assert.match(result.headers['x-verge-deferred'][0].value, /truncated by the host at 1048576 bytes/);
    assert.equal(result.headers['x-file-type'], undefined);
  });
});

describe('probe, packed', { skip: needPackages }, () => {
  test('placement, limits and remaining time as the component sees them: edge-origin vs edge-viewer', async () => {
    const origin = await unpack('probe-origin-fail');
    assert.deepEqual(await probe(origin.handler, 'host', 'origin-request', context(12345)), {
      placement: 'Placement::EdgeOrigin',
      max_body_bytes: MB,
      deadline_ms: 30000,
      memory_bytes: 128 * MB,
      remaining_ms: 12345,
    });
    const viewer = await unpack('probe-origin-pass');
    assert.deepEqual(await probe(viewer.handler, 'host', 'viewer-request', context(4321)), {
      placement: 'Placement::EdgeViewer',
      max_body_bytes: 40 * KB,
      deadline_ms: 5000,
      memory_bytes: 128 * MB,
      remaining_ms: 4321,
    });
    // The deadline follows the context as it runs down.
    let left = 3000;
    const ctx = { getRemainingTimeInMillis: () => (left -= 7) };
    assert.equal((await probe(viewer.handler, 'host', 'viewer-request', ctx)).remaining_ms, 2993);
  });

  test('the request as the component sees it; a truncated body is reported', async () => {
    const { handler } = await unpack('probe-origin-fail');
    const whole = await probe(handler, 'echo');
    assert.deepEqual(whole, {
      content_type: 'application/octet-stream',
      length: 4,
      truncated: false,
      attributes: whole.attributes,
    });
    assert.ok(whole.attributes.includes(':event-type=origin-request'));
    assert.ok(whole.attributes.includes(':uri=/files/upload.bin'));
    assert.ok(whole.attributes.includes('host=example.org'));
    for (const [pack, eventType] of [['probe-origin-fail', 'origin-request'], ['probe-origin-pass', 'viewer-request']]) {
      const { handler: h } = await unpack(pack);
      const cut = bodyJson(await h(event(eventType, 'echo', { truncated: true }), context()));
      assert.equal(cut.truncated, true, eventType);
      assert.equal(cut.length, 4);
    }
  });

  test('outcomes: respond, annotate, defer', async () => {
    const { handler } = await unpack('probe-origin-fail');
    const annotated = await handler(event('origin-request', 'annotate'), context());
    assert.deepEqual(annotated.headers['x-probe'], [{ key: 'x-probe', value: 'annotated' }]);
    assert.deepEqual(annotated.headers['x-probe-length'], [{ key: 'x-probe-length', value: '8' }]);
    assert.equal(annotated.uri, '/files/upload.bin');
    const deferred = await handler(event('origin-request', 'defer'), context());
    assert.deepEqual(deferred.headers['x-verge-deferred'], [{ key: 'x-verge-deferred', value: 'the probe defers' }]);
    const big = await handler(event('origin-request', 'big:50000'), context());
    assert.equal(big.status, '200');
    assert.equal(big.bodyEncoding, 'text');
    assert.equal(big.body.length, 50000);
  });

  test('settings baked in at pack time (wasi:config)', async () => {
    const fail = await unpack('probe-origin-fail');
    assert.deepEqual(fail.manifest.config, { greeting: 'hello' });
    assert.deepEqual(await probe(fail.handler, 'config:greeting'), { value: 'hello' });
    assert.deepEqual(await probe(fail.handler, 'config:absent'), { value: null });
    const pass = await unpack('probe-origin-pass');
    assert.deepEqual(await probe(pass.handler, 'config:greeting'), { value: null });
  });

  test('component error (invalid-input): on-error fail → 503, pass → the request unchanged; one JSON log line', async (t) => {
    const fail = await unpack('probe-origin-fail');
    const { value: r503, lines } = await logged(t, () => fail.handler(event('origin-request', 'invalid'), context()));
    assert.equal(r503.status, '503');
    assert.deepEqual(JSON.parse(r503.body), { error: 'the probe was asked to refuse' });
    assert.equal(lines.length, 1);
    assert.deepEqual([lines[0].level, lines[0].kind, lines[0].on_error], ['error', 'invalid-input', 'fail']);

    const pass = await unpack('probe-origin-pass');
    const e = event('origin-request', 'invalid');
    const expected = structuredClone(e.Records[0].cf.request);
    const { value: passed, lines: passLines } = await logged(t, () => pass.handler(e, context()));
    assert.deepEqual(passed, expected);
    assert.equal(passLines.length, 1);
    assert.deepEqual([passLines[0].kind, passLines[0].on_error], ['invalid-input', 'pass']);
    // A component error leaves the instance as it was: state survives.
    assert.deepEqual(await probe(pass.handler, 'count'), { hits: 1 });
    await pass.handler(event('origin-request', 'invalid'), context());
    assert.deepEqual(await probe(pass.handler, 'count'), { hits: 2 });
  });

  test('response events reach the component too (no body: the probe refuses, on-error applies)', async () => {
    const fail = await unpack('probe-origin-fail');
    const pass = await unpack('probe-origin-pass');
    for (const eventType of ['origin-response', 'viewer-response']) {
      const e = event(eventType);
      const original = structuredClone(e.Records[0].cf.response);
      assert.deepEqual(await pass.handler(e, context()), original, eventType);
    }
    assert.equal((await fail.handler(event('origin-response'), context())).status, '503');
    // A viewer-response cannot change the status, not even to fail.
    assert.equal((await fail.handler(event('viewer-response'), context())).status, '200');
  });

  test('trap: fail → 503, pass → unchanged; one JSON log line with the panic; the next call gets a new instance', async (t) => {
    for (const [name, status] of [['probe-origin-fail', '503'], ['probe-origin-pass', undefined]]) {
      const { handler } = await unpack(name);
      assert.deepEqual(await probe(handler, 'count'), { hits: 1 });
      assert.deepEqual(await probe(handler, 'count'), { hits: 2 }, 'warm: the same instance, its state kept');
      const { value: result, lines } = await logged(t, () => handler(event('origin-request', 'trap'), context()));
      assert.equal(result.status, status, name);
      if (status) assert.match(JSON.parse(result.body).error, /unreachable/);
      else assert.equal(result.uri, '/files/upload.bin');
      assert.equal(lines.length, 1, JSON.stringify(lines));
      assert.equal(lines[0].level, 'error');
      assert.equal(lines[0].kind, 'trap');
      assert.ok(lines[0].output.some((l) => l.includes('the probe was asked to trap')), JSON.stringify(lines[0]));
      // The trapped instance is gone: a fresh one (fresh in-memory state) answers next.
      assert.deepEqual(await probe(handler, 'count'), { hits: 1 }, `${name}: state resets after a trap`);
      assert.deepEqual(await probe(handler, 'count'), { hits: 2 });
      assert.equal((await probe(handler, 'echo')).length, 4);
    }
  });

  test('a generated response over the viewer 40 KB quota follows on-error (pass: the request goes on)', async (t) => {
    const { handler } = await unpack('probe-origin-pass');
    const e = event('viewer-request', 'big:50000');
    const expected = structuredClone(e.Records[0].cf.request);
    const { value: result, lines } = await logged(t, () => handler(e, context()));
    assert.deepEqual(result, expected);
    assert.equal(lines.length, 1);
    assert.equal(lines[0].kind, 'quota');
    assert.match(lines[0].message, /over viewer-request's 40960 byte limit/);
    // Under the quota it is answered.
    assert.equal((await handler(event('viewer-request', 'big:30000'), context())).status, '200');
  });

  test('a generated response over the origin 1 MB quota follows on-error (fail: 503)', async () => {
    const { handler } = await unpack('probe-origin-fail');
    const result = await handler(event('origin-request', `big:${MB + 1}`), context());
    assert.equal(result.status, '503');
    assert.match(JSON.parse(result.body).error, /over origin-request's 1048576 byte limit/);
  });

  test('malformed events are rejected clearly; the module keeps working', async (t) => {
    const { handler } = await unpack('probe-origin-fail');
    const noResponse = fixture('origin-response');
    delete noResponse.Records[0].cf.response;
    const unknownType = event('origin-request', 'echo');
    unknownType.Records[0].cf.config.eventType = 'edge-request';
    for (const [bad, message] of [
      [{}, /not a CloudFront event: no Records\[0\]\.cf/],
      [null, /not a CloudFront event/],
      [{ Records: [{}] }, /not a CloudFront event/],
      [unknownType, /unknown CloudFront event type "edge-request"/],
      [noResponse, /origin-response event has no response/],
    ]) {
      const { value: rejection, lines } = await logged(t, () => handler(bad, context()).then(() => null, (e) => e));
      assert.ok(rejection instanceof Error, 'rejected');
      assert.match(rejection.message, message);
      assert.equal(lines.length, 1);
      assert.equal(lines[0].kind, 'malformed-event');
    }
    // A record that is recognisable but whose body is not: on-error applies (fail here).
    const badBody = event('origin-request', 'echo');
    badBody.Records[0].cf.request.body.encoding = 'rot13';
    const r = await handler(badBody, context());
    assert.equal(r.status, '503');
    assert.match(JSON.parse(r.body).error, /unknown body encoding "rot13"/);
    assert.equal((await probe(handler, 'echo')).length, 4, 'still answering');
  });
});

describe('verge-edge pack', { skip: missing('VERGE_EDGE', 'VERGE_WASM_DIR') }, () => {
  const pack = (args) => spawnSync(VERGE_EDGE, ['pack', '--engine', 'tract', '--provider', join(VERGE_WASM_DIR, 'nn_provider.wasm'), ...args], { encoding: 'utf8' });
  const out = () => scratch('verge-pack-');

  test('is deterministic: the same inputs give the same zip (sha256) and template', () => {
    const args = ['--component', join(VERGE_WASM_DIR, 'probe.wasm'), '--trigger', 'origin-request', '--include-body',
      '--config', 'b=2', '--config', 'a=1'];
    const [a, b] = [out(), out()];
    for (const dir of [a, b]) {
      const r = pack([...args, '--out', dir]);
      assert.equal(r.status, 0, r.stderr);
    }
    const [za, zb] = [a, b].map((d) => readFileSync(join(d, 'function.zip')));
    assert.equal(sha256(za), sha256(zb));
    assert.equal(readFileSync(join(a, 'template.json'), 'utf8'), readFileSync(join(b, 'template.json'), 'utf8'));
    assert.match(readFileSync(join(a, 'template.json'), 'utf8'), new RegExp(sha256(za)), 'the template names the zip');
  });

  test('refuses a package over the viewer 1 MB quota, naming the size and the limit', { skip: missing('VERGE_MODELS_DIR') }, () => {
    const r = pack(['--component', join(VERGE_WASM_DIR, 'file_type.wasm'),
      '--model', `magika=${join(VERGE_MODELS_DIR, 'magika-standard-v3-3', 'model.onnx')}`,
      '--trigger', 'viewer-request', '--include-body', '--out', out()]);
    assert.equal(r.status, 1);
    const m = r.stderr.match(/refused: the package is (\d+) bytes compressed; viewer-request allows 1048576 bytes \(1 MB\)/);
    assert.ok(m, r.stderr);
    assert.ok(Number(m[1]) > 4 * MB, `file_type + magika is ~5.5 MB, got ${m[1]}`);
  });

  test('refuses a nn-using component for viewer triggers (the provider alone is over 1 MB)', () => {
    const r = pack(['--component', join(VERGE_WASM_DIR, 'probe.wasm'), '--trigger', 'viewer-request', '--out', out()]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /the package is \d+ bytes compressed; viewer-request allows 1048576 bytes/);
  });

  for (const trigger of ['viewer-request', 'viewer-response']) {
    test(`refuses memory 256 for ${trigger}`, () => {
      const dir = out();
      const r = pack(['--component', join(VERGE_WASM_DIR, 'probe.wasm'), '--trigger', trigger, '--memory', '256', '--out', dir]);
      assert.equal(r.status, 1);
      assert.match(r.stderr, new RegExp(`refused: memory 256 MB is outside ${trigger}'s 128–128 MB`));
      assert.ok(!existsSync(join(dir, 'function.zip')), 'nothing written');
    });
  }

  test('refuses a viewer timeout over 5 s and a body for response triggers', () => {
    const probeWasm = join(VERGE_WASM_DIR, 'probe.wasm');
    let r = pack(['--component', probeWasm, '--trigger', 'viewer-request', '--timeout', '6', '--out', out()]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /timeout 6 s is over viewer-request's 5 s/);
    r = pack(['--component', probeWasm, '--trigger', 'origin-response', '--include-body', '--out', out()]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /origin-response cannot include a body/);
  });
});
