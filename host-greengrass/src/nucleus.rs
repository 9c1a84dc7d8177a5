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
//! * **Calls block, one publish at a time.** Each call waits for the
//!   nucleus's answer (up to the SDK's 10 s), and PublishToIoTCore and
//!   PublishToTopic share one lock in the SDK, held until the answer. So
//!   publishes go through one thread of their own (`verge-ipc`), in the order
//!   they were asked for, never on a tokio worker; a publish that waits to be
//!   retried waits outside it (`uplink::ipc`), so local pub/sub goes on.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;

use gg_sdk::Sdk;
pub use gg_sdk::{ComponentState, Error as IpcError, Qos};
use serde_json::json;
use tokio::sync::oneshot;

use crate::log;
use crate::metrics::Metrics;

/// The variables a nucleus gives each component it runs (both nuclei).
pub const SOCKET_ENV: &str = "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT";
pub const TOKEN_ENV: &str = "SVCUID";

/// Local publishes waiting for the IPC thread; more are dropped (and
/// counted) rather than queued without bound behind a slow nucleus. Publishes
/// to IoT Core are never refused for them: the uplink has one at a time.
const LOCAL_QUEUE: usize = 256;

/// Largest message one publish carries (topic and payload). The SDK's IPC
/// packet is at most 10,000 bytes (`GG_IPC_MAX_MSG_LEN`, fixed when it is
/// compiled; nucleus lite's IPC server has the same bound) and the payload
/// travels in it as base64: 7,323 payload bytes passed with a 21-byte topic,
/// 7,324 did not. 7,000 leaves room for the request's own fields.
pub const MAX_MESSAGE: usize = 7000;

/// What a nucleus gives the process it runs: read once, at start-up.
#[derive(Debug, Clone)]
pub struct Env {
    /// The nucleus's IPC socket (the SDK reads the variables itself; this
    /// names the socket in errors).
    pub socket: std::path::PathBuf,
}

impl Env {
    /// The nucleus this process runs under, if any (both variables set).
    pub fn from_process() -> Option<Env> {
        let socket = std::env::var_os(SOCKET_ENV)?;
        std::env::var_os(TOKEN_ENV)?;
        Some(Env {
            socket: socket.into(),
        })
    }
}

/// A publish for the IPC thread.
enum Publish {
    /// Local pub/sub (PublishToTopic, binary message), best effort.
    Local { topic: String, payload: Vec<u8> },
    /// PublishToIoTCore; the nucleus's answer goes back.
    IotCore {
        topic: String,
        payload: Vec<u8>,
        qos: Qos,
        answer: oneshot::Sender<Result<(), IpcError>>,
    },
}

/// The connected nucleus.
pub struct Nucleus {
    sdk: Sdk,
    queue: mpsc::Sender<Publish>,
    /// Local publishes in `queue`.
    local_queued: AtomicUsize,
    metrics: Arc<Metrics>,
}

static CONNECTED: AtomicBool = AtomicBool::new(false);

impl Nucleus {
    /// Connects to the nucleus `env` names (blocking; once per process).
    pub fn connect(env: &Env, metrics: Arc<Metrics>) -> Result<Arc<Nucleus>, String> {
        if CONNECTED.swap(true, Ordering::SeqCst) {
            return Err("the Greengrass IPC connection is made once per process".into());
        }
        let sdk = Sdk::init();
        sdk.connect().map_err(|e| {
            format!(
                "connecting to the Greengrass nucleus at {}: {e}",
                env.socket.display()
            )
        })?;
        let (queue, rx) = mpsc::channel();
        let nucleus = Arc::new(Nucleus {
            sdk,
            queue,
            local_queued: AtomicUsize::new(0),
            metrics,
        });
        let n = nucleus.clone();
        thread::Builder::new()
            .name("verge-ipc".into())
            .spawn(move || n.publisher(rx))
            .map_err(|e| format!("starting the IPC thread: {e}"))?;
        Ok(nucleus)
    }

    /// PublishToIoTCore. `Ok` means the nucleus took the message (the classic
    /// nucleus spooled it; nucleus lite wrote it to its MQTT connection), not
    /// that IoT Core acknowledged it.
    pub async fn publish_to_iot_core(
        &self,
        topic: &str,
        payload: &[u8],
        qos: Qos,
    ) -> Result<(), IpcError> {
        let (answer, rx) = oneshot::channel();
        let publish = Publish::IotCore {
            topic: topic.to_owned(),
            payload: payload.to_vec(),
            qos,
            answer,
        };
        self.queue.send(publish).map_err(|_| IpcError::Fatal)?;
        rx.await.unwrap_or(Err(IpcError::Fatal))
    }

    /// UpdateState, blocking until the nucleus answers.
    pub fn update_state(&self, state: ComponentState) -> Result<(), IpcError> {
        self.sdk.update_state(state)
    }

    /// Queues `payload` for local pub/sub on `topic` (device applications
    /// subscribed with SubscribeToTopic); `Err` says why it was not.
    pub fn publish_local(&self, topic: &str, payload: Vec<u8>) -> Result<(), String> {
        let refused = |why: String| {
            self.metrics.local_failed.fetch_add(1, Ordering::Relaxed);
            Err(why)
        };
        let size = topic.len() + payload.len();
        if size > MAX_MESSAGE {
            return refused(format!(
                "message of {size} bytes is over the {MAX_MESSAGE} bytes one Greengrass IPC publish carries"
            ));
        }
        if self.local_queued.fetch_add(1, Ordering::SeqCst) >= LOCAL_QUEUE {
            self.local_queued.fetch_sub(1, Ordering::SeqCst);
            return refused(format!(
                "{LOCAL_QUEUE} local publishes are already waiting for the nucleus"
            ));
        }
        let publish = Publish::Local {
            topic: topic.to_owned(),
            payload,
        };
        self.queue
            .send(publish)
            .or_else(|_| refused("the IPC thread is gone".into()))
    }

    fn publisher(&self, rx: mpsc::Receiver<Publish>) {
        for publish in rx {
            match publish {
                Publish::Local { topic, payload } => {
                    self.local_queued.fetch_sub(1, Ordering::SeqCst);
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
                Publish::IotCore {
                    topic,
                    payload,
                    qos,
                    answer,
                } => {
                    // The asker may be gone (its session ended): nothing to tell.
                    let _ = answer.send(self.sdk.publish_to_iot_core(&topic, &payload, qos));
                }
            }
        }
    }
}
