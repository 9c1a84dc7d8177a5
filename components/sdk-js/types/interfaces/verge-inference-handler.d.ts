/// <reference path="./verge-inference-types.d.ts" />
declare module 'verge:inference/handler@0.1.0' {
  export function handle(req: Request): Outcome;
  export type Request = import('verge:inference/types@0.1.0').Request;
  export type Outcome = import('verge:inference/types@0.1.0').Outcome;
  export type Error = import('verge:inference/types@0.1.0').Error;
}
