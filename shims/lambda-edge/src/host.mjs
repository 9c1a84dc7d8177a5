// What the edge host gives a component besides WASI: where it runs and its
// limits (verge:inference/host), the models bundled in the package
// (verge:inference/models, read by the wasi:nn provider), per-deployment
// settings baked in at pack time (wasi:config/store), and state
// (wasi:keyvalue) that lives in memory for the life of a warm instance only:
// Lambda@Edge has no durable storage next to the function.

import { readFileSync } from 'node:fs';

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
  return {
    'verge:inference/host': {
      getPlacement: () => call.placement,
      getLimits: () => ({
        maxBodyBytes: BigInt(call.limits.maxBodyBytes),
        deadlineMs: BigInt(call.limits.deadlineMs),
        memoryBytes: BigInt(call.limits.memoryBytes),
      }),
      remainingMs: () => BigInt(Math.max(0, Math.floor(call.remainingMs()))),
    },
    'verge:inference/models': {
      read(name) {
        const path = models.path(name);
        return path === undefined ? undefined : new Uint8Array(readFileSync(path));
      },
    },
    'wasi:config/store': {
      get: (key) => config.find(([k]) => k === key)?.[1],
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
