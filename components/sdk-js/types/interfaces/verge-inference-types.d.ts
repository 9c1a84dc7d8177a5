declare module 'verge:inference/types@0.1.0' {
  /**
   * One unit of work: a payload and what the host knows about it.
   */
  export interface Request {
    /**
     * MIME type of `body` as the caller declared it ("" when unknown).
     */
    contentType: string,
    body: Uint8Array,
    /**
     * Caller-supplied attributes: HTTP headers at the edge, `--attr` on the device.
     * Keys are lower-case.
     */
    attributes: Array<[string, string]>,
    /**
     * True when the host could not pass the whole payload (an edge body over
     * its include-body limit). A component should `defer` rather than guess.
     */
    truncated: boolean,
  }
  /**
   * A generated answer.
   */
  export interface Response {
    status: number,
    contentType: string,
    body: Uint8Array,
    headers: Array<[string, string]>,
  }
  export type Outcome = OutcomeRespond | OutcomeAnnotate | OutcomeDefer;
  /**
   * Answer now with this response.
   */
  export interface OutcomeRespond {
    tag: 'respond',
    val: Response,
  }
  /**
   * Let the request go on, with these headers / attributes added.
   */
  export interface OutcomeAnnotate {
    tag: 'annotate',
    val: Array<[string, string]>,
  }
  /**
   * Beyond what this placement can do: hand over to the origin or the cloud, with a reason.
   */
  export interface OutcomeDefer {
    tag: 'defer',
    val: string,
  }
  export type Error = ErrorInvalidInput | ErrorModel | ErrorInternal;
  /**
   * The request itself is wrong (a 4xx): the message says what was expected.
   */
  export interface ErrorInvalidInput {
    tag: 'invalid-input',
    val: string,
  }
  /**
   * The model or its engine failed.
   */
  export interface ErrorModel {
    tag: 'model',
    val: string,
  }
  /**
   * Anything else that went wrong inside the component.
   */
  export interface ErrorInternal {
    tag: 'internal',
    val: string,
  }
}
