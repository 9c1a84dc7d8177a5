#!/usr/bin/env node
// Coverage at the edge: ONNX's own operator tests (onnx_node_cases.py's
// cases) through the probe component in a packed zip, per engine: how many
// of them the edge runs, beside what the device runs (host-greengrass
// examples/onnx_coverage.rs).
//
//   node shims/lambda-edge/bench/onnx-coverage.mjs CASES_JSON PACK_DIR… [--rows FILE] [--failures]
//     each PACK_DIR holds function.zip: the probe packed with every case's model

import { execFileSync } from 'node:child_process';
import { appendFileSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { pathToFileURL } from 'node:url';

const args = process.argv.slice(2);
const rowsAt = args.indexOf('--rows');
const rows = rowsAt >= 0 ? args.splice(rowsAt, 2)[1] : undefined;
const show = args.includes('--failures');
const [casesFile, ...packs] = args.filter((a) => a !== '--failures');
const { cases } = JSON.parse(readFileSync(casesFile, 'utf8'));
const fixture = JSON.parse(readFileSync(new URL('../test/fixtures/origin-request.json', import.meta.url), 'utf8'));

for (const pack of packs) {
  const dir = mkdtempSync(join(tmpdir(), 'verge-coverage-'));
  execFileSync('python3', ['-m', 'zipfile', '-e', join(pack, 'function.zip'), dir]);
  const manifest = JSON.parse(readFileSync(join(dir, 'verge.json'), 'utf8'));
  const { handler } = await import(pathToFileURL(join(dir, 'index.mjs')).href);
  const failed = [];
  const log = console.log;
  console.log = () => {};
  try {
    for (const c of cases) {
      const e = structuredClone(fixture);
      const { request } = e.Records[0].cf;
      request.headers.probe = [{ key: 'probe', value: 'nn-case' }];
      request.body = { action: 'read-only', data: Buffer.from(JSON.stringify(c)).toString('base64'), encoding: 'base64', inputTruncated: false };
      let body = null;
      try {
        const r = await handler(e, { getRemainingTimeInMillis: () => 30000 });
        if (r.status === '200') body = JSON.parse(Buffer.from(r.body, r.bodyEncoding === 'base64' ? 'base64' : 'utf8'));
      } catch (err) {
        body = { ok: false, why: String(err?.message ?? err) };
      }
      if (!body?.ok) failed.push(`${c.name}: ${body?.why ?? 'no answer (a trap)'}`);
    }
  } finally {
    console.log = log;
  }
  const passed = cases.length - failed.length;
  console.log(`onnx node tests through the edge (${basename(pack)}, engine ${manifest.engine.name}): ${passed} passed, ${failed.length} failed of ${cases.length}`);
  if (show) for (const f of failed) console.log(`  ${f}`);
  if (rows) {
    appendFileSync(rows, JSON.stringify({
      section: 'coverage', workload: 'onnx node tests', system: `edge, ${manifest.engine.name}`, metric: 'passed',
      unit: 'tests', samples: [passed], baseline: false, better: 'higher',
    }) + '\n');
  }
}
