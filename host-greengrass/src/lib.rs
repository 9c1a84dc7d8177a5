//! verge-device: the native device host.
//!
//! * [`nn`]: `wasi:nn` on `verge-nn` (tract, ONNX Runtime or compact), its wasmtime glue, and the named-graph registry;
//! * [`runtime`]: the engine, per-call stores; [`limits`]: the bounds of one call;
//! * [`state`]: component state behind `wasi:keyvalue` (in memory, or durable in SQLite);
//! * [`report`]: outcomes and errors as JSON;
//!
//! and the daemon (`verge-device serve`):
//!
//! * [`config`]: the daemon's configuration as a value (each section's type
//!   lives with its capability), read, checked in memory, written;
//! * [`cache`]: components compiled once, kept precompiled on disk;
//! * [`outbox`]: results bound for the cloud, durable until acknowledged;
//! * [`uplink`]: the sender that drains the outbox, through one of its
//!   [`uplink::KINDS`] (MQTT, Greengrass IPC); [`nucleus`]: the Greengrass nucleus's IPC connection;
//! * [`api`]: the local HTTP API; [`metrics`]: its Prometheus counters;
//!   [`pool`]: the threads calls run on;
//! * [`daemon`]: wiring it all together, health, shutdown; [`log`]: JSON lines;
//!
//! and its deployment (`verge-device recipe`):
//!
//! * [`recipe`]: a Greengrass v2 recipe and its artifacts for a configuration.

pub mod api;
pub mod cache;
pub mod config;
pub mod daemon;
pub mod limits;
pub mod log;
pub mod metrics;
pub mod nn;
pub mod nucleus;
pub mod outbox;
pub mod pool;
pub mod recipe;
pub mod report;
pub mod runtime;
pub mod state;
pub mod uplink;

/// This build's version, as the health report and the databases' `written_by`
/// say it. The test-only `schema-next` build (see [`state`]'s schema rule)
/// calls itself the next version.
pub const VERSION: &str = if cfg!(feature = "schema-next") {
    concat!(env!("CARGO_PKG_VERSION"), "+schema-next")
} else {
    env!("CARGO_PKG_VERSION")
};
