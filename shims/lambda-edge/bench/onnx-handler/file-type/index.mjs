// The file-type baseline for the edge benchmark (bench/edge-bench.mjs): what a
// web team would write without verge. A plain Lambda@Edge origin-request
// handler that runs Google's Magika model (standard_v3_3) with
// onnxruntime-node and adds the same headers as the verge file-type component
// in annotate mode: x-file-type, x-file-type-group, x-file-type-mime,
// x-file-type-score.
//
// Magika's preprocessing and postprocessing are written here in JS, as
// components/magika/src/lib.rs (and magika 1.0.3's magika.py) do them, from
// the config.min.json and content_types_kb.min.json shipped with the model.
//
// Deployed layout (the zip's root; edge-bench.mjs builds it from this file):
//   index.mjs  common.mjs  package.json  node_modules/onnxruntime-{node,common}
//   magika/model.onnx  magika/config.min.json  magika/content_types_kb.min.json
// Lambda handler: `index.handler`. A request that cannot be classified
// (truncated body, a model error) is passed on unchanged, as verge's
// `--on-error pass` does; every invocation logs one JSON line.

import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import ort from 'onnxruntime-node';

import { bodyHandler, f32String, lazySession, lambdaHandler, withHeaders } from '../common.mjs';

const here = dirname(fileURLToPath(import.meta.url));

/** Python's bytes.strip() whitespace: space, \t, \n, \r, \v, \f. */
const isPySpace = (b) => b === 0x20 || (b >= 0x09 && b <= 0x0d);

const utf8 = new TextDecoder('utf-8', { fatal: true });
function fewBytesLabel(bytes) {
  try {
    utf8.decode(bytes);
    return 'txt';
  } catch {
    return 'unknown';
  }
}

/** Magika's features for a payload: `{ label }` when decided without the model, else `{ features }`. */
export function prepare(content, cfg) {
  const { beg_size: begSize, end_size: endSize, block_size: blockSize } = cfg;
  const minSize = cfg.min_file_size_for_dl;
  const pad = cfg.padding_token;
  if (content.length === 0) return { label: 'empty' };
  if (content.length < minSize) return { label: fewBytesLabel(content) };
  const block = Math.min(blockSize, content.length);
  const features = new Int32Array(begSize + endSize).fill(pad);

  // Beginning: lstrip the first block, take up to begSize, pad at the end.
  let start = 0;
  while (start < block && isPySpace(content[start])) start++;
  const beg = content.subarray(start, Math.min(block, start + begSize));
  features.set(beg, 0);

  // End: rstrip the last block, take its last endSize bytes, pad at the start.
  const endBlock = content.subarray(content.length - block);
  let stop = endBlock.length;
  while (stop > 0 && isPySpace(endBlock[stop - 1])) stop--;
  const end = endBlock.subarray(Math.max(0, stop - endSize), stop);
  features.set(end, features.length - end.length);

  // Too few meaningful bytes after stripping: decide on the raw bytes.
  if (features[minSize - 1] === pad) return { label: fewBytesLabel(content.subarray(0, block)) };
  return { features };
}

/** Magika's verdict from the model's scores (high-confidence mode). */
export function decide(scores, cfg, kb) {
  const labels = cfg.target_labels_space;
  if (scores.length !== labels.length) {
    throw new Error(`the model returned ${scores.length} scores, Magika's config has ${labels.length} labels`);
  }
  let best = 0;
  for (let i = 1; i < scores.length; i++) if (scores[i] > scores[best]) best = i;
  const dlLabel = labels[best];
  const score = scores[best];
  let label = cfg.overwrite_map[dlLabel] ?? dlLabel;
  const threshold = cfg.thresholds[dlLabel] ?? cfg.medium_confidence_threshold;
  if (score < threshold) label = kb[label]?.is_text ? 'txt' : 'unknown';
  return { label, score };
}

/**
 * A handler over a Magika model and its config. Options: `dir` (the folder
 * holding magika/), or explicit `model`, `config`, `kb` paths;
 * `sessionOptions` for onnxruntime (e.g. `{ intraOpNumThreads: 1 }`).
 */
export function createHandler(opts = {}) {
  const dir = opts.dir ?? here;
  const cfg = JSON.parse(readFileSync(opts.config ?? join(dir, 'magika/config.min.json'), 'utf8'));
  const kb = JSON.parse(readFileSync(opts.kb ?? join(dir, 'magika/content_types_kb.min.json'), 'utf8'));
  const sessionOf = lazySession(opts.model ?? join(dir, 'magika/model.onnx'), opts.sessionOptions);

  async function classify(body) {
    const prepared = prepare(body, cfg);
    if (prepared.label) return { label: prepared.label, score: 1 };
    const s = await sessionOf();
    const input = new ort.Tensor('int32', prepared.features, [1, prepared.features.length]);
    const out = await s.run({ [s.inputNames[0]]: input });
    return decide(out[s.outputNames[0]].data, cfg, kb);
  }

  // Magika needs the end of the file too: a cut body is left to the origin (bodyHandler).
  return bodyHandler(async (bytes, request) => {
    const { label, score } = await classify(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length));
    const ct = kb[label] ?? {};
    const reply = withHeaders(request, {
      'x-file-type': label,
      'x-file-type-group': ct.group ?? '',
      'x-file-type-mime': ct.mime_type ?? '',
      'x-file-type-score': f32String(Math.fround(score)),
    });
    return { reply, log: { kind: 'annotate', label } };
  });
}

/** The Lambda handler: `index.handler`. */
export const handler = lambdaHandler(createHandler);
