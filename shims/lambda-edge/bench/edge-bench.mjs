#!/usr/bin/env node
// Edge benchmark: the packed verge Lambda@Edge artifact (file-type, Magika on
// tract compiled to Wasm, transpiled by jco) against what a web team would
// otherwise write: a plain origin-request handler running the same Magika
// model on onnxruntime-node (bench/onnx-handler), zipped for linux-x64.
//
// Usage:
//   (cd shims/lambda-edge/bench/onnx-handler && ONNXRUNTIME_NODE_INSTALL=skip npm install)
//   node shims/lambda-edge/bench/edge-bench.mjs [--quick] [--json OUT.json]
//       [--packages DIR]   verge packs (default $VERGE_EDGE_PACKAGES or ~/.cache/verge/edge-packages);
//                          uses DIR/file-type-origin/function.zip (annotate mode, origin-request)
//       [--models DIR]     Magika files (default $VERGE_MODELS_DIR or <repo>/models/.cache)
//       [--body FILE]      the request body (default: the ELF in /usr/bin closest to 150 KB)
//       [--keep]           keep the temporary folder (zips, unzipped functions)
//
// Systems: verge (function.zip unzipped into a temp dir), onnx (the baseline:
// onnxruntime-node with its default threads) and onnx-1t (the same zip,
// session created with intraOpNumThreads=1); `node` is a reference row (a
// node process that does nothing). Each system runs from the unzipped zip.
// Measured, alternating the systems (ABC, CBA, ...) between repetitions:
//   zip size (deflate level 9, as verge-edge pack does) and the Lambda@Edge quotas it fits;
//   cold start: a fresh `node` answers one origin-request event (spawn → exit), 7 reps;
//   warm: 300 requests after 20 warm-up in one process, 3 reps pooled;
//   peak RSS of a process doing 1 cold + 200 warm requests (/usr/bin/time -v), 3 reps.
// --quick: 1 repetition each, 5 warm requests (a smoke run for the test command).
// Before timing, both handlers classify a handful of files; labels must agree.
// Ratios are verge (or onnx-1t) over the onnx baseline measured in this run.

import { spawn } from 'node:child_process';
import {
  closeSync, existsSync, lstatSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync,
  readSync, rmSync, statSync, writeFileSync, writeSync,
} from 'node:fs';
import { cpus, homedir, loadavg, tmpdir } from 'node:os';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import zlib from 'node:zlib';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../../..');
const MB = 1024 * 1024;

// ---------------------------------------------------------------- child side

/** Runs inside a fresh process: `--child MODE SYSTEM DIR EVENT OUT [N WARMUP]`. */
async function child([mode, system, dir, eventPath, outPath, n = '0', warmup = '0']) {
  const t0 = performance.now();
  const result = { system, mode };
  if (system !== 'node') {
    const mod = await import(pathToFileURL(join(dir, 'index.mjs')).href);
    const handler = system === 'onnx-1t'
      ? mod.createHandler({ sessionOptions: { intraOpNumThreads: 1 } })
      : mod.handler;
    result.import_ms = performance.now() - t0;
    const base = JSON.parse(readFileSync(eventPath, 'utf8'));
    const context = { getRemainingTimeInMillis: () => 30000 };
    const fresh = () => structuredClone(base);
    const headersOf = (r) => {
      const h = r?.headers ?? {};
      const v = (k) => h[k]?.[0]?.value;
      return { label: v('x-file-type'), group: v('x-file-type-group'), mime: v('x-file-type-mime'), score: v('x-file-type-score') };
    };
    if (mode === 'labels') {
      // EVENT is a JSON list of { name, path }: one answer per file.
      result.labels = [];
      for (const { name, path } of base) {
        const body = readFileSync(path);
        const ev = JSON.parse(readFileSync(join(dir, '..', 'event.json'), 'utf8'));
        ev.Records[0].cf.request.body.data = body.toString('base64');
        result.labels.push({ name, ...headersOf(await handler(ev, context)) });
      }
    } else {
      let t = performance.now();
      const first = await handler(fresh(), context);
      result.first_ms = performance.now() - t;
      result.answer = headersOf(first);
      if (!result.answer.label) throw new Error(`${system}: no x-file-type header in ${JSON.stringify(first.headers)}`);
      for (let i = 0; i < Number(warmup); i++) await handler(fresh(), context);
      const samples = [];
      let cpu = 0;
      for (let i = 0; i < Number(n); i++) {
        const ev = fresh();
        const c = process.cpuUsage();
        t = performance.now();
        await handler(ev, context);
        samples.push(performance.now() - t);
        const d = process.cpuUsage(c);
        cpu += (d.user + d.system) / 1000;
      }
      result.samples = samples;
      result.cpu_ms_per_request = Number(n) ? cpu / Number(n) : 0;
    }
  }
  result.threads = Number(readFileSync('/proc/self/status', 'utf8').match(/^Threads:\s+(\d+)/m)?.[1]);
  result.max_rss_kb = process.resourceUsage().maxRSS;
  writeFileSync(outPath, JSON.stringify(result));
}

// ---------------------------------------------------------------- zip files

const CRC_TABLE = (() => {
  const t = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  return t;
})();
const crc32 = zlib.crc32 ?? ((buf) => {
  let c = -1;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
});

/**
 * Writes a zip of `entries` ([{ name, path }]) with deflate level 9 (stored
 * when that is smaller), to `out` when given. Returns its size, the files'
 * total size and their count.
 */
function writeZip(entries, out = null) {
  const fd = out ? openSync(out, 'w') : null;
  const central = [];
  let offset = 0;
  let unzipped = 0;
  const emit = (buf) => {
    if (fd !== null) writeSync(fd, buf);
    offset += buf.length;
  };
  for (const { name, path } of [...entries].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const data = readFileSync(path);
    const mode = statSync(path).mode & 0o777;
    unzipped += data.length;
    const deflated = zlib.deflateRawSync(data, { level: 9 });
    const method = deflated.length < data.length ? 8 : 0;
    const body = method === 8 ? deflated : data;
    const crc = crc32(data);
    const fname = Buffer.from(name, 'utf8');
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(0x0800, 6); // UTF-8 names
    local.writeUInt16LE(method, 8);
    local.writeUInt16LE(0, 10); // 00:00
    local.writeUInt16LE(0x21, 12); // 1980-01-01
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(body.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(fname.length, 26);
    local.writeUInt16LE(0, 28);
    const cd = Buffer.alloc(46);
    cd.writeUInt32LE(0x02014b50, 0);
    cd.writeUInt16LE((3 << 8) | 20, 4); // made on Unix
    cd.writeUInt16LE(20, 6);
    local.copy(cd, 8, 6, 28); // flags .. uncompressed size
    cd.writeUInt16LE(fname.length, 28);
    cd.writeUInt32LE(((0o100000 | mode) << 16) >>> 0, 38);
    cd.writeUInt32LE(offset, 42);
    central.push(cd, fname);
    emit(local);
    emit(fname);
    emit(body);
  }
  const cdStart = offset;
  for (const b of central) emit(b);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(entries.length, 8);
  eocd.writeUInt16LE(entries.length, 10);
  eocd.writeUInt32LE(offset - cdStart, 12);
  eocd.writeUInt32LE(cdStart, 16);
  emit(eocd);
  if (fd !== null) closeSync(fd);
  return { bytes: offset, unzipped, files: entries.length };
}

/** Extracts a zip (stored or deflated entries) into `dest`; returns the files' total size. */
function unzip(zipPath, dest) {
  const z = readFileSync(zipPath);
  let e = z.length - 22;
  while (e >= 0 && z.readUInt32LE(e) !== 0x06054b50) e--;
  if (e < 0) throw new Error(`${zipPath}: not a zip`);
  const count = z.readUInt16LE(e + 10);
  let p = z.readUInt32LE(e + 16);
  let total = 0;
  for (let i = 0; i < count; i++) {
    if (z.readUInt32LE(p) !== 0x02014b50) throw new Error(`${zipPath}: bad central directory`);
    const method = z.readUInt16LE(p + 10);
    const csize = z.readUInt32LE(p + 20);
    const nameLen = z.readUInt16LE(p + 28);
    const extraLen = z.readUInt16LE(p + 30);
    const commentLen = z.readUInt16LE(p + 32);
    const local = z.readUInt32LE(p + 42);
    const name = z.toString('utf8', p + 46, p + 46 + nameLen);
    p += 46 + nameLen + extraLen + commentLen;
    if (name.endsWith('/')) continue;
    const start = local + 30 + z.readUInt16LE(local + 26) + z.readUInt16LE(local + 28);
    const raw = z.subarray(start, start + csize);
    const data = method === 0 ? raw : method === 8 ? zlib.inflateRawSync(raw) : null;
    if (!data) throw new Error(`${zipPath}: ${name}: compression method ${method}`);
    const target = join(dest, name);
    if (!resolve(target).startsWith(resolve(dest) + sep)) throw new Error(`${zipPath}: unsafe path ${name}`);
    mkdirSync(dirname(target), { recursive: true });
    writeFileSync(target, data);
    total += data.length;
  }
  return total;
}

/** Regular files under `root` (symlinks skipped), as zip entries named relative to `base`. */
function filesUnder(root, base = root) {
  const out = [];
  for (const d of readdirSync(root, { withFileTypes: true })) {
    const p = join(root, d.name);
    if (d.isDirectory()) out.push(...filesUnder(p, base));
    else if (d.isFile()) out.push({ name: relative(base, p).split(sep).join('/'), path: p });
  }
  return out;
}

// ---------------------------------------------------------------- helpers

function parseArgs(argv) {
  const o = {
    quick: false,
    keep: false,
    json: null,
    packages: process.env.VERGE_EDGE_PACKAGES ?? join(homedir(), '.cache/verge/edge-packages'),
    models: process.env.VERGE_MODELS_DIR ?? join(repo, 'models/.cache'),
    body: null,
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
    else if (a === '--packages') o.packages = resolve(val());
    else if (a === '--models') o.models = resolve(val());
    else if (a === '--body') o.body = resolve(val());
    else if (a === '-h' || a === '--help') {
      console.log(readFileSync(fileURLToPath(import.meta.url), 'utf8').split("\n").slice(6, 16).join('\n'));
      process.exit(0);
    } else throw new Error(`unknown argument ${a} (see --help)`);
  }
  return o;
}

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
function run(cmd, args, { stdout = 'ignore' } = {}) {
  return new Promise((ok, fail) => {
    const t0 = process.hrtime.bigint();
    const p = spawn(cmd, args, { stdio: ['ignore', stdout, 'pipe'] });
    let err = '';
    p.stderr.on('data', (d) => (err += d));
    p.on('error', fail);
    p.on('exit', (code, signal) => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (code !== 0) fail(new Error(`${cmd} ${args.slice(0, 4).join(' ')}… exited ${code ?? signal}:\n${err.slice(-2000)}`));
      else ok({ ms, stderr: err });
    });
  });
}

const q = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  const i = (s.length - 1) * p;
  const lo = Math.floor(i);
  return s[lo] + (s[Math.min(lo + 1, s.length - 1)] - s[lo]) * (i - lo);
};
const median = (xs) => q(xs, 0.5);

// ---------------------------------------------------------------- main

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const reps = o.quick ? { cold: 1, warm: 1, rss: 1 } : { cold: 7, warm: 3, rss: 3 };
  const warmN = o.quick ? 5 : 300;
  const warmup = o.quick ? 2 : 20;
  const rssN = o.quick ? 5 : 200;
  const load = [`start ${loadavg().map((x) => x.toFixed(2)).join(' ')}`];

  const zipVerge = join(o.packages, 'file-type-origin/function.zip');
  const onnxSrc = join(here, 'onnx-handler');
  const magika = {
    'magika/model.onnx': join(o.models, 'magika-standard-v3-3/model.onnx'),
    'magika/config.min.json': join(o.models, 'magika-standard-v3-3-config/config.min.json'),
    'magika/content_types_kb.min.json': join(o.models, 'magika-content-types-kb/content_types_kb.min.json'),
  };
  for (const [what, p] of [['the verge pack (./dev test packs it; see edge_packages in ./dev)', zipVerge],
    ...Object.values(magika).map((p) => ['a Magika file (python3 models/fetch.py)', p]),
    [`onnxruntime-node (cd ${relative(process.cwd(), onnxSrc)} && ONNXRUNTIME_NODE_INSTALL=skip npm install)`,
      join(onnxSrc, 'node_modules/onnxruntime-node/package.json')]]) {
    if (!existsSync(p)) throw new Error(`missing ${p}: ${what}`);
  }
  const bodyPath = o.body ?? defaultBody();
  const tmp = mkdtempSync(join(tmpdir(), 'verge-edge-bench-'));
  const self = fileURLToPath(import.meta.url);

  try {
    // --- the two deployments, each run from its unzipped zip
    const vergeDir = join(tmp, 'verge');
    const vergeUnzipped = unzip(zipVerge, vergeDir);
    const vergeZip = { bytes: statSync(zipVerge).size, unzipped: vergeUnzipped };

    const ortDir = join(onnxSrc, 'node_modules/onnxruntime-node');
    const platformBins = readdirSync(join(ortDir, 'bin/napi-v6'), { withFileTypes: true })
      .filter((d) => d.isDirectory())
      .flatMap((d) => readdirSync(join(ortDir, 'bin/napi-v6', d.name)).map((a) => `${d.name}/${a}`));
    const own = [
      { name: 'index.mjs', path: join(onnxSrc, 'index.mjs') },
      { name: 'package.json', path: join(onnxSrc, 'package.json') },
      ...Object.entries(magika).map(([name, path]) => ({ name, path })),
    ];
    // As installed (`npm install --omit=dev`, zip -r .): every platform's binaries, install-only deps.
    const asInstalled = [...own, ...filesUnder(join(onnxSrc, 'node_modules'), onnxSrc)];
    // Pruned for linux-x64: onnxruntime-node (its linux/x64 binaries, no install script) and onnxruntime-common.
    const pruned = [
      ...own,
      ...filesUnder(ortDir, onnxSrc).filter(
        ({ name }) => !name.includes('/script/') &&
          (!name.includes('/bin/napi-v6/') || name.includes('/bin/napi-v6/linux/x64/')),
      ),
      ...filesUnder(join(onnxSrc, 'node_modules/onnxruntime-common'), onnxSrc),
    ];
    process.stderr.write('zipping the onnx handler (deflate -9)…\n');
    const onnxZipPath = join(tmp, 'onnx-function.zip');
    const onnxZip = writeZip(pruned, onnxZipPath);
    const installedZip = writeZip(asInstalled);
    const onnxDir = join(tmp, 'onnx');
    unzip(onnxZipPath, onnxDir);

    // --- the event: origin-request with include-body, the body base64 as CloudFront sends it
    const fixture = JSON.parse(readFileSync(join(repo, 'shims/lambda-edge/test/fixtures/origin-request.json'), 'utf8'));
    const body = readFileSync(bodyPath);
    if (body.length > MB) throw new Error(`${bodyPath}: ${body.length} bytes is over origin-request's 1 MB body`);
    fixture.Records[0].cf.request.headers['content-length'][0].value = String(body.length);
    writeFileSync(join(tmp, 'event.json'), JSON.stringify(fixture));
    const eventPath = join(tmp, 'event-body.json');
    const ev = structuredClone(fixture);
    ev.Records[0].cf.request.body.data = body.toString('base64');
    writeFileSync(eventPath, JSON.stringify(ev));

    const dirOf = { verge: vergeDir, onnx: onnxDir, 'onnx-1t': onnxDir, node: onnxDir };
    let seq = 0;
    const childRun = async (mode, system, extra = [], timeV = false) => {
      const out = join(tmp, `out-${seq++}.json`);
      const args = [self, '--child', mode, system, dirOf[system], mode === 'labels' ? extra.shift() : eventPath, out, ...extra];
      const r = timeV ? await run('/usr/bin/time', ['-v', process.execPath, ...args]) : await run(process.execPath, args);
      const res = JSON.parse(readFileSync(out, 'utf8'));
      res.wall_ms = r.ms;
      if (timeV) {
        const m = r.stderr.match(/Maximum resident set size \(kbytes\): (\d+)/);
        if (m) res.time_v_rss_kb = Number(m[1]);
      }
      return res;
    };

    // --- agreement: the same labels on a handful of files
    const files = [
      ['elf (body)', bodyPath], ['passwd', '/etc/passwd'], ['README.md', join(repo, 'README.md')],
      ['dev (bash)', join(repo, 'dev')], ['index.mjs', join(repo, 'shims/lambda-edge/src/index.mjs')],
      ['Cargo.toml', join(repo, 'Cargo.toml')], ['fetch.py', join(repo, 'models/fetch.py')],
      ['lib.rs', join(repo, 'components/magika/src/lib.rs')], ['config.json', magika['magika/config.min.json']],
      ['verge.json', join(vergeDir, 'verge.json')], ['wasm', join(vergeDir, 'component/component.core4.wasm')],
    ].filter(([, p]) => existsSync(p) && statSync(p).size <= MB);
    const extraFiles = { 'tiny.txt': 'hi\n', 'spaces.txt': '          abc', 'empty': '' };
    for (const [n, text] of Object.entries(extraFiles)) {
      writeFileSync(join(tmp, n), text);
      files.push([n, join(tmp, n)]);
    }
    const gz = readdirSync('/usr/share/doc').map((d) => join('/usr/share/doc', d, 'changelog.Debian.gz')).find(existsSync);
    if (gz) files.push(['changelog.gz', gz]);
    const listPath = join(tmp, 'files.json');
    writeFileSync(listPath, JSON.stringify(files.map(([name, path]) => ({ name, path }))));
    process.stderr.write(`agreement on ${files.length} files…\n`);
    const [lv, lo] = [await childRun('labels', 'verge', [listPath]), await childRun('labels', 'onnx', [listPath])];
    const agreement = lv.labels.map((a, i) => {
      const b = lo.labels[i];
      const ds = Math.abs(Number(a.score) - Number(b.score));
      return { name: a.name, verge: a, onnx: b, same: a.label === b.label && a.group === b.group && a.mime === b.mime, score_diff: ds };
    });

    // --- timings, alternating the systems
    const systems = ['verge', 'onnx', 'onnx-1t'];
    const order = (r) => (r % 2 === 0 ? systems : [...systems].reverse());
    const cold = { verge: [], onnx: [], 'onnx-1t': [], node: [] };
    const coldDetail = { verge: [], onnx: [], 'onnx-1t': [] };
    for (let r = 0; r < reps.cold; r++) {
      process.stderr.write(`cold start ${r + 1}/${reps.cold}\n`);
      cold.node.push((await childRun('cold', 'node')).wall_ms);
      for (const s of order(r)) {
        const res = await childRun('cold', s);
        cold[s].push(res.wall_ms);
        coldDetail[s].push(res);
      }
    }
    const warm = { verge: [], onnx: [], 'onnx-1t': [] };
    const warmMedians = { verge: [], onnx: [], 'onnx-1t': [] };
    const warmCpu = { verge: [], onnx: [], 'onnx-1t': [] };
    const threads = {};
    for (let r = 0; r < reps.warm; r++) {
      process.stderr.write(`warm ${r + 1}/${reps.warm}\n`);
      for (const s of order(r)) {
        const res = await childRun('warm', s, [String(warmN), String(warmup)]);
        warm[s].push(...res.samples);
        warmMedians[s].push(median(res.samples));
        warmCpu[s].push(res.cpu_ms_per_request);
        threads[s] = res.threads;
      }
    }
    load.push(`mid ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
    const rss = { verge: [], onnx: [], 'onnx-1t': [] };
    const haveTime = existsSync('/usr/bin/time');
    for (let r = 0; r < reps.rss; r++) {
      process.stderr.write(`peak RSS ${r + 1}/${reps.rss}\n`);
      for (const s of order(r)) {
        const res = await childRun('warm', s, [String(rssN), '0'], haveTime);
        rss[s].push((res.time_v_rss_kb ?? res.max_rss_kb) / 1024);
      }
    }
    load.push(`end ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);

    // --- report
    const rows = [];
    const workload = `origin-request, ${body.length} B ${relative('/', bodyPath)} body`;
    const add = (metric, unit, values) => {
      for (const [system, value] of Object.entries(values)) {
        const base = values.onnx;
        const ratio = typeof value === 'number' && typeof base === 'number' && base !== 0 ? value / base : null;
        rows.push({ workload, system, metric, value, unit, ratio_to_baseline: ratio });
      }
    };
    const fits = (b, limit) => b <= limit;
    add('zip_bytes', 'bytes', { verge: vergeZip.bytes, onnx: onnxZip.bytes, 'onnx-as-installed': installedZip.bytes });
    add('unzipped_bytes', 'bytes', { verge: vergeZip.unzipped, onnx: onnxZip.unzipped, 'onnx-as-installed': installedZip.unzipped });
    add('fits_viewer_1MB', 'bool', { verge: fits(vergeZip.bytes, MB), onnx: fits(onnxZip.bytes, MB), 'onnx-as-installed': fits(installedZip.bytes, MB) });
    add('fits_origin_50MB', 'bool', { verge: fits(vergeZip.bytes, 50 * MB), onnx: fits(onnxZip.bytes, 50 * MB), 'onnx-as-installed': fits(installedZip.bytes, 50 * MB) });
    const stat = (name, unit, data, fn) => add(name, unit, Object.fromEntries(Object.entries(data).map(([k, v]) => [k, fn(v)])));
    stat('cold_start_ms_median', 'ms', cold, median);
    stat('cold_start_ms_min', 'ms', cold, (v) => Math.min(...v));
    stat('cold_start_ms_max', 'ms', cold, (v) => Math.max(...v));
    stat('cold_first_request_ms_median', 'ms', Object.fromEntries(Object.entries(coldDetail).map(([k, v]) => [k, v.map((x) => x.first_ms)])), median);
    stat('cold_import_ms_median', 'ms', Object.fromEntries(Object.entries(coldDetail).map(([k, v]) => [k, v.map((x) => x.import_ms)])), median);
    stat('warm_ms_median', 'ms', warm, median);
    stat('warm_ms_p10', 'ms', warm, (v) => q(v, 0.1));
    stat('warm_ms_p90', 'ms', warm, (v) => q(v, 0.9));
    stat('warm_rep_median_ms_min', 'ms', warmMedians, (v) => Math.min(...v));
    stat('warm_rep_median_ms_max', 'ms', warmMedians, (v) => Math.max(...v));
    stat('warm_cpu_ms_per_request', 'ms', warmCpu, median);
    stat('peak_rss_mb_median', 'MB', rss, median);
    stat('peak_rss_mb_min', 'MB', rss, (v) => Math.min(...v));
    stat('peak_rss_mb_max', 'MB', rss, (v) => Math.max(...v));
    add('threads_after_warm', 'count', threads);

    const get = (s, m) => rows.find((r) => r.system === s && r.metric === m)?.value;
    const f = (x, d = 1) => (typeof x === 'number' ? x.toFixed(d) : String(x));
    const ratio = (a, b) => (typeof a === 'number' && typeof b === 'number' ? `${(a / b).toFixed(2)}×` : '–');
    const line = (label, cells, ra, rb) => `| ${label} | ${cells.join(' | ')} | ${ratio(ra[0], ra[1])} | ${ratio(rb[0], rb[1])} |`;
    const out = [];
    out.push(`Edge benchmark${o.quick ? ' (--quick: 1 repetition, 5 warm requests; figures not meaningful)' : ''}: ${workload}`);
    out.push(`node ${process.version}, ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), load average ${load.join(' / ')}`);
    out.push(`reps: cold ${reps.cold}, warm ${reps.warm}×${warmN} after ${warmup}, RSS ${reps.rss} (1 cold + ${rssN} warm, ${haveTime ? '/usr/bin/time -v' : 'resourceUsage().maxRSS'})`);
    out.push('');
    out.push('| metric | verge | onnx (default threads) | onnx (1 thread) | verge/onnx | verge/onnx-1t |');
    out.push('|---|---|---|---|---|---|');
    const zb = (s) => get(s, 'zip_bytes');
    out.push(line('zip (deflate -9), MB', [f(zb('verge') / MB, 2), f(zb('onnx') / MB, 2), f(zb('onnx') / MB, 2)], [zb('verge'), zb('onnx')], [zb('verge'), zb('onnx')]));
    const ub = (s) => get(s, 'unzipped_bytes');
    out.push(line('unzipped, MB', [f(ub('verge') / MB, 1), f(ub('onnx') / MB, 1), f(ub('onnx') / MB, 1)], [ub('verge'), ub('onnx')], [ub('verge'), ub('onnx')]));
    const yn = (s, m) => (get(s, m) ? 'yes' : 'no');
    out.push(`| fits viewer zip quota (1 MB) | ${yn('verge', 'fits_viewer_1MB')} | ${yn('onnx', 'fits_viewer_1MB')} | ${yn('onnx', 'fits_viewer_1MB')} | | |`);
    out.push(`| fits origin zip quota (50 MB) | ${yn('verge', 'fits_origin_50MB')} | ${yn('onnx', 'fits_origin_50MB')} | ${yn('onnx', 'fits_origin_50MB')} | | |`);
    const rng = (s, m, d = 0) => `${f(get(s, `${m}_median`), d)} (${f(get(s, `${m}_${m.startsWith('warm') ? 'p10' : 'min'}`), d)}–${f(get(s, `${m}_${m.startsWith('warm') ? 'p90' : 'max'}`), d)})`;
    for (const [label, m, d] of [['cold start, ms: median (min–max)', 'cold_start_ms', 0],
      ['warm request, ms: median (p10–p90)', 'warm_ms', 2], ['peak RSS, MB: median (min–max)', 'peak_rss_mb', 0]]) {
      const v = (s) => get(s, `${m}_median`);
      out.push(line(label, systems.map((s) => rng(s, m, d)), [v('verge'), v('onnx')], [v('verge'), v('onnx-1t')]));
    }
    for (const [label, m] of [['… of which import, ms (median)', 'cold_import_ms_median'], ['… of which first request, ms (median)', 'cold_first_request_ms_median']]) {
      out.push(line(label, systems.map((s) => f(get(s, m), 0)), [get('verge', m), get('onnx', m)], [get('verge', m), get('onnx-1t', m)]));
    }
    {
      const m = 'warm_cpu_ms_per_request';
      out.push(line('warm request, CPU ms (user+sys)', systems.map((s) => f(get(s, m), 2)), [get('verge', m), get('onnx', m)], [get('verge', m), get('onnx-1t', m)]));
    }
    out.push(`| threads in the process | ${systems.map((s) => threads[s]).join(' | ')} | | |`);
    out.push('');
    out.push(`warm medians per repetition, ms: ${systems.map((s) => `${s} ${warmMedians[s].map((x) => f(x, 2)).join('/')}`).join('; ')}.`);
    out.push(`node alone (spawn → exit): ${f(median(cold.node), 0)} ms median. onnx zip as installed (all platforms' binaries: ${platformBins.join(', ')}; install-only deps): ` +
      `${f(installedZip.bytes / MB, 1)} MB zipped, ${f(installedZip.unzipped / MB, 0)} MB unzipped, fits origin 50 MB: ${installedZip.bytes <= 50 * MB ? 'yes' : 'no'}; ` +
      `the benchmarked onnx zip keeps linux/x64 only (${onnxZip.files} files).`);
    const bad = agreement.filter((a) => !a.same);
    out.push(`labels: ${agreement.length - bad.length}/${agreement.length} files agree (max score difference ${f(Math.max(...agreement.map((a) => a.score_diff)), 6)}): ` +
      agreement.map((a) => `${a.name}=${a.verge.label}${a.same ? '' : `≠${a.onnx.label}`}`).join(', '));
    console.log(out.join('\n'));
    if (o.json) {
      writeFileSync(o.json, JSON.stringify(rows, null, 1) + '\n');
      console.log(`\nrows: ${o.json}`);
    }
    if (bad.length) {
      console.error(`label disagreement: ${JSON.stringify(bad)}`);
      process.exitCode = 1;
    }
  } finally {
    if (o.keep) console.error(`kept ${tmp}`);
    else rmSync(tmp, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--child') await child(process.argv.slice(3));
else await main();
