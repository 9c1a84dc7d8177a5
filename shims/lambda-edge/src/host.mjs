// What the edge host gives a component besides WASI: where it runs and its
// limits (verge:inference/host), the models bundled in the package
// (verge:inference/models, read by the wasi:nn provider), per-deployment
// settings baked in at pack time (wasi:config/store), and state
// (wasi:keyvalue) that lives in memory for the life of a warm instance only:
// Lambda@Edge has no durable storage next to the function.

import { readFileSync } from 'node:fs';

import { Guest, lowered } from './cabi.mjs';

// verge:inference/host's `placement` enum, in WIT order (its value is the index).
const PLACEMENTS = ['device', 'edge-viewer', 'edge-origin', 'local'];

class Bucket {
  constructor(map) {
    this.map = map;
  }
  get(key) {
    return this.map.get(key);
  }
  set(key, value) {
    this.map.set(key, Uint8Array.from(value));
  }
  delete(key) {
    this.map.delete(key);
  }
  exists(key) {
    return this.map.has(key);
  }
  listKeys(cursor) {
    const keys = [...this.map.keys()].sort();
    const start = cursor === undefined ? 0 : Number(cursor);
    const page = keys.slice(start, start + 1000);
    const next = start + page.length;
    return { keys: page, cursor: next < keys.length ? BigInt(next) : undefined };
  }
}

/**
 * `call` is the per-invocation state the shim updates before each call:
 * `{ placement, limits: { maxBodyBytes, deadlineMs, memoryBytes }, remainingMs() }`;
 * `models` is the package's (models.mjs).
 */
export function hostImports({ manifest, models, call }) {
  const buckets = new Map();
  const config = Object.entries(manifest.config ?? {});
  const settings = new Map(config);
  const remainingMs = () => BigInt(Math.max(0, Math.floor(call.remainingMs())));
  // The functions a component may call on every request are also given on
  // the canonical ABI (cabi.mjs): each is then one plain call, not a trip
  // through the glue's task bookkeeping.
  return {
    'verge:inference/host': {
      getPlacement: lowered(() => call.placement, () => () => PLACEMENTS.indexOf(call.placement)),
      // record limits { u64, u64, u64 }: written at the return pointer, @0, @8, @16.
      getLimits: lowered(
        () => ({
          maxBodyBytes: BigInt(call.limits.maxBodyBytes),
          deadlineMs: BigInt(call.limits.deadlineMs),
          memoryBytes: BigInt(call.limits.memoryBytes),
        }),
        (options) => {
          const g = new Guest(options, 'verge:inference/host.get-limits');
          return (retptr) => {
            g.views();
            g.inBounds(retptr, 24, 1);
            g.words.setBigUint64(retptr, BigInt(call.limits.maxBodyBytes), true);
            g.words.setBigUint64(retptr + 8, BigInt(call.limits.deadlineMs), true);
            g.words.setBigUint64(retptr + 16, BigInt(call.limits.memoryBytes), true);
          };
        },
      ),
      remainingMs: lowered(remainingMs, () => remainingMs),
    },
    'verge:inference/models': {
      read(name) {
        const path = models.path(name);
        return path === undefined ? undefined : new Uint8Array(readFileSync(path));
      },
    },
    'wasi:config/store': {
      // get: func(key: string) -> result<option<string>, error>, written at the return
      // pointer: result tag @0 (always ok), option tag @4, the string's (ptr, len) @8.
      get: lowered(
        (key) => settings.get(key),
        (options) => {
          const g = new Guest(options, 'wasi:config/store.get');
          return (keyPtr, keyLen, retptr) => {
            const value = settings.get(g.string(keyPtr, keyLen));
            if (value !== undefined) g.putString(retptr + 8, value);
            g.inBounds(retptr, 16, 1);
            g.words.setUint8(retptr, 0);
            g.words.setUint8(retptr + 4, value === undefined ? 0 : 1);
          };
        },
      ),
      getAll: () => config,
    },
    'wasi:keyvalue/store': {
      Bucket,
      open(identifier) {
        if (!buckets.has(identifier)) buckets.set(identifier, new Map());
        return new Bucket(buckets.get(identifier));
      },
    },
    'wasi:keyvalue/atomics': {
      // Counters are decimal text, as wasmtime's keyvalue store keeps them,
      // so a component sees the same bytes on every host.
      increment(bucket, key, delta) {
        const old = bucket.map.get(key);
        const text = old === undefined ? '0' : Buffer.from(old).toString('utf8');
        if (!/^[0-9]+$/.test(text)) throw { tag: 'other', val: `value of '${key}' is not a number` };
        const n = BigInt(text) + delta;
        if (n >= 1n << 64n) throw { tag: 'other', val: 'overflow incrementing value' };
        bucket.map.set(key, new Uint8Array(Buffer.from(n.toString())));
        return n;
      },
    },
  };
}
