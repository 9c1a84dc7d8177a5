//! The Greengrass IPC uplink: the outbox goes to AWS IoT Core through the
//! nucleus (classic or lite) with PublishToIoTCore at QoS 1, over the
//! process's one IPC connection ([`crate::nucleus`]).
//!
//! * Each [`Connector::connect`] starts a *session* on that connection: a
//!   task that publishes what the sender gives it one after another, so the
//!   order holds. A message the nucleus does not take is tried again, with
//!   backoff, before any later one goes; health reports (QoS 0, one attempt)
//!   wait their turn too, so they never overtake a message.
//! * The nucleus's answer is the acknowledgement: the classic nucleus has
//!   spooled the message (in memory unless its disk spooler is set up),
//!   nucleus lite has written it to its MQTT connection. It is not IoT Core's
//!   PUBACK. An error answer (nucleus lite offline, spooler full, not
//!   authorized, no answer in 10 s) is retried; the log says which.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{AnyConnector, Connector, Event, Kind, Uplink, UplinkError};
use crate::log;
use crate::nucleus::{Nucleus, Qos};
use crate::outbox::Message;

/// Largest message this uplink carries; the outbox refuses larger ones.
pub use crate::nucleus::MAX_MESSAGE;

/// Messages handed to a session at once (it sends them one by one).
const WINDOW: usize = 32;

enum Work {
    /// QoS 1, tried until the nucleus takes it.
    Publish {
        seq: u64,
        topic: String,
        payload: Vec<u8>,
    },
    /// QoS 0, one attempt: the latest report in the session's health slot.
    Health,
}

/// The latest health report not sent yet: a session busy retrying sends
/// one fresh report when it is free, not every tick it missed.
type HealthSlot = Arc<Mutex<Option<(String, Vec<u8>)>>>;

/// `[uplink] type = "greengrass-ipc"`: PublishToIoTCore through the nucleus
/// the daemon runs under (`retry_max_s` in `[uplink]`).
pub const KIND: Kind = Kind {
    name: "greengrass-ipc",
    check: |s| s.uplink.no_options("greengrass-ipc"),
    make: |s| {
        let nucleus = s.nucleus.ok_or_else(|| {
            UplinkError::Setup(format!(
                "the greengrass-ipc uplink needs a Greengrass nucleus ({} and {} are not set): \
                 run verge-device as a Greengrass component, or configure [mqtt]",
                crate::nucleus::SOCKET_ENV,
                crate::nucleus::TOKEN_ENV
            ))
        })?;
        let connector = IpcConnector::new(nucleus.clone(), s.uplink.retry_max());
        let (window, max_backoff) = connector.pacing();
        Ok(AnyConnector::new(
            KIND.name,
            MAX_MESSAGE,
            window,
            max_backoff,
            connector,
        ))
    },
};

pub struct IpcConnector {
    nucleus: Arc<Nucleus>,
    retry_max: Duration,
}

impl IpcConnector {
    pub fn new(nucleus: Arc<Nucleus>, retry_max: Duration) -> IpcConnector {
        IpcConnector { nucleus, retry_max }
    }

    /// Messages unacknowledged at once, and the longest wait between attempts.
    pub fn pacing(&self) -> (usize, Duration) {
        (WINDOW, self.retry_max)
    }
}

impl Connector for IpcConnector {
    type Uplink = IpcUplink;

    async fn connect(&self) -> Result<IpcUplink, UplinkError> {
        let (tx, work) = mpsc::unbounded_channel();
        let (events, rx) = mpsc::unbounded_channel();
        let health = HealthSlot::default();
        let session = session(
            self.nucleus.clone(),
            work,
            events,
            health.clone(),
            self.retry_max,
        );
        Ok(IpcUplink {
            tx,
            rx,
            health,
            task: tokio::spawn(session),
        })
    }
}

pub struct IpcUplink {
    tx: mpsc::UnboundedSender<Work>,
    rx: mpsc::UnboundedReceiver<Event>,
    health: HealthSlot,
    task: JoinHandle<()>,
}

impl Drop for IpcUplink {
    fn drop(&mut self) {
        // A retry loop ends with its session; the sender starts again from
        // the oldest unacknowledged message.
        self.task.abort();
    }
}

fn gone<T>(_: T) -> UplinkError {
    UplinkError::Lost("the IPC session ended".into())
}

impl Uplink for IpcUplink {
    fn send(&mut self, msg: &Message) -> Result<(), UplinkError> {
        self.tx
            .send(Work::Publish {
                seq: msg.seq,
                topic: msg.topic.clone(),
                payload: msg.payload.clone(),
            })
            .map_err(gone)
    }

    fn notify(&mut self, topic: &str, payload: Vec<u8>) -> Result<(), UplinkError> {
        let mut slot = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if slot.replace((topic.to_owned(), payload)).is_some() {
            return Ok(()); // the session has not sent the last one yet
        }
        self.tx.send(Work::Health).map_err(gone)
    }

    async fn events(&mut self) -> Vec<Event> {
        // Cancel-safe: recv loses nothing when dropped.
        let Some(first) = self.rx.recv().await else {
            return vec![Event::Lost("the IPC session ended".into())];
        };
        let mut out = vec![first];
        while let Ok(e) = self.rx.try_recv() {
            out.push(e);
        }
        out
    }
}

/// Publishes the session's work in order, each message until the nucleus takes it.
async fn session(
    nucleus: Arc<Nucleus>,
    mut work: mpsc::UnboundedReceiver<Work>,
    events: mpsc::UnboundedSender<Event>,
    health: HealthSlot,
    retry_max: Duration,
) {
    while let Some(w) = work.recv().await {
        let (seq, topic, payload) = match w {
            Work::Health => {
                let latest = health.lock().unwrap_or_else(|e| e.into_inner()).take();
                let Some((topic, payload)) = latest else {
                    continue;
                };
                let sent = nucleus
                    .publish_to_iot_core(&topic, &payload, Qos::AtMostOnce)
                    .await;
                if let Err(e) = sent {
                    log::warn(
                        "health report not taken by the nucleus",
                        json!({ "topic": topic, "error": e.to_string() }),
                    );
                }
                continue;
            }
            Work::Publish {
                seq,
                topic,
                payload,
            } => (seq, topic, payload),
        };
        let mut wait = Duration::from_millis(500);
        loop {
            let started = Instant::now();
            match nucleus
                .publish_to_iot_core(&topic, &payload, Qos::AtLeastOnce)
                .await
            {
                Ok(()) => break,
                Err(e) => {
                    // Offline (nucleus lite), spooler full, no answer, not
                    // authorized: the same message again, nothing after it meanwhile.
                    log::warn(
                        "the nucleus did not take a message, retrying",
                        json!({
                            "seq": seq, "topic": topic, "error": e.to_string(),
                            "call_ms": started.elapsed().as_millis() as u64,
                            "retry_in_ms": wait.as_millis() as u64,
                        }),
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(retry_max);
                }
            }
        }
        if events.send(Event::Acked(seq)).is_err() {
            return;
        }
    }
}
