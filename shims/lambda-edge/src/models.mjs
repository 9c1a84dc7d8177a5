// The models of a package, by name: files bundled in the zip, or URLs with a
// sha256 (models too big for the zip) fetched once per container into /tmp
// (Lambda@Edge gives 512 MB there) before the first call, checked, and kept
// while the container lives. A model that could not be had is an error the
// component sees through wasi:nn, never a half-written file that loads.

import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

const TMP = '/tmp/verge-models';

/** A thrown value with `payload` becomes the `err` of a WIT `result`. */
const failure = (code, message) => ({ payload: { code, message } });

/** A file's sha256, streamed (a model may be larger than the function's memory allows to read at once). */
async function sha256File(path) {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk);
  return hash.digest('hex');
}

/** Only https, except on the loopback (tests run a local server). */
function allowed(url) {
  const u = new URL(url);
  return u.protocol === 'https:' || (u.protocol === 'http:' && ['127.0.0.1', 'localhost', '[::1]'].includes(u.hostname));
}

async function download({ url, sha256 }, deadlineMs, dir) {
  const path = join(dir, `${sha256}.onnx`);
  if (existsSync(path) && (await sha256File(path)) === sha256) return path;
  if (!allowed(url)) throw new Error(`only https URLs are fetched (${url})`);
  const partial = `${path}.${process.pid}.part`;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(Math.max(1, deadlineMs)) });
    if (!res.ok || !res.body) throw new Error(`HTTP ${res.status} from ${url}`);
    const hash = createHash('sha256');
    const body = Readable.fromWeb(res.body);
    body.on('data', (chunk) => hash.update(chunk));
    await pipeline(body, createWriteStream(partial));
    const got = hash.digest('hex');
    if (got !== sha256) {
      const e = new Error(`the bytes at ${url} have sha256 ${got}, not the ${sha256} the package names`);
      e.code = 'invalid-encoding';
      throw e;
    }
    renameSync(partial, path);
    return path;
  } finally {
    rmSync(partial, { force: true });
  }
}

/**
 * `manifest.models` as files: `path(name)` is the model's file (undefined when
 * the package has no such model; throws a wasi:nn failure when its URL could
 * not be fetched or did not match); `ready(deadlineMs)` fetches every URL
 * model not yet here (once per container; later calls wait for the same work).
 */
export function packageModels(dir, manifest, tmp = TMP) {
  const models = manifest.models ?? {};
  const fetched = new Map();
  const failed = new Map();
  let pending = null;

  async function fetchAll(deadlineMs) {
    const urls = Object.entries(models).filter(([, m]) => m.url);
    if (urls.length) mkdirSync(tmp, { recursive: true });
    await Promise.all(urls.map(async ([name, m]) => {
      try {
        fetched.set(name, await download(m, deadlineMs, tmp));
        failed.delete(name);
      } catch (e) {
        failed.set(name, { code: e.code === 'invalid-encoding' ? 'invalid-encoding' : 'runtime-error', message: `model '${name}' could not be fetched: ${e.message}` });
      }
    }));
  }

  return {
    /** The names of the package's models. */
    names: () => Object.keys(models),
    ready(deadlineMs) {
      // A failed fetch is tried again by a later invocation of the same container.
      if (!pending || failed.size) pending = fetchAll(deadlineMs);
      return pending;
    },
    path(name) {
      if (!Object.hasOwn(models, name)) return undefined;
      const m = models[name];
      if (!m.url) return join(dir, m.file);
      if (fetched.has(name)) return fetched.get(name);
      const f = failed.get(name) ?? { code: 'runtime-error', message: `model '${name}' has not been fetched` };
      throw failure(f.code, f.message);
    },
  };
}
