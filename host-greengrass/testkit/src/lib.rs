//! verge-testkit: helpers for verge's tests, benchmarks and examples, kept out
//! of verge-device's library (a dev-only crate; never published).
//!
//! * [`paths`]: where the built components, the fetched models and the
//!   reference files are; scratch folders and digests;
//! * [`mod@engines`]: the device engines the tests compare (ONNX Runtime, OpenVINO);
//! * [`host`]: a runtime with one component prepared, called in-process;
//! * [`agree`]: two engines run on the same inputs and compared;
//! * [`serve`]: a real `verge-device serve` process, its HTTP client and its
//!   configurations;
//! * [`mqtt`]: a real broker (mosquitto), certificates made at test time, a
//!   subscriber.
//!
//! The in-process helpers are also at the crate's root.

pub mod agree;
pub mod engines;
pub mod host;
pub mod mqtt;
pub mod paths;
pub mod serve;

pub use agree::{Agreement, backends_agree, engines_agree, node_runs_by_provider, openvino_agrees};
pub use engines::{engines, onnxruntime, onnxruntime_lib, openvino, openvino_child, openvino_lib};
pub use host::{HOSTILE_64_MIB, Host, load_each, probe_nn_case, suite_on_device_host, zero_inputs};
pub use paths::{magika, model, models_dir, reference, scratch, sha256, wasm, workspace};
