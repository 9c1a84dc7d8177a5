// `verge:inference/engine.run` on the canonical ABI: the hot path of a host
// engine, called by the wasi:nn provider with its tensors in its own memory.
//
// The transpiled glue is made with js-component-bindgen's Hybrid import
// bindings: an import function that carries `Symbol.for('cabiLower')` is asked
// for a raw core function, which the provider then calls directly — no JS
// lifting of the tensor list, no copy of the input bytes (the engine reads
// typed arrays over the provider's memory), one copy of each output into
// memory the provider's `cabi_realloc` gives. Without that symbol the glue
// calls the same `run(id, inputs)` through its own lifting: both paths answer
// alike, and the tests run both.
//
// The layouts below are the canonical ABI's for the WIT in wit/verge.wit
// (wasm32): they change only with that interface.
//
//   record raw-tensor { dims: list<u32>, datum: s32, data: list<u8> }
//     dims.ptr @0, dims.len @4, datum @8, data.ptr @12, data.len @16; size 20, align 4
//   result<list<raw-tensor>, failure>  (written at the return pointer)
//     tag u8 @0; ok: list ptr @4, len @8; err: code (ptr @4, len @8), message (ptr @12, len @16)

const TENSOR_BYTES = 20;
const encoder = new TextEncoder();

/** How often the glue asked for the raw form, and how often it was called: the tests check the Hybrid path is the one taken. */
export const stats = { lowered: 0, calls: 0 };

/**
 * Gives `run(id, inputs) → outputs` (throwing `{ payload: { code, message } }`
 * for a failure) its raw canonical-ABI form, and returns it. Inputs come as
 * `{ dims: number[], datum, data: Uint8Array }`; outputs may give `dims` as
 * any array of numbers (or bigints) and `data` as a Uint8Array.
 */
export function withCabiLower(run) {
  run[Symbol.for('cabiLower')] = ({ memory, realloc }) => {
    if (!memory || !realloc) throw new TypeError('verge:inference/engine.run is lowered with a memory and a realloc');
    stats.lowered++;
    // Views over the memory, made again after it grows (growth detaches the buffer).
    let buffer = null;
    let bytes;
    let words;
    const views = () => {
      if (buffer !== memory.buffer) {
        buffer = memory.buffer;
        bytes = new Uint8Array(buffer);
        words = new DataView(buffer);
      }
    };
    // A list of `count` elements of `size` bytes inside the memory, or a trap.
    const inBounds = (ptr, count, size) => {
      if (ptr + count * size > buffer.byteLength) throw new RangeError('verge:inference/engine.run: a list is out of bounds of the provider\'s memory');
    };
    const alloc = (size, align) => {
      const ptr = realloc(0, 0, align, size);
      views();
      inBounds(ptr, size, 1);
      return ptr;
    };
    const put = (src, align) => {
      const ptr = alloc(src.byteLength, align);
      bytes.set(src, ptr);
      return ptr;
    };

    return function run_(id, ptr, len, retptr) {
      stats.calls++;
      views();
      inBounds(ptr, len, TENSOR_BYTES);
      const inputs = new Array(len);
      for (let i = 0, at = ptr; i < len; i++, at += TENSOR_BYTES) {
        const dimsPtr = words.getUint32(at, true);
        const rank = words.getUint32(at + 4, true);
        const dataPtr = words.getUint32(at + 12, true);
        const dataLen = words.getUint32(at + 16, true);
        inBounds(dimsPtr, rank, 4);
        inBounds(dataPtr, dataLen, 1);
        const dims = new Array(rank);
        for (let d = 0; d < rank; d++) dims[d] = words.getUint32(dimsPtr + 4 * d, true);
        // A view, not a copy: nothing runs in Wasm until the engine is done with it.
        inputs[i] = { dims, datum: words.getInt32(at + 8, true), data: new Uint8Array(buffer, dataPtr, dataLen) };
      }
      let outputs;
      try {
        outputs = run(id, inputs);
      } catch (e) {
        if (!e?.payload) throw e;
        // Strings first: each realloc may grow (and move) the memory's buffer.
        const code = encoder.encode(String(e.payload.code));
        const message = encoder.encode(String(e.payload.message));
        const codePtr = put(code, 1);
        const messagePtr = put(message, 1);
        words.setUint8(retptr, 1);
        words.setUint32(retptr + 4, codePtr, true);
        words.setUint32(retptr + 8, code.byteLength, true);
        words.setUint32(retptr + 12, messagePtr, true);
        words.setUint32(retptr + 16, message.byteLength, true);
        return;
      }
      const list = alloc(outputs.length * TENSOR_BYTES, 4);
      for (let i = 0; i < outputs.length; i++) {
        const { dims, datum, data } = outputs[i];
        const dimsPtr = alloc(4 * dims.length, 4);
        for (let d = 0; d < dims.length; d++) words.setUint32(dimsPtr + 4 * d, Number(dims[d]), true);
        const dataPtr = put(data, 8);
        const at = list + i * TENSOR_BYTES;
        words.setUint32(at, dimsPtr, true);
        words.setUint32(at + 4, dims.length, true);
        words.setInt32(at + 8, datum, true);
        words.setUint32(at + 12, dataPtr, true);
        words.setUint32(at + 16, data.byteLength, true);
      }
      words.setUint8(retptr, 0);
      words.setUint32(retptr + 4, list, true);
      words.setUint32(retptr + 8, outputs.length, true);
    };
  };
  return run;
}
