// CloudFront events to verge requests, and verge outcomes back to what each
// of the four Lambda@Edge events may return. Facts from AWS's CloudFront
// Developer Guide: "Lambda@Edge event structure" and "Restrictions on edge
// functions" (headers, status codes). The size quotas are not kept here:
// `verge-edge` writes its table (host-edge/src/quota.rs) into verge.json, and
// the shim passes the event's row in.

export const EVENT_TYPES = ['viewer-request', 'origin-request', 'origin-response', 'viewer-response'];

// Headers an edge function may never add or change.
const DISALLOWED = new Set([
  'connection', 'expect', 'keep-alive', 'proxy-authenticate', 'proxy-authorization',
  'proxy-connection', 'trailer', 'upgrade', 'x-accel-buffering', 'x-accel-charset',
  'x-accel-limit-rate', 'x-accel-redirect', 'x-amzn-auth', 'x-amzn-cf-billing', 'x-amzn-cf-id',
  'x-amzn-cf-xff', 'x-amzn-errortype', 'x-amzn-fle-profile', 'x-amzn-header-count',
  'x-amzn-header-order', 'x-amzn-lambda-integration-tag', 'x-amzn-requestid', 'x-cache',
  'x-forwarded-proto', 'x-real-ip',
]);
const DISALLOWED_PREFIXES = ['x-amz-cf-', 'x-edge-'];

// Headers that are read-only in each event.
const READ_ONLY = {
  'viewer-request': new Set(['content-length', 'host', 'transfer-encoding', 'via']),
  'origin-request': new Set([
    'accept-encoding', 'content-length', 'if-modified-since', 'if-none-match', 'if-range',
    'if-unmodified-since', 'transfer-encoding', 'via',
  ]),
  'origin-response': new Set(['transfer-encoding', 'via']),
  'viewer-response': new Set(['content-encoding', 'content-length', 'transfer-encoding', 'warning', 'via']),
};

/** Whether a function may set this header (to this value) in this event; why not, otherwise. */
export function headerRefusal(eventType, name, value = '') {
  const n = name.toLowerCase();
  if (DISALLOWED.has(n) || DISALLOWED_PREFIXES.some((p) => n.startsWith(p))) return 'disallowed';
  if (READ_ONLY[eventType]?.has(n)) return 'read-only';
  if (!/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(n)) return 'not a valid header name';
  // eslint-disable-next-line no-control-regex -- finding control characters is the point
  if (/[\0-\x08\x0a-\x1f\x7f]/.test(value)) return 'control characters in the value';
  return null;
}

/** A malformed event. */
export class EventError extends Error {}

/** An outcome CloudFront would reject (a bad status, a body it cannot carry). */
export class OutcomeError extends Error {}

/** The CloudFront record of a Lambda@Edge event, checked. */
export function recordOf(event) {
  const cf = event?.Records?.[0]?.cf;
  if (!cf || typeof cf !== 'object') throw new EventError('not a CloudFront event: no Records[0].cf');
  const eventType = cf.config?.eventType;
  if (!EVENT_TYPES.includes(eventType)) {
    throw new EventError(`unknown CloudFront event type ${JSON.stringify(eventType)}`);
  }
  if (!cf.request || typeof cf.request !== 'object') throw new EventError('the event has no request');
  if (eventType.endsWith('-response') && (!cf.response || typeof cf.response !== 'object')) {
    throw new EventError(`a ${eventType} event has no response`);
  }
  return { cf, eventType };
}

function headerValue(headers, name) {
  return headers?.[name]?.map((h) => h.value).join(', ');
}

/**
 * The verge request for a CloudFront record. The body is the request's (with
 * include-body) for request events; response events carry none (CloudFront
 * does not expose origin bodies). Attributes: the headers (lower-case names,
 * repeated values joined), plus `:method`, `:uri`, `:querystring`,
 * `:client-ip`, `:event-type`, and `:status` for response events.
 */
export function toRequest({ cf, eventType }) {
  const req = cf.request;
  const isResponse = eventType.endsWith('-response');
  const headers = isResponse ? cf.response.headers : req.headers;
  let body = new Uint8Array(0);
  let truncated = false;
  if (!isResponse && req.body) {
    if (typeof req.body.data !== 'string') throw new EventError('the request body has no data string');
    const enc = req.body.encoding ?? 'base64';
    if (enc !== 'base64' && enc !== 'text') throw new EventError(`unknown body encoding ${JSON.stringify(enc)}`);
    body = new Uint8Array(Buffer.from(req.body.data, enc === 'base64' ? 'base64' : 'utf8'));
    truncated = req.body.inputTruncated === true;
  }
  const attributes = [
    [':event-type', eventType],
    [':method', String(req.method ?? '')],
    [':uri', String(req.uri ?? '')],
    [':querystring', String(req.querystring ?? '')],
    [':client-ip', String(req.clientIp ?? '')],
  ];
  if (isResponse) attributes.push([':status', String(cf.response.status ?? '')]);
  for (const [name, list] of Object.entries(headers ?? {})) {
    if (Array.isArray(list)) attributes.push([name.toLowerCase(), list.map((h) => String(h.value)).join(', ')]);
  }
  return {
    contentType: headerValue(headers, 'content-type') ?? '',
    body,
    attributes,
    truncated,
  };
}

/**
 * Headers in CloudFront's shape, dropping (and noting) what this event forbids.
 * A name replaces the event's header of that name; given again in the same
 * list it adds a value (two Set-Cookie headers stay two).
 */
function applyHeaders(eventType, target, pairs, dropped) {
  const written = new Set();
  for (const [name, value] of pairs) {
    const refusal = headerRefusal(eventType, name, String(value));
    if (refusal) {
      dropped.push({ header: name, reason: refusal });
      continue;
    }
    const n = name.toLowerCase();
    const header = { key: name, value: String(value) };
    if (written.has(n)) target[n].push(header);
    else target[n] = [header];
    written.add(n);
  }
  return target;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });
function isUtf8(bytes) {
  try {
    utf8.decode(bytes);
    return true;
  } catch {
    return false;
  }
}

function textual(contentType) {
  return /^text\/|[/+]json|[/+]xml|javascript/.test(contentType);
}

/** A generated response's size, headers and body, as CloudFront counts it (roughly: names, values, body). */
function generatedSize(result) {
  let size = result.body ? Buffer.byteLength(result.body) : 0;
  for (const list of Object.values(result.headers ?? {})) {
    for (const h of list) size += Buffer.byteLength(h.key ?? '') + Buffer.byteLength(h.value ?? '') + 4;
  }
  return size;
}

/**
 * A response event's headers for a new body: the old body's length and
 * encoding go where the event lets a function remove them; a read-only
 * encoding (viewer-response) would mislabel the new body, so it is refused.
 */
function withoutBodyHeaders(eventType, headers = {}) {
  const kept = { ...headers };
  for (const name of ['content-encoding', 'content-length']) {
    if (!kept[name]) continue;
    if (headerRefusal(eventType, name) === null) delete kept[name];
    else if (name === 'content-encoding' && kept[name].some((h) => h.value.trim().toLowerCase() !== 'identity')) {
      throw new OutcomeError(`a ${eventType} cannot replace a body sent with read-only content-encoding ${headerValue(headers, name)}`);
    }
  }
  return kept;
}

/** The generated response is over the event's quota. */
export class QuotaError extends Error {}

/**
 * What the function returns to CloudFront for an outcome.
 * `limits` is the event's row of the package's quotas (`{ response_bytes }`).
 * Returns `{ result, notes }`: notes record what was adjusted (dropped
 * headers, a viewer-response status kept).
 */
export function fromOutcome({ cf, eventType }, outcome, limits) {
  const notes = [];
  const dropped = [];
  const isResponse = eventType.endsWith('-response');
  const passOn = () => (isResponse ? cf.response : cf.request);
  let result;
  switch (outcome.tag) {
    case 'respond': {
      const r = outcome.val;
      if (!(r.status >= 200 && r.status <= 599)) throw new OutcomeError(`status ${r.status} is not one CloudFront can return`);
      const body = Buffer.from(r.body);
      const asText = textual(r.contentType) && isUtf8(body);
      const headers = isResponse ? withoutBodyHeaders(eventType, cf.response.headers) : {};
      // A Content-Type among the headers wins over the content type.
      const typed = r.contentType && !r.headers.some(([n]) => n.toLowerCase() === 'content-type');
      applyHeaders(eventType, headers, typed ? [['Content-Type', r.contentType], ...r.headers] : r.headers, dropped);
      let status = String(r.status);
      if (eventType === 'viewer-response' && status !== String(cf.response.status)) {
        notes.push({ kept_status: cf.response.status, component_status: r.status });
        status = String(cf.response.status);
      }
      result = {
        ...(isResponse ? cf.response : {}),
        status,
        statusDescription: isResponse && status === String(cf.response.status) ? cf.response.statusDescription : undefined,
        headers,
        body: asText ? body.toString('utf8') : body.toString('base64'),
        bodyEncoding: asText ? 'text' : 'base64',
      };
      if (result.statusDescription === undefined) delete result.statusDescription;
      const size = generatedSize(result);
      const limit = limits.response_bytes;
      if (size > limit) {
        throw new QuotaError(`generated response of ${size} bytes is over ${eventType}'s ${limit} byte limit`);
      }
      break;
    }
    case 'annotate': {
      const target = passOn();
      target.headers = applyHeaders(eventType, { ...(target.headers ?? {}) }, outcome.val, dropped);
      result = target;
      break;
    }
    case 'defer': {
      // Beyond the edge's means: the origin handles it, told why.
      const target = passOn();
      // Cut at 512 UTF-16 units; a pair cut in half would not encode as UTF-8.
      // eslint-disable-next-line no-control-regex -- control characters are what is replaced
      const reason = outcome.val.replace(/[\0-\x1f\x7f]+/g, ' ').slice(0, 512).toWellFormed();
      target.headers = applyHeaders(eventType, { ...(target.headers ?? {}) }, [['x-verge-deferred', reason]], dropped);
      result = target;
      break;
    }
    default:
      throw new Error(`unknown outcome ${JSON.stringify(outcome?.tag)}`);
  }
  if (dropped.length) notes.push({ dropped_headers: dropped });
  return { result, notes };
}

/** A 503 for `--on-error fail`: a generated response where the event allows one. */
export function failure({ cf, eventType }, message) {
  if (eventType === 'viewer-response') return cf.response; // the status cannot change there
  return {
    status: '503',
    statusDescription: 'Service Unavailable',
    headers: {
      'content-type': [{ key: 'Content-Type', value: 'application/json' }],
      'cache-control': [{ key: 'Cache-Control', value: 'no-store' }],
    },
    body: JSON.stringify({ error: message.slice(0, 1024) }),
    bodyEncoding: 'text',
  };
}

/** Pass the event on unchanged (`--on-error pass`). */
export function passThrough({ cf, eventType }) {
  return eventType.endsWith('-response') ? cf.response : cf.request;
}
