// Unit tests of cloudfront.mjs: CloudFront events (fixtures in AWS's documented
// Lambda@Edge format, one per trigger) to verge requests, and outcomes back to
// what each event may return. No component runs here; see package.test.mjs.
//
//   node --test shims/lambda-edge/test/cloudfront.test.mjs

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';

import {
  EVENT_TYPES,
  EventError,
  OutcomeError,
  QuotaError,
  failure,
  fromOutcome as shimFromOutcome,
  headerRefusal,
  passThrough,
  recordOf,
  toRequest,
} from '../src/cloudfront.mjs';

const KB = 1024;
const MB = 1024 * KB;

// CloudFront's size quotas as AWS documents them ("Quotas"): what verge-edge
// writes into each package's verge.json, which the shim passes to fromOutcome.
const LIMITS = {
  'viewer-request': { body_bytes: 40 * KB, response_bytes: 40 * KB },
  'viewer-response': { body_bytes: 40 * KB, response_bytes: 40 * KB },
  'origin-request': { body_bytes: MB, response_bytes: MB },
  'origin-response': { body_bytes: MB, response_bytes: MB },
};
const fromOutcome = (r, outcome) => shimFromOutcome(r, outcome, LIMITS[r.eventType]);

/** A fresh copy of a fixture event (tests may change it). */
function fixture(eventType) {
  return JSON.parse(readFileSync(new URL(`fixtures/${eventType}.json`, import.meta.url), 'utf8'));
}
const record = (eventType, edit = (cf) => cf) => {
  const event = fixture(eventType);
  edit(event.Records[0].cf);
  return recordOf(event);
};
const attrs = (req) => Object.fromEntries(req.attributes);
const respond = (r) => ({ tag: 'respond', val: { status: 200, contentType: '', body: new Uint8Array(), headers: [], ...r } });
const text = (s) => new Uint8Array(Buffer.from(s));

// Per event, the headers a function may not write (AWS, "Restrictions on edge functions").
const READ_ONLY = {
  'viewer-request': ['content-length', 'host', 'transfer-encoding', 'via'],
  'origin-request': ['accept-encoding', 'content-length', 'if-modified-since', 'if-none-match', 'if-range',
    'if-unmodified-since', 'transfer-encoding', 'via'],
  'origin-response': ['transfer-encoding', 'via'],
  'viewer-response': ['content-encoding', 'content-length', 'transfer-encoding', 'warning', 'via'],
};
const DISALLOWED = ['connection', 'expect', 'keep-alive', 'proxy-authenticate', 'proxy-authorization',
  'proxy-connection', 'trailer', 'upgrade', 'x-accel-buffering', 'x-accel-charset', 'x-accel-limit-rate',
  'x-accel-redirect', 'x-amz-cf-pop', 'x-amzn-auth', 'x-amzn-cf-billing', 'x-amzn-cf-id', 'x-amzn-cf-xff',
  'x-amzn-errortype', 'x-amzn-fle-profile', 'x-amzn-header-count', 'x-amzn-header-order',
  'x-amzn-lambda-integration-tag', 'x-amzn-requestid', 'x-cache', 'x-edge-location', 'x-forwarded-proto',
  'x-real-ip'];

describe('fixtures', () => {
  for (const eventType of EVENT_TYPES) {
    test(`${eventType} is a documented Lambda@Edge event`, () => {
      const { cf } = fixture(eventType).Records[0];
      assert.deepEqual(Object.keys(cf.config).sort(), ['distributionDomainName', 'distributionId', 'eventType', 'requestId']);
      assert.equal(cf.config.eventType, eventType);
      for (const k of ['clientIp', 'headers', 'method', 'querystring', 'uri']) assert.ok(k in cf.request, k);
      for (const [name, list] of Object.entries(cf.request.headers)) {
        assert.equal(name, name.toLowerCase());
        for (const h of list) assert.equal(h.key.toLowerCase(), name);
      }
      if (eventType.endsWith('-response')) {
        assert.equal(typeof cf.response.status, 'string');
        assert.equal(cf.request.body, undefined, 'response events carry no body');
      } else {
        assert.deepEqual(Object.keys(cf.request.body).sort(), ['action', 'data', 'encoding', 'inputTruncated']);
      }
    });
  }
});

describe('event → request', () => {
  test('viewer-request: base64 body, headers as lower-case attributes, pseudo attributes', () => {
    const req = toRequest(record('viewer-request'));
    assert.equal(Buffer.from(req.body).toString(), '{"name":"verge","kind":"viewer"}');
    assert.ok(req.body instanceof Uint8Array);
    assert.equal(req.contentType, 'application/json');
    assert.equal(req.truncated, false);
    const a = attrs(req);
    assert.equal(a[':event-type'], 'viewer-request');
    assert.equal(a[':method'], 'POST');
    assert.equal(a[':uri'], '/upload');
    assert.equal(a[':querystring'], 'size=LARGE&color=red');
    assert.equal(a[':client-ip'], '203.0.113.178');
    assert.equal(a.host, 'd111111abcdef8.cloudfront.net');
    assert.equal(a['x-multi'], 'a, b', 'repeated values are joined');
    assert.equal(a[':status'], undefined);
    for (const [k] of req.attributes) assert.equal(k, k.toLowerCase());
  });

  test('origin-request: binary base64 body byte for byte', () => {
    const req = toRequest(record('origin-request'));
    assert.deepEqual(Buffer.from(req.body), Buffer.from('PNG?\x89PNG\r\n\x1a\nbinary\x00\xff', 'latin1'));
    assert.equal(req.contentType, 'application/octet-stream');
    assert.equal(attrs(req)[':event-type'], 'origin-request');
    assert.equal(attrs(req).via, '2.0 2afae0d44e2540f472c0635ab62c232b.cloudfront.net (CloudFront)');
  });

  test('a text-encoded body', () => {
    const req = toRequest(record('origin-request', (cf) => {
      cf.request.body.encoding = 'text';
      cf.request.body.data = 'héllo, edge';
    }));
    assert.equal(Buffer.from(req.body).toString('utf8'), 'héllo, edge');
  });

  test('no body (include-body off): an empty body', () => {
    const req = toRequest(record('viewer-request', (cf) => delete cf.request.body));
    assert.equal(req.body.length, 0);
    assert.equal(req.truncated, false);
  });

  for (const eventType of ['viewer-request', 'origin-request']) {
    test(`${eventType}: inputTruncated → truncated, with the bytes CloudFront passed`, () => {
      const part = Buffer.alloc(LIMITS[eventType].body_bytes, 'a');
      const req = toRequest(record(eventType, (cf) => {
        cf.request.body.data = part.toString('base64');
        cf.request.body.inputTruncated = true;
      }));
      assert.equal(req.truncated, true);
      assert.equal(req.body.length, part.length);
    });
  }

  for (const eventType of ['origin-response', 'viewer-response']) {
    test(`${eventType}: :status, the response's headers, no body`, () => {
      const req = toRequest(record(eventType));
      const a = attrs(req);
      assert.equal(a[':status'], '200');
      assert.equal(a[':event-type'], eventType);
      assert.equal(a[':method'], 'GET');
      assert.equal(a['content-type'], 'text/html; charset=utf-8');
      assert.equal(a['content-length'], '9593');
      assert.equal(a['user-agent'], undefined, 'request headers are not mixed in');
      assert.equal(req.contentType, 'text/html; charset=utf-8');
      assert.equal(req.body.length, 0);
      assert.equal(req.truncated, false);
    });
  }
});

describe('malformed events', () => {
  const cases = [
    ['no event', undefined, /no Records\[0\]\.cf/],
    ['no Records', {}, /no Records\[0\]\.cf/],
    ['empty Records', { Records: [] }, /no Records\[0\]\.cf/],
    ['Records not a list of records', { Records: 'x' }, /no Records\[0\]\.cf/],
    ['unknown eventType', (() => { const e = fixture('viewer-request'); e.Records[0].cf.config.eventType = 'edge-request'; return e; })(), /unknown CloudFront event type "edge-request"/],
    ['no config', (() => { const e = fixture('viewer-request'); delete e.Records[0].cf.config; return e; })(), /unknown CloudFront event type undefined/],
    ['no request', (() => { const e = fixture('origin-request'); delete e.Records[0].cf.request; return e; })(), /has no request/],
    ['response event without response', (() => { const e = fixture('origin-response'); delete e.Records[0].cf.response; return e; })(), /origin-response event has no response/],
    ['viewer-response without response', (() => { const e = fixture('viewer-response'); e.Records[0].cf.response = null; return e; })(), /viewer-response event has no response/],
  ];
  for (const [name, event, message] of cases) {
    test(name, () => assert.throws(() => recordOf(event), (e) => e instanceof EventError && message.test(e.message)));
  }

  test('an unknown body encoding', () => {
    const r = record('origin-request', (cf) => (cf.request.body.encoding = 'gzip'));
    assert.throws(() => toRequest(r), (e) => e instanceof EventError && /unknown body encoding "gzip"/.test(e.message));
  });

  test('body data that is not a string', () => {
    const r = record('origin-request', (cf) => (cf.request.body.data = 42));
    assert.throws(() => toRequest(r), EventError);
  });
});

describe('outcome → result', () => {
  for (const eventType of ['viewer-request', 'origin-request']) {
    test(`${eventType}: respond is a generated response (text body)`, () => {
      const { result, notes } = fromOutcome(record(eventType), respond({
        status: 201, contentType: 'application/json', body: text('{"ok":true}'), headers: [['x-verge', '1']],
      }));
      assert.deepEqual(result, {
        status: '201',
        headers: {
          'content-type': [{ key: 'Content-Type', value: 'application/json' }],
          'x-verge': [{ key: 'x-verge', value: '1' }],
        },
        body: '{"ok":true}',
        bodyEncoding: 'text',
      });
      assert.deepEqual(notes, []);
    });
  }

  test('respond with a binary body → base64', () => {
    const bytes = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0, 255, 10]);
    const { result } = fromOutcome(record('origin-request'), respond({ contentType: 'image/png', body: bytes }));
    assert.equal(result.bodyEncoding, 'base64');
    assert.deepEqual(new Uint8Array(Buffer.from(result.body, 'base64')), bytes);
  });

  test('respond with a text type but bytes that are not UTF-8 → base64', () => {
    const bytes = new Uint8Array([0x68, 0xff, 0xfe]);
    const { result } = fromOutcome(record('origin-request'), respond({ contentType: 'text/plain', body: bytes }));
    assert.equal(result.bodyEncoding, 'base64');
    assert.deepEqual(new Uint8Array(Buffer.from(result.body, 'base64')), bytes);
  });

  test('origin-response: respond replaces the body, keeps the origin headers, drops the old body\'s encoding', () => {
    const { result } = fromOutcome(record('origin-response'), respond({
      status: 404, contentType: 'application/json', body: text('{"gone":1}'),
    }));
    assert.equal(result.status, '404');
    assert.equal(result.statusDescription, undefined, 'the origin\'s "OK" would not describe 404');
    assert.equal(result.body, '{"gone":1}');
    assert.equal(result.bodyEncoding, 'text');
    assert.deepEqual(result.headers['content-type'], [{ key: 'Content-Type', value: 'application/json' }]);
    assert.deepEqual(result.headers.server, [{ key: 'Server', value: 'ExampleCustomOriginServer' }]);
    assert.equal(result.headers['content-encoding'], undefined, 'a gzip header on a new plain body is wrong');
    assert.equal(result.headers['content-length'], undefined);
    assert.deepEqual(result.headers.via, [{ key: 'Via', value: '1.1 origin.example.org' }], 'read-only: unchanged');
    assert.deepEqual(result.headers['transfer-encoding'], [{ key: 'Transfer-Encoding', value: 'chunked' }]);
  });

  test('viewer-response: respond never changes the status', () => {
    const { result, notes } = fromOutcome(record('viewer-response'), respond({
      status: 403, contentType: 'text/plain', body: text('no'),
    }));
    assert.equal(result.status, '200');
    assert.equal(result.statusDescription, 'OK');
    assert.equal(result.body, 'no');
    assert.deepEqual(notes, [{ kept_status: '200', component_status: 403 }]);
    // Read-only headers of the response stay as CloudFront sent them.
    assert.deepEqual(result.headers['content-length'], [{ key: 'Content-Length', value: '9593' }]);
    assert.deepEqual(result.headers.via, fixture('viewer-response').Records[0].cf.response.headers.via);
  });

  test('viewer-response: a new body cannot go out under a read-only content-encoding', () => {
    const r = record('viewer-response', (cf) => {
      cf.response.headers['content-encoding'] = [{ key: 'Content-Encoding', value: 'br' }];
    });
    assert.throws(() => fromOutcome(r, respond({ contentType: 'text/plain', body: text('x') })),
      (e) => e instanceof OutcomeError && /content-encoding/.test(e.message));
  });

  for (const eventType of EVENT_TYPES) {
    const isResponse = eventType.endsWith('-response');
    test(`${eventType}: annotate adds headers to the ${isResponse ? 'response' : 'request'} and passes it on`, () => {
      const r = record(eventType);
      const original = structuredClone(isResponse ? r.cf.response : r.cf.request);
      const { result, notes } = fromOutcome(r, { tag: 'annotate', val: [['x-file-type', 'png'], ['X-Score', '0.99']] });
      assert.deepEqual(result.headers['x-file-type'], [{ key: 'x-file-type', value: 'png' }]);
      assert.deepEqual(result.headers['x-score'], [{ key: 'X-Score', value: '0.99' }]);
      assert.deepEqual(notes, []);
      const { headers, ...rest } = result;
      const { headers: originalHeaders, ...originalRest } = original;
      assert.deepEqual(rest, originalRest, 'everything else is passed on unchanged');
      for (const [name, list] of Object.entries(originalHeaders)) assert.deepEqual(headers[name], list, name);
      if (isResponse) assert.equal(result.status, '200');
      else assert.equal(result.body.action, 'read-only', 'the body is not replaced');
    });

    test(`${eventType}: defer passes on with x-verge-deferred`, () => {
      const { result } = fromOutcome(record(eventType), { tag: 'defer', val: 'body truncated\nby the host' });
      assert.equal(result.headers['x-verge-deferred'].length, 1);
      assert.equal(result.headers['x-verge-deferred'][0].value, 'body truncated by the host', 'no control characters in a header');
      if (isResponse) assert.equal(result.status, '200');
      else assert.equal(result.uri, fixture(eventType).Records[0].cf.request.uri);
    });

    test(`${eventType}: read-only and disallowed headers are never written`, () => {
      const forbidden = [...READ_ONLY[eventType], ...DISALLOWED];
      for (const name of READ_ONLY[eventType]) assert.equal(headerRefusal(eventType, name), 'read-only', name);
      for (const name of DISALLOWED) assert.equal(headerRefusal(eventType, name), 'disallowed', name);
      for (const name of ['X-Amz-Cf-Id', 'Via', 'Transfer-Encoding']) assert.notEqual(headerRefusal(eventType, name), null, name);
      const pairs = forbidden.map((n) => [n, 'verge']);
      for (const outcome of [
        { tag: 'annotate', val: pairs },
        respond({ contentType: 'text/plain', body: text('hi'), headers: pairs }),
      ]) {
        const r = record(eventType);
        const before = structuredClone(r.cf);
        const { result, notes } = fromOutcome(r, outcome);
        for (const name of forbidden) {
          const was = (isResponse ? before.response : before.request).headers[name];
          assert.deepEqual(result.headers[name], outcome.tag === 'annotate' || isResponse ? was : undefined, `${outcome.tag} ${name}`);
        }
        const dropped = notes.find((n) => n.dropped_headers)?.dropped_headers ?? [];
        assert.deepEqual(dropped.map((d) => d.header).sort(), [...forbidden].sort());
      }
    });
  }

  test('invalid header names and values are dropped, not sent', () => {
    const { result, notes } = fromOutcome(record('origin-request'), {
      tag: 'annotate',
      val: [['bad name', 'x'], ['x-split', 'a\r\nx-injected: 1'], ['x-nul', 'a\0b'], ['x-ok', 'fine']],
    });
    assert.equal(result.headers['bad name'], undefined);
    assert.equal(result.headers['x-split'], undefined);
    assert.equal(result.headers['x-nul'], undefined);
    assert.deepEqual(result.headers['x-ok'], [{ key: 'x-ok', value: 'fine' }]);
    assert.deepEqual(notes[0].dropped_headers.map((d) => d.header), ['bad name', 'x-split', 'x-nul']);
  });

  test('a status CloudFront would reject', () => {
    for (const status of [0, 99, 101, 600, 1000]) {
      assert.throws(() => fromOutcome(record('origin-request'), respond({ status })),
        (e) => e instanceof OutcomeError && new RegExp(`status ${status}`).test(e.message));
    }
  });

  test('an unknown outcome', () => {
    assert.throws(() => fromOutcome(record('origin-request'), { tag: 'explode', val: 1 }), /unknown outcome "explode"/);
  });
});

describe('generated response quotas', () => {
  // Headers of a request event's generated response: content-type only.
  const sizeOf = (result) => Buffer.byteLength(result.body);
  const cases = [
    ['viewer-request', 40 * KB],
    ['viewer-response', 40 * KB],
    ['origin-request', MB],
    ['origin-response', MB],
  ];
  for (const [eventType, limit] of cases) {
    test(`${eventType}: over ${limit / KB} KB → QuotaError naming the size and the limit`, () => {
      const body = new Uint8Array(limit).fill(0x78);
      assert.throws(() => fromOutcome(record(eventType), respond({ contentType: 'text/plain', body })), (e) => {
        assert.ok(e instanceof QuotaError);
        assert.match(e.message, new RegExp(`${eventType}'s ${limit} byte limit`));
        assert.match(e.message, /generated response of \d+ bytes/);
        return true;
      });
      const fits = new Uint8Array(limit - 2 * KB).fill(0x78);
      const { result } = fromOutcome(record(eventType), respond({ contentType: 'text/plain', body: fits }));
      assert.equal(sizeOf(result), fits.length);
    });
  }

  test('a binary body counts as the base64 text CloudFront receives', () => {
    const body = new Uint8Array(31 * KB).fill(0xff); // 41.3 KB as base64
    assert.throws(() => fromOutcome(record('viewer-request'), respond({ contentType: 'application/octet-stream', body })), QuotaError);
  });

  test('annotate is not a generated response: no size quota beyond headers', () => {
    const { result } = fromOutcome(record('viewer-request'), { tag: 'annotate', val: [['x-a', 'b']] });
    assert.equal(result.body.data, fixture('viewer-request').Records[0].cf.request.body.data);
  });
});

describe('on-error results', () => {
  for (const eventType of ['viewer-request', 'origin-request', 'origin-response']) {
    test(`${eventType}: fail → a 503 that is not cached`, () => {
      const result = failure(record(eventType), 'the component trapped');
      assert.equal(result.status, '503');
      assert.equal(result.statusDescription, 'Service Unavailable');
      assert.deepEqual(result.headers['cache-control'], [{ key: 'Cache-Control', value: 'no-store' }]);
      assert.deepEqual(JSON.parse(result.body), { error: 'the component trapped' });
      assert.equal(result.bodyEncoding, 'text');
    });
  }

  test('viewer-response: fail cannot change the status, the response goes on', () => {
    const r = record('viewer-response');
    assert.deepEqual(failure(r, 'x'), fixture('viewer-response').Records[0].cf.response);
  });

  for (const eventType of EVENT_TYPES) {
    test(`${eventType}: pass → the event's ${eventType.endsWith('-response') ? 'response' : 'request'} unchanged`, () => {
      const cf = fixture(eventType).Records[0].cf;
      assert.deepEqual(passThrough(record(eventType)), eventType.endsWith('-response') ? cf.response : cf.request);
    });
  }
});
