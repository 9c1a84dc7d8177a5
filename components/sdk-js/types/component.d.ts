/// <reference path="./interfaces/verge-inference-handler.d.ts" />
/// <reference path="./interfaces/verge-inference-host.d.ts" />
/// <reference path="./interfaces/verge-inference-types.d.ts" />
/// <reference path="./interfaces/wasi-config-store.d.ts" />
/// <reference path="./interfaces/wasi-keyvalue-atomics.d.ts" />
/// <reference path="./interfaces/wasi-keyvalue-store.d.ts" />
/// <reference path="./interfaces/wasi-nn-errors.d.ts" />
/// <reference path="./interfaces/wasi-nn-graph.d.ts" />
/// <reference path="./interfaces/wasi-nn-inference.d.ts" />
/// <reference path="./interfaces/wasi-nn-tensor.d.ts" />
declare module 'verge:inference/component@0.1.0' {
  export type * as VergeInferenceHost010 from 'verge:inference/host@0.1.0'; // import verge:inference/host@0.1.0
  export type * as VergeInferenceTypes010 from 'verge:inference/types@0.1.0'; // import verge:inference/types@0.1.0
  export type * as WasiConfigStore020Rc1 from 'wasi:config/store@0.2.0-rc.1'; // import wasi:config/store@0.2.0-rc.1
  export type * as WasiKeyvalueAtomics020Draft from 'wasi:keyvalue/atomics@0.2.0-draft'; // import wasi:keyvalue/atomics@0.2.0-draft
  export type * as WasiKeyvalueStore020Draft from 'wasi:keyvalue/store@0.2.0-draft'; // import wasi:keyvalue/store@0.2.0-draft
  export type * as WasiNnErrors020Rc20241028 from 'wasi:nn/errors@0.2.0-rc-2024-10-28'; // import wasi:nn/errors@0.2.0-rc-2024-10-28
  export type * as WasiNnGraph020Rc20241028 from 'wasi:nn/graph@0.2.0-rc-2024-10-28'; // import wasi:nn/graph@0.2.0-rc-2024-10-28
  export type * as WasiNnInference020Rc20241028 from 'wasi:nn/inference@0.2.0-rc-2024-10-28'; // import wasi:nn/inference@0.2.0-rc-2024-10-28
  export type * as WasiNnTensor020Rc20241028 from 'wasi:nn/tensor@0.2.0-rc-2024-10-28'; // import wasi:nn/tensor@0.2.0-rc-2024-10-28
  export * as handler from 'verge:inference/handler@0.1.0'; // export verge:inference/handler@0.1.0
}
