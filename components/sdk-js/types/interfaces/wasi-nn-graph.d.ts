/// <reference path="./wasi-nn-errors.d.ts" />
/// <reference path="./wasi-nn-inference.d.ts" />
/// <reference path="./wasi-nn-tensor.d.ts" />
declare module 'wasi:nn/graph@0.2.0-rc-2024-10-28' {
  /**
   * Load a `graph` from an opaque sequence of bytes to use for inference.
   */
  export function load(builder: Array<GraphBuilder>, encoding: GraphEncoding, target: ExecutionTarget): Graph;
  /**
   * Load a `graph` by name.
   * 
   * How the host expects the names to be passed and how it stores the graphs for retrieval via
   * this function is **implementation-specific**. This allows hosts to choose name schemes that
   * range from simple to complex (e.g., URLs?) and caching mechanisms of various kinds.
   */
  export function loadByName(name: string): Graph;
  export type Error = import('wasi:nn/errors@0.2.0-rc-2024-10-28').Error;
  export type Tensor = import('wasi:nn/tensor@0.2.0-rc-2024-10-28').Tensor;
  export type GraphExecutionContext = import('wasi:nn/inference@0.2.0-rc-2024-10-28').GraphExecutionContext;
  /**
   * Describes the encoding of the graph. This allows the API to be implemented by various
   * backends that encode (i.e., serialize) their graph IR with different formats.
   * # Variants
   * 
   * ## `"openvino"`
   * 
   * ## `"onnx"`
   * 
   * ## `"tensorflow"`
   * 
   * ## `"pytorch"`
   * 
   * ## `"tensorflowlite"`
   * 
   * ## `"ggml"`
   * 
   * ## `"autodetect"`
   */
  export type GraphEncoding = 'openvino' | 'onnx' | 'tensorflow' | 'pytorch' | 'tensorflowlite' | 'ggml' | 'autodetect';
  /**
   * Define where the graph should be executed.
   * # Variants
   * 
   * ## `"cpu"`
   * 
   * ## `"gpu"`
   * 
   * ## `"tpu"`
   */
  export type ExecutionTarget = 'cpu' | 'gpu' | 'tpu';
  /**
   * The graph initialization data.
   * 
   * This gets bundled up into an array of buffers because implementing backends may encode their
   * graph IR in parts (e.g., OpenVINO stores its IR and weights separately).
   */
  export type GraphBuilder = Uint8Array;
  
  export class Graph implements Disposable {
    /**
     * This type does not have a public constructor.
     */
    private constructor();
    initExecutionContext(): GraphExecutionContext;
    [Symbol.dispose](): void;
  }
}
