// The canonical ABI from the host's side, for the imports the shim lowers
// itself (js-component-bindgen's Hybrid import bindings: a function carrying
// `Symbol.for('cabiLower')` is asked for a raw core function and called by
// the component directly, skipping the glue's per-call task bookkeeping and
// lifting). Each raw function reads and writes the caller's memory through a
// `Guest`; the layouts are wasm32's for the WIT types named at each use.

export const CABI_LOWER = Symbol.for('cabiLower');

const decoder = new TextDecoder('utf-8', { fatal: true });
const encoder = new TextEncoder();

/** A component's memory (and its `cabi_realloc`), seen from JavaScript. */
export class Guest {
  constructor({ memory, realloc }, what) {
    if (!memory) throw new TypeError(`${what} is lowered with a memory`);
    this.memory = memory;
    this.realloc = realloc;
    this.what = what;
    this.buffer = null;
  }

  /** Views over the memory, made again after it grows (growth detaches the buffer). */
  views() {
    if (this.buffer !== this.memory.buffer) {
      this.buffer = this.memory.buffer;
      this.bytes = new Uint8Array(this.buffer);
      this.words = new DataView(this.buffer);
    }
  }

  /** `count` elements of `size` bytes at `ptr` lie inside the memory, or this traps. */
  inBounds(ptr, count, size) {
    if (ptr + count * size > this.buffer.byteLength) {
      throw new RangeError(`${this.what}: a list is out of bounds of the component's memory`);
    }
  }

  /** The UTF-8 string at (ptr, len); invalid UTF-8 traps, as the canonical ABI wants. */
  string(ptr, len) {
    this.views();
    this.inBounds(ptr, len, 1);
    return decoder.decode(this.bytes.subarray(ptr, ptr + len));
  }

  alloc(size, align) {
    const ptr = this.realloc(0, 0, align, size);
    this.views();
    this.inBounds(ptr, size, 1);
    return ptr;
  }

  /** Copies `src` (bytes) into fresh guest memory; returns its address. */
  put(src, align) {
    const ptr = this.alloc(src.byteLength, align);
    this.bytes.set(src, ptr);
    return ptr;
  }

  /** Writes `text` as a (ptr, len) string at `at` (the string allocated first). */
  putString(at, text) {
    const utf8 = encoder.encode(text);
    const ptr = this.put(utf8, 1);
    this.words.setUint32(at, ptr, true);
    this.words.setUint32(at + 4, utf8.byteLength, true);
  }
}

/**
 * Gives `f` its raw form: the glue calls `lower(options)` once per instance
 * (options: `{ memory, realloc }` as the import's canonical options have them)
 * and the component calls what it returns. Returns `f`, which stays the
 * import's plain JavaScript binding.
 */
export function lowered(f, lower) {
  f[CABI_LOWER] = lower;
  return f;
}
