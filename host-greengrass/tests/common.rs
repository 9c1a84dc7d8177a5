//! Where the tests find the built components and the fetched models: see
//! [`verge_device::testkit`].

#![allow(dead_code)]

use std::path::PathBuf;

pub use verge_device::testkit::wasm;

/// Magika's model, extracted by `models/fetch.py`.
pub fn magika() -> PathBuf {
    verge_device::testkit::model(
        "magika-standard-v3-3",
        "model.onnx",
        "python3 models/fetch.py",
    )
}

/// The hostile probe's attacks under a 64 MiB bound: the command, the error
/// kind it must end with, and a phrase of the message.
pub const HOSTILE_64_MIB: [(&str, &str, &str); 6] = [
    // 3 GiB of tensors in the host.
    ("nn-hoard:3000:1048576", "quota", "a call may hold 67108864"),
    // 20,000 tiny tensors: the resource bound.
    ("nn-hoard:20000:1", "quota", "holds 4096 host resources"),
    // 10,000 keyvalue buckets: the same bound, seen by the component.
    ("kv-open:10000", "internal", "holds 4096 host resources"),
    // Linear memory without end.
    ("alloc", "memory", "67108864"),
    // 300 MiB of state: over the component's state budget.
    ("kv-fill:300:1048576", "internal", "state quota"),
    // A 20 MB answer: over the outcome bound (a quarter of the memory bound).
    ("big:20000000", "quota", "a call may return 16777216"),
];
