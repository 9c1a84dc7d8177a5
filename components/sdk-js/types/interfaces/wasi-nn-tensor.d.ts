declare module 'wasi:nn/tensor@0.2.0-rc-2024-10-28' {
  /**
   * The dimensions of a tensor.
   * 
   * The array length matches the tensor rank and each element in the array describes the size of
   * each dimension
   */
  export type TensorDimensions = Uint32Array;
  /**
   * The type of the elements in a tensor.
   * # Variants
   * 
   * ## `"FP16"`
   * 
   * ## `"FP32"`
   * 
   * ## `"FP64"`
   * 
   * ## `"BF16"`
   * 
   * ## `"U8"`
   * 
   * ## `"I32"`
   * 
   * ## `"I64"`
   */
  export type TensorType = 'FP16' | 'FP32' | 'FP64' | 'BF16' | 'U8' | 'I32' | 'I64';
  /**
   * The tensor data.
   * 
   * Initially conceived as a sparse representation, each empty cell would be filled with zeros
   * and the array length must match the product of all of the dimensions and the number of bytes
   * in the type (e.g., a 2x2 tensor with 4-byte f32 elements would have a data array of length
   * 16). Naturally, this representation requires some knowledge of how to lay out data in
   * memory--e.g., using row-major ordering--and could perhaps be improved.
   */
  export type TensorData = Uint8Array;
  
  export class Tensor implements Disposable {
    constructor(dimensions: TensorDimensions, ty: TensorType, data: TensorData)
    /**
    * Describe the size of the tensor (e.g., 2x2x2x2 -> [2, 2, 2, 2]). To represent a tensor
    * containing a single value, use `[1]` for the tensor dimensions.
    */
    dimensions(): TensorDimensions;
    /**
    * Describe the type of element in the tensor (e.g., `f32`).
    */
    ty(): TensorType;
    /**
    * Return the tensor data.
    */
    data(): TensorData;
    [Symbol.dispose](): void;
  }
}
