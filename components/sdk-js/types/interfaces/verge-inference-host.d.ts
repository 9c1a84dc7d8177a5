declare module 'verge:inference/host@0.1.0' {
  export function getPlacement(): Placement;
  export function getLimits(): Limits;
  /**
   * Milliseconds left before the host stops this call.
   */
  export function remainingMs(): bigint;
  /**
   * # Variants
   * 
   * ## `"device"`
   * 
   * A device host (`verge-device serve`).
   * ## `"edge-viewer"`
   * 
   * CloudFront viewer-request / viewer-response triggers.
   * ## `"edge-origin"`
   * 
   * CloudFront origin-request / origin-response triggers.
   * ## `"local"`
   * 
   * A one-shot run on a developer's machine (`verge-device run`).
   */
  export type Placement = 'device' | 'edge-viewer' | 'edge-origin' | 'local';
  export interface Limits {
    /**
     * Largest request body the host will pass in whole.
     */
    maxBodyBytes: bigint,
    /**
     * Wall-clock budget of one call, in milliseconds.
     */
    deadlineMs: bigint,
    /**
     * Linear-memory bound of one instance, in bytes.
     */
    memoryBytes: bigint,
  }
}
