// engine-abi.mjs on a real WebAssembly.Memory: the raw `run` reads the
// provider's tensors where they lie and writes the outputs (or the failure)
// as the canonical ABI lays them out, through a realloc that grows the memory
// under it; a list outside the memory traps instead of being read.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { withCabiLower } from '../src/engine-abi.mjs';

/** A memory with a bump allocator that grows it a page at a time when full. */
function provider(pages = 1) {
  const memory = new WebAssembly.Memory({ initial: pages });
  let top = 1024;
  const calls = [];
  const realloc = (old, oldSize, align, size) => {
    calls.push({ align, size });
    top = Math.ceil(top / align) * align;
    const ptr = top;
    top += size;
    while (top > memory.buffer.byteLength) memory.grow(1);
    return ptr;
  };
  return { memory, realloc, calls };
}

/** Writes `tensors` ({dims, datum, data}) as list<raw-tensor> at 64 KiB - what they need; returns [ptr, len]. */
function writeInputs(memory, tensors, at = 256) {
  const view = new DataView(memory.buffer);
  const bytes = new Uint8Array(memory.buffer);
  let heap = at + tensors.length * 20;
  tensors.forEach((t, i) => {
    const base = at + i * 20;
    view.setUint32(base, heap, true);
    view.setUint32(base + 4, t.dims.length, true);
    t.dims.forEach((d, k) => view.setUint32(heap + 4 * k, d, true));
    heap += 4 * t.dims.length;
    view.setInt32(base + 8, t.datum, true);
    view.setUint32(base + 12, heap, true);
    view.setUint32(base + 16, t.data.byteLength, true);
    bytes.set(t.data, heap);
    heap += t.data.byteLength;
  });
  return [at, tensors.length];
}

function readOutputs(memory, retptr) {
  const view = new DataView(memory.buffer);
  const text = (ptr, len) => new TextDecoder().decode(new Uint8Array(memory.buffer, ptr, len));
  if (view.getUint8(retptr) === 1) {
    return { err: { code: text(view.getUint32(retptr + 4, true), view.getUint32(retptr + 8, true)),
      message: text(view.getUint32(retptr + 12, true), view.getUint32(retptr + 16, true)) } };
  }
  const list = view.getUint32(retptr + 4, true);
  const n = view.getUint32(retptr + 8, true);
  const ok = [];
  for (let i = 0; i < n; i++) {
    const at = list + 20 * i;
    const dims = [...new Uint32Array(memory.buffer.slice(view.getUint32(at, true), view.getUint32(at, true) + 4 * view.getUint32(at + 4, true)))];
    const dataPtr = view.getUint32(at + 12, true);
    ok.push({ dims, datum: view.getInt32(at + 8, true), data: new Uint8Array(memory.buffer.slice(dataPtr, dataPtr + view.getUint32(at + 16, true))) });
  }
  return { ok };
}

const f32 = (...xs) => new Uint8Array(Float32Array.from(xs).buffer);

describe('the engine run on the canonical ABI', () => {
  test('inputs are read in place, outputs written through realloc, the memory growing under it', () => {
    const seen = [];
    // Doubles every float; the output is bigger than the memory has left.
    const run = withCabiLower((id, inputs) => {
      seen.push({ id, inputs: inputs.map((t) => ({ ...t, buffer: t.data.buffer })) });
      const x = new Float32Array(inputs[0].data.slice().buffer);
      const big = new Float32Array(40_000).fill(2);
      return [
        { dims: Uint32Array.from(inputs[0].dims), datum: 1, data: new Uint8Array(x.map((v) => 2 * v).buffer) },
        { dims: Uint32Array.of(40_000), datum: 1, data: new Uint8Array(big.buffer) },
      ];
    });
    const p = provider();
    const raw = run[Symbol.for('cabiLower')]({ memory: p.memory, realloc: p.realloc });
    const [ptr, len] = writeInputs(p.memory, [{ dims: [1, 3], datum: 1, data: f32(1, 2, 3) }]);
    const before = p.memory.buffer;
    raw(7, ptr, len, 64);
    assert.equal(seen[0].id, 7);
    assert.deepEqual(seen[0].inputs[0].dims, [1, 3]);
    assert.equal(seen[0].inputs[0].buffer, before, 'a view of the memory, not a copy');
    assert.ok(p.memory.buffer.byteLength > 65536, 'the memory grew while outputs were written');
    const { ok } = readOutputs(p.memory, 64);
    assert.deepEqual(ok[0].dims, [1, 3]);
    assert.deepEqual([...new Float32Array(ok[0].data.buffer)], [2, 4, 6]);
    assert.equal(ok[1].data.byteLength, 160_000);
    assert.ok(p.calls.every(({ align }) => [1, 4, 8].includes(align)));
  });

  test('a failure is written as the err case, and the provider gets its words', () => {
    const run = withCabiLower(() => {
      throw { payload: { code: 'runtime-error', message: 'onnxruntime: inference failed: ünïcode' } };
    });
    const p = provider();
    const raw = run[Symbol.for('cabiLower')]({ memory: p.memory, realloc: p.realloc });
    const [ptr, len] = writeInputs(p.memory, []);
    raw(0, ptr, len, 64);
    assert.deepEqual(readOutputs(p.memory, 64).err, { code: 'runtime-error', message: 'onnxruntime: inference failed: ünïcode' });
  });

  test('a list out of bounds of the memory traps, and nothing runs', () => {
    let ran = false;
    const run = withCabiLower(() => {
      ran = true;
      return [];
    });
    const p = provider();
    const raw = run[Symbol.for('cabiLower')]({ memory: p.memory, realloc: p.realloc });
    assert.throws(() => raw(0, 65536 - 10, 1, 64), RangeError, 'the tensor list');
    const [ptr, len] = writeInputs(p.memory, [{ dims: [1], datum: 1, data: f32(1) }]);
    new DataView(p.memory.buffer).setUint32(ptr + 16, 1 << 20, true); // data longer than the memory
    assert.throws(() => raw(0, ptr, len, 64), RangeError, 'the tensor data');
    assert.equal(ran, false);
  });

  test('an exception that is not a failure stays a trap', () => {
    const run = withCabiLower(() => {
      throw new TypeError('a bug');
    });
    const p = provider();
    const raw = run[Symbol.for('cabiLower')]({ memory: p.memory, realloc: p.realloc });
    assert.throws(() => raw(0, 256, 0, 64), TypeError);
  });

  test('run itself is still callable as the JS binding of the import', () => {
    const run = withCabiLower((id, inputs) => inputs.map((t) => ({ ...t, dims: Uint32Array.from(t.dims) })));
    const out = run(0, [{ dims: [2], datum: 1, data: f32(1, 2) }]);
    assert.deepEqual([...out[0].dims], [2]);
  });
});
