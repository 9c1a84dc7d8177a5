// Property tests of cloudfront.mjs over generated CloudFront events and
// outcomes (fast-check): the event → request mapping never throws on a valid
// event and yields a well-formed request (headers round-trip, bodies decoded
// from base64 or text), and outcomes → results keep every header the event
// allows, decode back to the component's body and stay within the quota.
// Seeded and bounded: a failure prints its seed and the shrunk case.
//
//   node --test shims/lambda-edge/test/cloudfront.property.test.mjs

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import fc from 'fast-check';

import {
  EVENT_TYPES,
  EventError,
  OutcomeError,
  QuotaError,
  fromOutcome,
  headerRefusal,
  recordOf,
  toRequest,
} from '../src/cloudfront.mjs';

const RUNS = { seed: 15, numRuns: 300 };
const KB = 1024;
const LIMITS = {
  'viewer-request': { response_bytes: 40 * KB },
  'viewer-response': { response_bytes: 40 * KB },
  'origin-request': { response_bytes: 1024 * KB },
  'origin-response': { response_bytes: 1024 * KB },
};

// Header names as CloudFront gives them (lower-case keys), some that an
// event forbids writing, and any other token.
const KNOWN = ['content-type', 'content-length', 'content-encoding', 'host', 'via', 'set-cookie', 'accept',
  'x-amz-cf-pop', 'x-edge-location', 'connection', 'transfer-encoding', 'user-agent', 'x-forwarded-proto'];
const headerName = fc.oneof(fc.constantFrom(...KNOWN), fc.stringMatching(/^[a-z0-9!#$%&'*+.^_`|~-]{1,16}$/));
const caseOf = (name) => fc.boolean().map((upper) => (upper ? name.toUpperCase() : name));
const headerValue = fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: 'grapheme', maxLength: 20 }));
const headers = fc
  .uniqueArray(headerName, { maxLength: 8 })
  .chain((names) =>
    fc.tuple(...names.map((n) => fc.array(fc.record({ key: caseOf(n), value: headerValue }), { minLength: 1, maxLength: 3 })))
      .map((lists) => Object.fromEntries(names.map((n, i) => [n, lists[i]]))));

const bytes = fc.uint8Array({ maxLength: 2048 });
const body = fc.oneof(
  fc.record({ encoding: fc.constant('base64'), bytes, inputTruncated: fc.boolean() })
    .map(({ encoding, bytes, inputTruncated }) => ({ action: 'read-only', encoding, inputTruncated, data: Buffer.from(bytes).toString('base64') })),
  fc.record({ encoding: fc.constant('text'), data: fc.string({ unit: 'grapheme', maxLength: 200 }), inputTruncated: fc.boolean() })
    .map((b) => ({ action: 'read-only', ...b })),
);

const event = fc
  .record({
    eventType: fc.constantFrom(...EVENT_TYPES),
    request: fc.record({
      clientIp: fc.oneof(fc.ipV4(), fc.ipV6()),
      method: fc.constantFrom('GET', 'POST', 'PUT', 'HEAD', 'OPTIONS', 'DELETE'),
      uri: fc.webPath(),
      querystring: fc.string({ maxLength: 30 }),
      headers,
      body: fc.option(body, { nil: undefined }),
    }, { requiredKeys: ['clientIp', 'method', 'uri', 'querystring', 'headers'] }),
    response: fc.record({
      status: fc.integer({ min: 100, max: 599 }).map(String),
      statusDescription: fc.string({ maxLength: 20 }),
      headers,
    }),
  })
  // Events arrive as JSON: plain objects, nothing undefined.
  .map(({ eventType, request, response }) => JSON.parse(JSON.stringify({
    Records: [{
      cf: {
        config: { distributionDomainName: 'd111111abcdef8.cloudfront.net', distributionId: 'EDFDVBD6EXAMPLE', eventType, requestId: 'id' },
        request,
        ...(eventType.endsWith('-response') ? { response } : {}),
      },
    }],
  })));

const cfOf = (e) => e.Records[0].cf;

describe('CloudFront event → verge request', () => {
  test('never throws on a valid event, and the request is well-formed', () => {
    fc.assert(fc.property(event, (e) => {
      const { cf, eventType } = cfOf(e).config && recordOf(e);
      const r = toRequest({ cf, eventType });
      assert.equal(typeof r.contentType, 'string');
      assert.ok(r.body instanceof Uint8Array);
      assert.equal(typeof r.truncated, 'boolean');
      for (const pair of r.attributes) {
        assert.ok(Array.isArray(pair) && pair.length === 2 && pair.every((s) => typeof s === 'string'));
      }
      const isResponse = eventType.endsWith('-response');
      const pseudo = [':event-type', ':method', ':uri', ':querystring', ':client-ip', ...(isResponse ? [':status'] : [])];
      assert.deepEqual(r.attributes.slice(0, pseudo.length).map(([n]) => n), pseudo);
      assert.equal(r.attributes[0][1], eventType);
      assert.equal(r.attributes[1][1], cf.request.method);
      assert.equal(r.attributes[2][1], cf.request.uri);
      if (isResponse) assert.equal(r.attributes[5][1], cf.response.status);
    }), RUNS);
  });

  test("headers round-trip: one attribute per header, lower-case, values joined; the content type is the header's", () => {
    fc.assert(fc.property(event, (e) => {
      const rec = recordOf(e);
      const r = toRequest(rec);
      const source = rec.eventType.endsWith('-response') ? rec.cf.response.headers : rec.cf.request.headers;
      const got = r.attributes.filter(([n]) => !n.startsWith(':'));
      const want = Object.entries(source).map(([n, list]) => [n, list.map((h) => h.value).join(', ')]);
      assert.deepEqual(got, want);
      assert.equal(r.contentType, source['content-type'] ? source['content-type'].map((h) => h.value).join(', ') : '');
    }), RUNS);
  });

  test('bodies: base64 and text decode to their bytes; response events carry none', () => {
    fc.assert(fc.property(event, (e) => {
      const rec = recordOf(e);
      const r = toRequest(rec);
      const b = rec.cf.request.body;
      if (rec.eventType.endsWith('-response') || !b) {
        assert.equal(r.body.length, 0);
        assert.equal(r.truncated, false);
        return;
      }
      const want = b.encoding === 'base64' ? Buffer.from(b.data, 'base64') : Buffer.from(b.data, 'utf8');
      assert.deepEqual(Buffer.from(r.body), want);
      if (b.encoding === 'base64') assert.equal(Buffer.from(r.body).toString('base64'), b.data, 'base64 round-trips');
      else assert.equal(Buffer.from(r.body).toString('utf8'), b.data, 'text round-trips');
      assert.equal(r.truncated, b.inputTruncated);
    }), RUNS);
  });

  test('anything that is not an event is refused with an EventError, never a TypeError', () => {
    const mangled = fc.oneof(
      fc.anything(),
      event.chain((e) => fc.record({ at: fc.constantFrom('Records', 'cf', 'config', 'request', 'response', 'eventType'), to: fc.anything() })
        .map(({ at, to }) => {
          const cf = cfOf(e);
          if (at === 'Records') e.Records = to;
          else if (at === 'cf') e.Records[0].cf = to;
          else if (at === 'eventType') cf.config.eventType = to;
          else cf[at] = to;
          return e;
        })),
    );
    fc.assert(fc.property(mangled, (e) => {
      try {
        recordOf(e);
      } catch (err) {
        assert.ok(err instanceof EventError, `${err}`);
      }
    }), RUNS);
  });
});

const pairs = fc.array(fc.tuple(fc.oneof(headerName, fc.constantFrom('Set-Cookie', 'X-Verge-Score', 'bad name', 'x-ok')), headerValue), { maxLength: 6 });

/** The headers a result must carry for pairs the event allows: every value, in order, by lower-case name. */
function allowed(eventType, list) {
  const want = new Map();
  for (const [name, value] of list) {
    if (headerRefusal(eventType, name, value)) continue;
    const n = name.toLowerCase();
    want.set(n, [...(want.get(n) ?? []), value]);
  }
  return want;
}

const values = (headersObject, name) => (headersObject[name] ?? []).map((h) => h.value);

describe('verge outcome → CloudFront result', () => {
  const outcome = fc.record({
    status: fc.oneof(fc.integer({ min: 200, max: 599 }), fc.integer({ min: 0, max: 999 })),
    contentType: fc.constantFrom('', 'text/plain', 'application/json', 'application/octet-stream', 'image/png'),
    body: fc.oneof(fc.uint8Array({ maxLength: 4096 }), fc.string({ maxLength: 200 }).map((s) => new Uint8Array(Buffer.from(s))),
      fc.integer({ min: 39 * KB, max: 42 * KB }).map((n) => new Uint8Array(n))),
    headers: pairs,
  });

  test('respond: a status CloudFront takes, every allowed header kept, the body decodes back, within the quota', () => {
    fc.assert(fc.property(event, outcome, (e, val) => {
      const rec = recordOf(e);
      let out;
      try {
        out = fromOutcome(rec, { tag: 'respond', val }, LIMITS[rec.eventType]);
      } catch (err) {
        if (err instanceof OutcomeError) return;
        if (err instanceof QuotaError) {
          assert.ok(val.body.length > 0 || val.headers.length > 0);
          return;
        }
        throw err;
      }
      assert.ok(val.status >= 200 && val.status <= 599, 'a status CloudFront cannot return was accepted');
      const { result } = out;
      const decoded = result.bodyEncoding === 'base64' ? Buffer.from(result.body, 'base64') : Buffer.from(result.body, 'utf8');
      assert.deepEqual(decoded, Buffer.from(val.body));
      const list = val.headers.some(([n]) => n.toLowerCase() === 'content-type') || !val.contentType
        ? val.headers : [['Content-Type', val.contentType], ...val.headers];
      for (const [name, want] of allowed(rec.eventType, list)) assert.deepEqual(values(result.headers, name), want, name);
      for (const [name, list] of Object.entries(result.headers)) {
        for (const h of list) assert.equal(headerRefusal(rec.eventType, name, h.value) === 'control characters in the value', false);
      }
      let size = Buffer.byteLength(result.body);
      for (const l of Object.values(result.headers)) for (const h of l) size += Buffer.byteLength(h.key) + Buffer.byteLength(h.value) + 4;
      assert.ok(size <= LIMITS[rec.eventType].response_bytes, `${size} bytes`);
      if (rec.eventType === 'viewer-response') assert.equal(result.status, rec.cf.response.status);
    }), RUNS);
  });

  test('annotate: every allowed header added, refused ones noted, the others left as they were', () => {
    fc.assert(fc.property(event, pairs, (e, list) => {
      const rec = recordOf(e);
      const target = rec.eventType.endsWith('-response') ? rec.cf.response : rec.cf.request;
      const before = structuredClone(target.headers);
      const { result, notes } = fromOutcome(rec, { tag: 'annotate', val: list }, LIMITS[rec.eventType]);
      const want = allowed(rec.eventType, list);
      for (const [name, values_] of want) assert.deepEqual(values(result.headers, name), values_, name);
      for (const [name, l] of Object.entries(before)) if (!want.has(name)) assert.deepEqual(result.headers[name], l);
      const refused = list.filter(([n, v]) => headerRefusal(rec.eventType, n, v));
      const dropped = notes.find((n) => n.dropped_headers)?.dropped_headers ?? [];
      assert.equal(dropped.length, refused.length);
    }), RUNS);
  });

  test('defer: the reason becomes a header CloudFront takes (no control characters, at most 512, well-formed)', () => {
    const reasons = fc.oneof(
      fc.string({ maxLength: 600 }),
      fc.string({ unit: 'grapheme', maxLength: 600 }),
      // Around the cut: a character outside the BMP across unit 512.
      fc.tuple(fc.string({ minLength: 505, maxLength: 515 }), fc.string({ unit: 'grapheme', minLength: 1, maxLength: 8 })).map(([a, b]) => a + b),
    );
    fc.assert(fc.property(event, reasons, (e, reason) => {
      const rec = recordOf(e);
      const { result } = fromOutcome(rec, { tag: 'defer', val: reason }, LIMITS[rec.eventType]);
      const [h] = result.headers['x-verge-deferred'];
      assert.equal(headerRefusal(rec.eventType, h.key, h.value), null);
      assert.ok(h.value.length <= 512);
      assert.ok(h.value.isWellFormed(), 'a lone surrogate would not encode as UTF-8');
    }), RUNS);
  });
});
