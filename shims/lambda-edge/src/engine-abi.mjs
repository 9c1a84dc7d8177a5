// `verge:inference/engine.run` on the canonical ABI: the hot path of a host
// engine, called by the wasi:nn provider with its tensors in its own memory
// (see cabi.mjs for how the glue takes it). No JS lifting of the tensor list,
// no copy of the input bytes (the engine reads typed arrays over the
// provider's memory), one copy of each output into memory the provider's
// `cabi_realloc` gives. Without Hybrid bindings the glue calls the same
// `run(id, inputs)` through its own lifting: both paths answer alike.
//
//   record raw-tensor { dims: list<u32>, datum: s32, data: list<u8> }
//     dims.ptr @0, dims.len @4, datum @8, data.ptr @12, data.len @16; size 20, align 4
//   result<list<raw-tensor>, failure>  (written at the return pointer)
//     tag u8 @0; ok: list ptr @4, len @8; err: code (ptr @4, len @8), message (ptr @12, len @16)

import { Guest, lowered } from './cabi.mjs';

const TENSOR_BYTES = 20;

/** How often the glue asked for the raw form, and how often it was called: the tests check the Hybrid path is the one taken. */
export const stats = { lowered: 0, calls: 0 };

/**
 * Gives `run(id, inputs) → outputs` (throwing `{ payload: { code, message } }`
 * for a failure) its raw canonical-ABI form, and returns it. Inputs come as
 * `{ dims: number[], datum, data: Uint8Array }`; outputs may give `dims` as
 * any array of numbers (or bigints) and `data` as a Uint8Array.
 */
export function withCabiLower(run) {
  return lowered(run, (options) => {
    const g = new Guest(options, 'verge:inference/engine.run');
    if (!options.realloc) throw new TypeError('verge:inference/engine.run is lowered with a realloc');
    stats.lowered++;
    return function run_(id, ptr, len, retptr) {
      stats.calls++;
      g.views();
      g.inBounds(ptr, len, TENSOR_BYTES);
      const inputs = new Array(len);
      for (let i = 0, at = ptr; i < len; i++, at += TENSOR_BYTES) {
        const dimsPtr = g.words.getUint32(at, true);
        const rank = g.words.getUint32(at + 4, true);
        const dataPtr = g.words.getUint32(at + 12, true);
        const dataLen = g.words.getUint32(at + 16, true);
        g.inBounds(dimsPtr, rank, 4);
        g.inBounds(dataPtr, dataLen, 1);
        const dims = new Array(rank);
        for (let d = 0; d < rank; d++) dims[d] = g.words.getUint32(dimsPtr + 4 * d, true);
        // A view, not a copy: nothing runs in Wasm until the engine is done with it.
        inputs[i] = { dims, datum: g.words.getInt32(at + 8, true), data: new Uint8Array(g.buffer, dataPtr, dataLen) };
      }
      let outputs;
      try {
        outputs = run(id, inputs);
      } catch (e) {
        if (!e?.payload) throw e;
        // Strings first, the tag last: each realloc may grow (and move) the memory's buffer.
        g.putString(retptr + 4, String(e.payload.code));
        g.putString(retptr + 12, String(e.payload.message));
        g.words.setUint8(retptr, 1);
        return;
      }
      const list = g.alloc(outputs.length * TENSOR_BYTES, 4);
      for (let i = 0; i < outputs.length; i++) {
        const { dims, datum, data } = outputs[i];
        const dimsPtr = g.alloc(4 * dims.length, 4);
        for (let d = 0; d < dims.length; d++) g.words.setUint32(dimsPtr + 4 * d, Number(dims[d]), true);
        const dataPtr = g.put(data, 8);
        const at = list + i * TENSOR_BYTES;
        g.words.setUint32(at, dimsPtr, true);
        g.words.setUint32(at + 4, dims.length, true);
        g.words.setInt32(at + 8, datum, true);
        g.words.setUint32(at + 12, dataPtr, true);
        g.words.setUint32(at + 16, data.byteLength, true);
      }
      g.words.setUint8(retptr, 0);
      g.words.setUint32(retptr + 4, list, true);
      g.words.setUint32(retptr + 8, outputs.length, true);
    };
  });
}
