// Calls an unzipped `verge-edge pack` package as Lambda@Edge would, once per
// input, on one warm instance, and prints what it decided as one JSON line per
// input: the outcome in the shape `verge-device run` reports (respond /
// annotate / defer), the first call's time and the median of the warm ones.
// `verge check` and `verge build` (warm durations) run it; so can anyone:
//
//   echo '{"inputs":[{"file":"tx.json","content_type":"application/json"}],"repeat":20}' \
//     | node invoke.mjs UNZIPPED_PACKAGE_DIR
//
// Events are made for the package's trigger (its verge.json `trigger`): the
// input is the request body (base64, as CloudFront sends it with include-body)
// for request triggers; a response trigger gets the same request and a 200
// response (CloudFront gives response triggers no body).

import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const HEADER_NAMES = { 'content-type': 'Content-Type', 'content-length': 'Content-Length' };

export function event(trigger, body, contentType) {
  const headers = {
    host: [{ key: 'Host', value: 'd111111abcdef8.cloudfront.net' }],
    'user-agent': [{ key: 'User-Agent', value: 'verge-check' }],
  };
  if (contentType) headers['content-type'] = [{ key: HEADER_NAMES['content-type'], value: contentType }];
  headers['content-length'] = [{ key: HEADER_NAMES['content-length'], value: String(body.length) }];
  const request = {
    clientIp: '203.0.113.178',
    headers,
    method: 'POST',
    querystring: '',
    uri: '/',
    body: { action: 'read-only', data: body.toString('base64'), encoding: 'base64', inputTruncated: false },
  };
  if (trigger.startsWith('origin')) {
    request.origin = {
      custom: {
        customHeaders: {}, domainName: 'origin.example.com', keepaliveTimeout: 5, path: '', port: 443,
        protocol: 'https', readTimeout: 30, sslProtocols: ['TLSv1.2'],
      },
    };
  }
  const cf = {
    config: { distributionDomainName: 'd111111abcdef8.cloudfront.net', distributionId: 'EDFDVBD6EXAMPLE', eventType: trigger, requestId: 'verge-check' },
    request,
  };
  if (trigger.endsWith('-response')) {
    delete request.body;
    cf.response = { status: '200', statusDescription: 'OK', headers: {} };
  }
  return { Records: [{ cf }] };
}

/** What the handler returned, as an outcome: { kind, status, headers, content_type, body } / { kind, headers } / { kind, reason }. */
export function outcome(result, sent) {
  const values = (list) => list.map((h) => h.value).join(', ');
  const responseTrigger = sent.response !== undefined;
  const generated = responseTrigger
    ? result.body !== undefined || String(result.status) !== sent.response.status
    : result.status !== undefined;
  if (generated) {
    const headers = {};
    for (const [name, list] of Object.entries(result.headers ?? {})) {
      if (name !== 'content-type') headers[name] = values(list);
    }
    const bytes = Buffer.from(result.body ?? '', result.bodyEncoding === 'base64' ? 'base64' : 'utf8');
    const contentType = result.headers?.['content-type']?.[0]?.value ?? '';
    let body = bytes.toString('utf8');
    if (/json/.test(contentType)) {
      try {
        body = JSON.parse(body);
      } catch {
        // kept as text: the difference will show
      }
    } else if (!Buffer.from(body, 'utf8').equals(bytes)) {
      body = { base64: bytes.toString('base64') };
    }
    return { kind: 'respond', status: Number(result.status), headers, content_type: contentType, body };
  }
  // Passed on: deferred (x-verge-deferred) or annotated (the headers it did not have).
  const before = (responseTrigger ? sent.response : sent.request).headers;
  const added = {};
  for (const [name, list] of Object.entries(result.headers ?? {})) {
    if (!before[name]) added[name] = values(list);
  }
  if ('x-verge-deferred' in added) return { kind: 'defer', reason: added['x-verge-deferred'] };
  return { kind: 'annotate', headers: added };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : null;
};

/** Each input through the package in `dir`; returns one record per input. */
export async function invoke(dir, inputs, repeat = 1) {
  const manifest = JSON.parse(readFileSync(join(dir, 'verge.json'), 'utf8'));
  const { handler } = await import(pathToFileURL(resolve(dir, 'index.mjs')).href);
  const context = { getRemainingTimeInMillis: () => manifest.timeout_s * 1000 };
  const logs = [];
  const log = console.log;
  console.log = (line) => logs.push(line);
  const out = [];
  try {
    for (const { file, content_type: contentType = '' } of inputs) {
      const body = readFileSync(file);
      let first;
      const warm = [];
      let record;
      for (let i = 0; i < Math.max(1, repeat); i++) {
        const e = event(manifest.trigger, body, contentType);
        const sent = structuredClone(e.Records[0].cf);
        const started = performance.now();
        let result;
        try {
          result = await handler(e, context);
        } catch (err) {
          record = { kind: 'error', error: String(err?.message ?? err) };
          break;
        }
        const ms = performance.now() - started;
        if (i === 0) first = ms;
        else warm.push(ms);
        record = outcome(result, sent);
      }
      const errors = logs.splice(0).map((l) => {
        try {
          return JSON.parse(l);
        } catch {
          return { level: 'info', message: String(l) };
        }
      }).filter((l) => l.level === 'error');
      if (errors.length && record.kind !== 'error') record.logged = errors.map((l) => l.error ?? l.message);
      out.push({ file, outcome: record, cold_ms: first ?? null, warm_ms: median(warm) });
    }
  } finally {
    console.log = log;
  }
  return out;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const dir = process.argv[2];
  const { inputs, repeat = 1 } = JSON.parse(readFileSync(0, 'utf8'));
  for (const r of await invoke(dir, inputs, repeat)) process.stdout.write(`${JSON.stringify(r)}\n`);
}
