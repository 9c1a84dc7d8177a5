// The text-embed baseline for the edge benchmark (bench/edge-bench.mjs): what
// a web team would write without verge. A plain Lambda@Edge origin-request
// handler that embeds the body's text with all-MiniLM-L6-v2 (int8) on
// onnxruntime-node and answers as the verge text-embed component does in
// respond mode (components/text-embed/src/lib.rs): JSON with `tokens`,
// `truncated`, the nearest label with its `similarity` and every label's
// `similarities`, and the 384-number `embedding`.
//
// The tokeniser is BERT's uncased WordPiece, written here in JS as
// components/text-embed/src/tokenizer.rs does it (BertNormalizer: clean text,
// CJK spacing, NFD without nonspacing marks, per-character lower case;
// BertPreTokenizer; greedy longest-match WordPiece with `##`; [CLS] … [SEP]
// truncated to 128), from the model's tokenizer.json. Unicode categories come
// from the JS engine's regular expressions (\p{…}), which may be a newer
// Unicode version than the component's tables (14.0): that only matters for
// characters assigned since.
//
// Deployed layout (the zip's root; edge-bench.mjs builds it from this file):
//   index.mjs  common.mjs  package.json  config.json ({"labels": {"name": ["sentence", …]}})
//   node_modules/onnxruntime-{node,common}  model/minilm.onnx  model/tokenizer.json
// Lambda handler: `index.handler`. An empty or invalid body or a model error
// passes the request on unchanged (verge's `--on-error pass`); every
// invocation logs one JSON line.

import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import ort from 'onnxruntime-node';

import { InvalidInput, bodyHandler, f32String, jsonResponse, lambdaHandler, lazySession, readConfig } from '../common.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const DIM = 384;

const WHITESPACE = /\p{White_Space}/u;
const CONTROL = /[\p{Cc}\p{Cf}\p{Co}\p{Cs}]/u;
const NONSPACING = /\p{Mn}/u;
const NONSPACING_ALL = /\p{Mn}/gu;
// Category P*, and ASCII punctuation (Rust's is_ascii_punctuation: also $ + < = > ^ ` | ~).
const PUNCTUATION = /[\p{P}\x21-\x2f\x3a-\x40\x5b-\x60\x7b-\x7e]/u;

const isWhitespace = (c) => c === ' ' || c === '\t' || c === '\n' || c === '\r' || WHITESPACE.test(c);
const isControl = (c) => c !== '\t' && c !== '\n' && c !== '\r' && CONTROL.test(c);
const isPunctuation = (c) => PUNCTUATION.test(c);
function isCjk(c) {
  const cp = c.codePointAt(0);
  return (cp >= 0x4e00 && cp <= 0x9fff) || (cp >= 0x3400 && cp <= 0x4dbf) || (cp >= 0x20000 && cp <= 0x2a6df) ||
    (cp >= 0x2a700 && cp <= 0x2b73f) || (cp >= 0x2b740 && cp <= 0x2b81f) || (cp >= 0x2b820 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff) || (cp >= 0x2f800 && cp <= 0x2fa1f);
}

/** BertNormalizer with clean_text, handle_chinese_chars, strip_accents and lowercase. */
export function normalize(text) {
  let cleaned = '';
  for (const c of text) {
    if (c === '\0' || c === '\ufffd' || isControl(c)) continue;
    if (isWhitespace(c)) cleaned += ' ';
    else if (isCjk(c)) cleaned += ` ${c} `;
    else if (NONSPACING.test(c)) continue;
    else {
      // NFD without its nonspacing marks; a character that would vanish stays.
      const stripped = c.normalize('NFD').replace(NONSPACING_ALL, '');
      cleaned += stripped || c;
    }
  }
  // Per character, as Rust's char::to_lowercase (no final-sigma rule).
  let out = '';
  for (const c of cleaned) out += c.toLowerCase();
  return out;
}

/** BertPreTokenizer: words split on whitespace, each punctuation mark a word of its own. */
export function preTokenize(text) {
  const words = [];
  let word = '';
  for (const c of text) {
    if (isWhitespace(c) || isPunctuation(c)) {
      if (word) words.push(word);
      word = '';
      if (isPunctuation(c)) words.push(c);
    } else word += c;
  }
  if (word) words.push(word);
  return words;
}

/** A WordPiece tokeniser from a tokenizer.json (checked to be what this file implements). */
export function loadTokenizer(path) {
  const t = JSON.parse(readFileSync(path, 'utf8'));
  const n = t.normalizer ?? {};
  const m = t.model ?? {};
  const ok = n.type === 'BertNormalizer' && n.clean_text && n.handle_chinese_chars && n.lowercase &&
    n.strip_accents == null && t.pre_tokenizer?.type === 'BertPreTokenizer' && m.type === 'WordPiece' &&
    m.continuing_subword_prefix === '##' && m.unk_token === '[UNK]';
  if (!ok) throw new Error(`${path}: not the BERT uncased WordPiece set-up this handler implements`);
  const vocab = new Map(Object.entries(m.vocab));
  const id = (tok) => {
    const v = vocab.get(tok);
    if (v === undefined) throw new Error(`${path}: no ${tok} in the vocabulary`);
    return v;
  };
  return {
    vocab,
    maxChars: m.max_input_chars_per_word,
    maxLength: t.truncation?.max_length ?? 512,
    cls: id('[CLS]'),
    sep: id('[SEP]'),
    unk: id('[UNK]'),
  };
}

/** WordPiece on one word: longest prefix first, `##` continuations, [UNK] for the whole word when a part has no piece. */
function wordPiece(tok, word, out) {
  const chars = Array.from(word);
  if (chars.length > tok.maxChars) {
    out.push(tok.unk);
    return;
  }
  const pieces = [];
  let start = 0;
  while (start < chars.length) {
    let end = chars.length;
    let found;
    while (start < end) {
      const piece = (start > 0 ? '##' : '') + chars.slice(start, end).join('');
      found = tok.vocab.get(piece);
      if (found !== undefined) break;
      end--;
    }
    if (found === undefined) {
      out.push(tok.unk);
      return;
    }
    pieces.push(found);
    start = end;
  }
  out.push(...pieces);
}

/** The model's inputs for one text: [CLS] tokens [SEP], at most maxLength ids. */
export function encode(tok, text) {
  const ids = [tok.cls];
  for (const word of preTokenize(normalize(text))) wordPiece(tok, word, ids);
  const truncated = ids.length + 1 > tok.maxLength;
  ids.length = Math.min(ids.length, tok.maxLength - 1);
  ids.push(tok.sep);
  return { ids, truncated };
}

function cosine(a, b) {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot = Math.fround(dot + Math.fround(a[i] * b[i]));
    na = Math.fround(na + Math.fround(a[i] * a[i]));
    nb = Math.fround(nb + Math.fround(b[i] * b[i]));
  }
  return Math.fround(dot / Math.max(Math.fround(Math.fround(Math.sqrt(na)) * Math.fround(Math.sqrt(nb))), 1e-12));
}

/** The body's text: UTF-8, or a JSON body's "text" field when the Content-Type says JSON. */
function textOf(bytes, contentType) {
  let text;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new InvalidInput('the body is not UTF-8');
  }
  if (contentType.includes('json')) {
    try {
      text = JSON.parse(text)?.text;
    } catch (e) {
      throw new InvalidInput(`the body is not JSON: ${e.message}`);
    }
    if (typeof text !== 'string') throw new InvalidInput('expected a JSON object with a string field "text"');
  }
  if (!text.trim()) throw new InvalidInput('empty text: there is nothing to embed');
  return text;
}

/**
 * A handler over MiniLM. Options: `dir` (the folder holding model/ and
 * config.json), or explicit `model`, `tokenizer`; `labels` ({ name:
 * [sentences] }, else config.json's); `sessionOptions` for onnxruntime.
 */
export function createHandler(opts = {}) {
  const dir = opts.dir ?? here;
  const cfg = readConfig(dir);
  const labels = Object.entries(opts.labels ?? cfg.labels ?? {});
  const tok = loadTokenizer(opts.tokenizer ?? join(dir, 'model/tokenizer.json'));
  const sessionOf = lazySession(opts.model ?? join(dir, 'model/minilm.onnx'), opts.sessionOptions);
  // The labels' reference embeddings, computed once per instance.
  const references = new Map();

  async function embed(enc) {
    const s = await sessionOf();
    const n = enc.ids.length;
    const ids = BigInt64Array.from(enc.ids, BigInt);
    const out = await s.run({
      input_ids: new ort.Tensor('int64', ids, [1, n]),
      attention_mask: new ort.Tensor('int64', new BigInt64Array(n).fill(1n), [1, n]),
      token_type_ids: new ort.Tensor('int64', new BigInt64Array(n), [1, n]),
    });
    const hidden = out.last_hidden_state;
    if (hidden.dims.join() !== `1,${n},${DIM}`) throw new Error(`last_hidden_state of shape [${hidden.dims}]`);
    // Mean over the tokens (all unmasked), then L2-normalised, in f32 as the component does.
    const v = new Float32Array(DIM);
    for (let t = 0; t < n; t++) for (let d = 0; d < DIM; d++) v[d] += hidden.data[t * DIM + d];
    for (let d = 0; d < DIM; d++) v[d] /= Math.max(n, 1e-9);
    let sq = 0;
    for (let d = 0; d < DIM; d++) sq = Math.fround(sq + Math.fround(v[d] * v[d]));
    const norm = Math.max(Math.fround(Math.sqrt(sq)), 1e-12);
    for (let d = 0; d < DIM; d++) v[d] /= norm;
    return v;
  }

  async function reference(sentence) {
    if (!references.has(sentence)) references.set(sentence, await embed(encode(tok, sentence)));
    return references.get(sentence);
  }

  return bodyHandler(async (bytes, request) => {
    const enc = encode(tok, textOf(bytes, request.headers['content-type']?.[0]?.value ?? ''));
    const embedding = await embed(enc);
    const similarities = [];
    for (const [name, sentences] of labels) {
      let best = -Infinity;
      for (const s of sentences) best = Math.max(best, cosine(embedding, await reference(s)));
      similarities.push([name, best]);
    }
    let json = `{"tokens":${enc.ids.length},"truncated":${enc.truncated}`;
    if (similarities.length) {
      const [label, sim] = similarities.reduce((a, b) => (a[1] >= b[1] ? a : b));
      json += `,"label":${JSON.stringify(label)},"similarity":${f32String(sim)},"similarities":{` +
        similarities.map(([n, s]) => `${JSON.stringify(n)}:${f32String(s)}`).join(',') + '}';
    }
    json += `,"embedding":[${Array.from(embedding, f32String).join(',')}]}`;
    return { reply: jsonResponse('200', json), log: { kind: 'respond', tokens: enc.ids.length } };
  });
}

/** The Lambda handler: `index.handler`. */
export const handler = lambdaHandler(createHandler);
