// The image-classify baseline for the edge benchmark (bench/edge-bench.mjs):
// what a web team would write without verge. A plain Lambda@Edge
// origin-request handler that classifies the body's PNG or JPEG with
// EfficientNet-Lite0 on onnxruntime-node and answers as the verge
// image-classify component does in respond mode
// (components/image-classify/src/lib.rs): {"top": [{"index", "label", "score"}, …]}.
//
// Decoding uses pure-JS npm packages (no native code, no install script):
// pngjs (PNG: palette, grey and low bit depths expanded, alpha dropped, 16-bit
// cut to its high byte, as the component's png crate settings do) and jpeg-js
// (JPEG). jpeg-js upsamples chroma by nearest neighbour where the component's
// zune-jpeg interpolates, so on a subsampled JPEG the pixels, and so the
// scores, differ a little; PNGs decode to the same pixels. The preprocessing
// is the component's (components/image-classify/src/image.rs): centre square
// crop, bilinear resize to 224×224 with half-pixel centres and no
// antialiasing (rows, then columns, in f64), ImageNet mean/std, NCHW.
//
// Deployed layout (the zip's root; edge-bench.mjs builds it from this file):
//   index.mjs  common.mjs  package.json  config.json ({"top_k": 5}, optional)
//   node_modules/{onnxruntime-node,onnxruntime-common,pngjs,jpeg-js}
//   model/efficientnet-lite0.onnx  model/imagenet1k_clean_names.json
// Lambda handler: `index.handler`. A truncated or invalid image or a model
// error passes the request on unchanged (verge's `--on-error pass`); every
// invocation logs one JSON line.

import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import jpeg from 'jpeg-js';
import ort from 'onnxruntime-node';
import pngjs from 'pngjs';

import { InvalidInput, bodyHandler, f32String, jsonResponse, lambdaHandler, lazySession, readConfig } from '../common.mjs';

const here = dirname(fileURLToPath(import.meta.url));

export const SIZE = 224;
const MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255];
const STD = [0.229 * 255, 0.224 * 255, 0.225 * 255];
/** Larger images are refused rather than decoded. */
export const MAX_PIXELS = 40_000_000;

function tooLarge(width, height) {
  if (!width || !height || width * height > MAX_PIXELS) {
    throw new InvalidInput(`image of ${width}×${height} pixels: expected 1 to ${MAX_PIXELS} pixels`);
  }
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** Decodes a PNG or JPEG into 8-bit RGB: { width, height, pixels }. */
export function decode(bytes) {
  if (bytes.length >= 8 && PNG_SIGNATURE.equals(bytes.subarray(0, 8))) {
    if (bytes.length < 33) throw new InvalidInput('invalid PNG: no header');
    tooLarge(bytes.readUInt32BE(16), bytes.readUInt32BE(20));
    const depth = bytes[24];
    let png;
    try {
      // 16-bit samples are kept as they are, then cut to their high byte.
      png = pngjs.PNG.sync.read(bytes, { skipRescale: depth === 16 });
    } catch (e) {
      throw new InvalidInput(`invalid PNG: ${e.message}`);
    }
    const { width, height, data } = png;
    const shift = depth === 16 ? 8 : 0;
    const pixels = new Uint8Array(width * height * 3);
    for (let i = 0, j = 0; j < pixels.length; i += 4, j += 3) {
      pixels[j] = data[i] >> shift;
      pixels[j + 1] = data[i + 1] >> shift;
      pixels[j + 2] = data[i + 2] >> shift;
    }
    return { width, height, pixels };
  }
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) {
    let img;
    try {
      img = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: false, maxResolutionInMP: MAX_PIXELS / 1e6 });
    } catch (e) {
      throw new InvalidInput(`invalid JPEG: ${e.message ?? e}`);
    }
    tooLarge(img.width, img.height);
    if (img.data.length !== img.width * img.height * 3) {
      throw new InvalidInput(`invalid JPEG: ${img.data.length} bytes decoded for ${img.width}×${img.height} RGB`);
    }
    return { width: img.width, height: img.height, pixels: img.data };
  }
  throw new InvalidInput('not a PNG or JPEG image (unrecognised signature)');
}

/** Source index pairs and weights of a half-pixel-centre bilinear resize of n to SIZE. */
function axis(n) {
  const out = [];
  for (let i = 0; i < SIZE; i++) {
    const pos = Math.min(Math.max((i + 0.5) * (n / SIZE) - 0.5, 0), n - 1);
    const lo = Math.floor(pos);
    out.push([lo, Math.min(lo + 1, n - 1), pos - lo]);
  }
  return out;
}

/** The model's input: [3, 224, 224] floats (planar RGB), from the centre square of img. */
export function preprocess(img) {
  const side = Math.min(img.width, img.height);
  const top = Math.floor((img.height - side) / 2);
  const left = Math.floor((img.width - side) / 2);
  const { pixels, width } = img;
  const at = (y, x, c) => pixels[((top + y) * width + left + x) * 3 + c];
  const steps = axis(side);
  const out = new Float32Array(3 * SIZE * SIZE);
  for (let oy = 0; oy < SIZE; oy++) {
    const [y0, y1, fy] = steps[oy];
    for (let ox = 0; ox < SIZE; ox++) {
      const [x0, x1, fx] = steps[ox];
      for (let c = 0; c < 3; c++) {
        // Rows first, then columns, as the component and the numpy reference do.
        const r0 = at(y0, x0, c) * (1 - fy) + at(y1, x0, c) * fy;
        const r1 = at(y0, x1, c) * (1 - fy) + at(y1, x1, c) * fy;
        const v = r0 * (1 - fx) + r1 * fx;
        out[c * SIZE * SIZE + oy * SIZE + ox] = (v - MEAN[c]) / STD[c];
      }
    }
  }
  return out;
}

/** The k best classes, best first (ties: lower index first). */
export function topK(scores, k) {
  const idx = Array.from(scores, (_, i) => i);
  idx.sort((a, b) => scores[b] - scores[a] || a - b);
  return idx.slice(0, k).map((i) => [i, scores[i]]);
}

/**
 * A handler over EfficientNet-Lite0. Options: `dir` (the folder holding
 * model/ and config.json), or explicit `model`, `labels`; `topK` (else
 * config.json's top_k, else 5); `sessionOptions` for onnxruntime.
 */
export function createHandler(opts = {}) {
  const dir = opts.dir ?? here;
  const cfg = readConfig(dir);
  const k = Number(opts.topK ?? cfg.top_k ?? 5);
  if (!(k >= 1 && k <= 20)) throw new Error(`top-k = ${k}: expected 1 to 20`);
  const labels = JSON.parse(readFileSync(opts.labels ?? join(dir, 'model/imagenet1k_clean_names.json'), 'utf8'));
  if (labels.length !== 1000) throw new Error(`expected 1000 class names, got ${labels.length}`);
  const sessionOf = lazySession(opts.model ?? join(dir, 'model/efficientnet-lite0.onnx'), opts.sessionOptions);

  return bodyHandler(async (bytes) => {
    const input = preprocess(decode(bytes));
    const s = await sessionOf();
    const out = await s.run({ input: new ort.Tensor('float32', input, [1, 3, SIZE, SIZE]) });
    const scores = out.probabilities;
    if (scores.dims.join() !== '1,1000') throw new Error(`probabilities of shape [${scores.dims}]`);
    const top = topK(scores.data, k);
    const json = `{"top":[${top.map(([i, p]) => `{"index":${i},"label":${JSON.stringify(labels[i])},"score":${f32String(p)}}`).join(',')}]}`;
    return { reply: jsonResponse('200', json), log: { kind: 'respond', label: labels[top[0][0]] } };
  });
}

/** The Lambda handler: `index.handler`. */
export const handler = lambdaHandler(createHandler);
