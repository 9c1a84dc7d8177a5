declare module 'wasi:nn/errors@0.2.0-rc-2024-10-28' {
  /**
   * # Variants
   * 
   * ## `"invalid-argument"`
   * 
   * Caller module passed an invalid argument.
   * ## `"invalid-encoding"`
   * 
   * Invalid encoding.
   * ## `"timeout"`
   * 
   * The operation timed out.
   * ## `"runtime-error"`
   * 
   * Runtime Error.
   * ## `"unsupported-operation"`
   * 
   * Unsupported operation.
   * ## `"too-large"`
   * 
   * Graph is too large.
   * ## `"not-found"`
   * 
   * Graph not found.
   * ## `"security"`
   * 
   * The operation is insecure or has insufficient privilege to be performed.
   * e.g., cannot access a hardware feature requested
   * ## `"unknown"`
   * 
   * The operation failed for an unspecified reason.
   */
  export type ErrorCode = 'invalid-argument' | 'invalid-encoding' | 'timeout' | 'runtime-error' | 'unsupported-operation' | 'too-large' | 'not-found' | 'security' | 'unknown';
  
  export class Error implements Disposable {
    /**
     * This type does not have a public constructor.
     */
    private constructor();
    /**
    * Return the error code.
    */
    code(): ErrorCode;
    /**
    * Errors can propagated with backend specific status through a string value.
    */
    data(): string;
    [Symbol.dispose](): void;
  }
}
