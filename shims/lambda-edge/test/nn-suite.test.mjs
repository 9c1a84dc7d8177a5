// The wasi:nn behaviour suite (components/nn-suite/cases.json) through the
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

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';

const { VERGE_EDGE_PACKAGES: PACKAGES } = process.env;
const REQUIRE_ALL = process.env.VERGE_REQUIRE_ALL === '1';
if (!PACKAGES && REQUIRE_ALL) throw new Error('set VERGE_EDGE_PACKAGES: the behaviour suite needs its packs');

const { cases } = JSON.parse(readFileSync(new URL('../../../components/nn-suite/cases.json', import.meta.url), 'utf8'));
const fixture = JSON.parse(readFileSync(new URL('fixtures/origin-request.json', import.meta.url), 'utf8'));

/** One case as an origin-request event: the case in the body, the command in a header. */
function event(c) {
  const e = structuredClone(fixture);
  const { request } = e.Records[0].cf;
  request.headers.probe = [{ key: 'probe', value: 'nn-case' }];
  request.body = { action: 'read-only', data: Buffer.from(JSON.stringify(c)).toString('base64'), encoding: 'base64', inputTruncated: false };
  return e;
}

for (const pack of ['nn-suite-tract', 'nn-suite-onnxruntime']) {
  const zip = PACKAGES && join(PACKAGES, pack, 'function.zip');
  const skip = !PACKAGES ? 'set VERGE_EDGE_PACKAGES' : !existsSync(zip) && !REQUIRE_ALL ? `${zip} is missing` : false;
  test(`wasi:nn behaviour suite: ${pack} (packed shim)`, { skip }, async (t) => {
    assert.ok(existsSync(zip), `${zip} is missing`);
    const dir = mkdtempSync(join(tmpdir(), `verge-${pack}-`));
    execFileSync('python3', ['-m', 'zipfile', '-e', zip, dir]);
    const { handler } = await import(pathToFileURL(join(dir, 'index.mjs')).href);
    const logs = [];
    t.mock.method(console, 'log', (line) => logs.push(line));
    const failed = [];
    try {
      for (const c of cases) {
        const result = await handler(event(c), { getRemainingTimeInMillis: () => 30000 });
        const body = result.status === '200' ? JSON.parse(Buffer.from(result.body, result.bodyEncoding === 'base64' ? 'base64' : 'utf8')) : null;
        if (!body?.ok) failed.push(`${c.name}: ${body ? body.why : JSON.stringify(result).slice(0, 300)}`);
      }
    } finally {
      console.log.mock.restore();
    }
    t.diagnostic(`wasi:nn behaviour suite on ${pack}: ${cases.length - failed.length} passed, ${failed.length} failed`);
    assert.deepEqual(failed, [], logs.slice(-5).join('\n'));
  });
}
