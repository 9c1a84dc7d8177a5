// Types of verge-sdk for JavaScript (src/index.js). The WIT's own types are
// generated from wit/ into ../types/ (gen-types.mjs; the test command checks
// they are current): `import type { Request } from "verge:inference/types@0.1.0"`.
/// <reference path="../types/component.d.ts" />
import type { Request as WitRequest, Outcome as WitOutcome } from "verge:inference/types@0.1.0";

/** Why a request got no outcome: `verge:inference/types.error`. */
export class VergeError extends Error {
  kind: "invalid-input" | "model" | "internal";
  constructor(kind: "invalid-input" | "model" | "internal", message: string);
}
/** The request itself is wrong (a 4xx). */
export function invalid(message: string): VergeError;
/** The model or its engine failed. */
export function modelError(message: string): VergeError;
/** Anything else (a bad setting, a bug). */
export function internal(message: string): VergeError;

export function utf8Decode(bytes: Uint8Array): string;
export function utf8Encode(text: string): Uint8Array;
/** A 32-bit float as Rust's `{}` prints it (shortest round trip, no exponent). */
export function formatF32(x: number): string;

/** One request: `verge:inference/types.request`, with helpers. */
export class Request {
  contentType: string;
  body: Uint8Array;
  /** Lower-case keys: HTTP headers at the edge, `--attr` on the device. */
  attributes: Array<[string, string]>;
  /** The host could not pass the whole body (an edge include-body limit). */
  truncated: boolean;
  bytes(): Uint8Array;
  /** The body as UTF-8 text (invalid-input when it is not). */
  text(): string;
  /** The body parsed as JSON (invalid-input when it is not). */
  json(): unknown;
  attribute(key: string): string | undefined;
}

export type Headers = Record<string, string | number> | Array<[string, string | number]>;

/** What a handler returns. */
export class Outcome {
  tag: WitOutcome["tag"];
  withHeader(key: string, value: string | number): Outcome;
}
export function respond(status: number, body: Uint8Array | string, options?: { contentType?: string; headers?: Headers }): Outcome;
export function json(status: number, value: unknown, headers?: Headers): Outcome;
export function annotate(headers: Headers): Outcome;
export function defer(reason: string): Outcome;

export type TensorType = "FP32" | "FP64" | "I32" | "I64" | "U8";
export type TensorValues = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array;

/** A tensor: dimensions and a TypedArray, checked when built and when read. */
export class Tensor {
  readonly dims: number[];
  readonly type: TensorType;
  readonly values: TensorValues;
  constructor(dims: number[], values: TensorValues);
  as(type: "FP32"): Float32Array;
  as(type: "FP64"): Float64Array;
  as(type: "I32"): Int32Array;
  as(type: "I64"): BigInt64Array;
  as(type: "U8"): Uint8Array;
  /** Checks the dimensions; null matches any size. */
  expectDims(expected: Array<number | null>): Tensor;
}

export class Outputs {
  get(name: string): Tensor;
  first(): Tensor;
}

/** A graph the host deployed by name, loaded once per instance. */
export class Model {
  readonly name: string;
  static load(name: string): Model;
  run(inputs: Record<string, Tensor> | Array<[string, Tensor]>): Outputs;
}

/** Per-deployment settings (`wasi:config`); empty counts as unset. */
export const settings: {
  get(key: string): string | undefined;
  string(key: string, fallback: string): string;
  number(key: string, fallback: number): number;
  boolean(key: string, fallback: boolean): boolean;
  withPrefix(prefix: string): Array<[string, string]>;
};

export function placement(): "device" | "edge-viewer" | "edge-origin" | "local";
export function remainingMs(): bigint;

/** The `handler` export: `export const handler = handle((req) => …)`. */
export function handle(fn: (req: Request) => Outcome): { handle(req: WitRequest): WitOutcome };
