//! The Greengrass nucleus, when verge-device runs as one of its components:
//! the process's one IPC connection, through AWS's own
//! `aws-greengrass-component-sdk` (crate `gg_sdk`), which speaks to the
//! classic nucleus and to nucleus lite alike.
//!
//! What the SDK imposes, and how verge lives with it:
//!
//! * **One connection per process, for good.** `Sdk::init` panics the second
//!   time and a failed `Sdk::connect` cannot be tried again, so
//!   [`Nucleus::connect`] runs once, at start-up; a failure is fatal (exit 1,
//!   and Greengrass starts the component again).
//! * **A lost connection ends the process.** When the nucleus hangs up, the
//!   SDK's receive thread calls `_Exit(1)`: no destructor runs. Nothing is
//!   lost by it: state and outbox are committed to SQLite before anyone is
//!   answered, and a message leaves the outbox only once the nucleus took it.
//! * **Every call blocks** (up to the SDK's 10 s answer timeout), so none runs
//!   on a tokio worker: the ordered publishes to IoT Core have their own
//!   thread (`uplink::ipc`), best-effort calls (local pub/sub, state) go
//!   through [`Nucleus::publish_local`] to a second one, with a bounded queue.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;

use gg_sdk::Sdk;
pub use gg_sdk::{ComponentState, Error as IpcError, Qos};
use serde_json::json;

use crate::log;
use crate::metrics::Metrics;

/// The variables a nucleus gives each component it runs (both nuclei).
pub const SOCKET_ENV: &str = "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT";
pub const TOKEN_ENV: &str = "SVCUID";

/// Best-effort calls that may wait for the notify thread; more are dropped
/// (and counted) rather than queued without bound behind a slow nucleus.
const NOTIFY_QUEUE: usize = 256;

/// Does this process run under a Greengrass nucleus?
pub fn present() -> bool {
    std::env::var_os(SOCKET_ENV).is_some() && std::env::var_os(TOKEN_ENV).is_some()
}

/// A best-effort call, made once: local pub/sub (PublishToTopic, binary).
struct Notify {
    topic: String,
    payload: Vec<u8>,
}

/// The connected nucleus.
pub struct Nucleus {
    sdk: Sdk,
    notify: mpsc::SyncSender<Notify>,
    metrics: Arc<Metrics>,
}

static CONNECTED: AtomicBool = AtomicBool::new(false);

impl Nucleus {
    /// Connects to the nucleus named by [`SOCKET_ENV`] and [`TOKEN_ENV`]
    /// (blocking; once per process).
    pub fn connect(metrics: Arc<Metrics>) -> Result<Arc<Nucleus>, String> {
        if !present() {
            return Err(format!(
                "not under a Greengrass nucleus: {SOCKET_ENV} and {TOKEN_ENV} are not set \
                 (run verge-device as a Greengrass component)"
            ));
        }
        if CONNECTED.swap(true, Ordering::SeqCst) {
            return Err("the Greengrass IPC connection is made once per process".into());
        }
        let socket = std::env::var_os(SOCKET_ENV).unwrap_or_default();
        let sdk = Sdk::init();
        sdk.connect().map_err(|e| {
            format!(
                "connecting to the Greengrass nucleus at {}: {e}",
                std::path::Path::new(&socket).display()
            )
        })?;
        let (notify, rx) = mpsc::sync_channel(NOTIFY_QUEUE);
        let nucleus = Arc::new(Nucleus {
            sdk,
            notify,
            metrics,
        });
        let n = nucleus.clone();
        thread::Builder::new()
            .name("verge-ipc-notify".into())
            .spawn(move || n.notifier(rx))
            .map_err(|e| format!("starting the IPC notify thread: {e}"))?;
        Ok(nucleus)
    }

    /// PublishToIoTCore, blocking until the nucleus answers. `Ok` means the
    /// nucleus took the message (the classic nucleus spooled it; nucleus lite
    /// wrote it to its MQTT connection), not that IoT Core acknowledged it.
    pub fn publish_to_iot_core(
        &self,
        topic: &str,
        payload: &[u8],
        qos: Qos,
    ) -> Result<(), IpcError> {
        self.sdk.publish_to_iot_core(topic, payload, qos)
    }

    /// UpdateState, blocking until the nucleus answers.
    pub fn update_state(&self, state: ComponentState) -> Result<(), IpcError> {
        self.sdk.update_state(state)
    }

    /// Queues `payload` for local pub/sub on `topic` (device applications
    /// subscribed with SubscribeToTopic). `false`: the queue is full, dropped.
    pub fn publish_local(&self, topic: &str, payload: Vec<u8>) -> bool {
        let queued = self
            .notify
            .try_send(Notify {
                topic: topic.to_owned(),
                payload,
            })
            .is_ok();
        if !queued {
            self.metrics.local_failed.fetch_add(1, Ordering::Relaxed);
        }
        queued
    }

    fn notifier(&self, rx: mpsc::Receiver<Notify>) {
        for Notify { topic, payload } in rx {
            let counter = match self.sdk.publish_to_topic_binary(&topic, &payload) {
                Ok(()) => &self.metrics.local_published,
                Err(e) => {
                    log::warn(
                        "local publish failed",
                        json!({ "topic": topic, "error": e.to_string() }),
                    );
                    &self.metrics.local_failed
                }
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}
