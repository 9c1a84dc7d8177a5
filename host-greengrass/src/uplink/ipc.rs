//! The Greengrass IPC uplink: the outbox goes to AWS IoT Core through the
//! nucleus (classic or lite) with PublishToIoTCore at QoS 1, over the
//! process's one IPC connection ([`crate::nucleus`]).
//!
//! * One thread (`verge-ipc`) makes the publishes one after another, so the
//!   order holds; a message the nucleus does not take is tried again, with
//!   backoff, before any later one goes. Health reports (QoS 0, one attempt)
//!   go through the same thread, so they never overtake a message either.
//! * The nucleus's answer is the acknowledgement: the classic nucleus has
//!   spooled the message (in memory unless its disk spooler is set up),
//!   nucleus lite has written it to its MQTT connection. It is not IoT Core's
//!   PUBACK. An error answer (nucleus lite offline, spooler full, not
//!   authorized, no answer in 10 s) is retried; the log says which.
//! * A connection per [`Connector::connect`] would be MQTT's way; here the
//!   connection is the process's, and each `connect` starts a *session* on
//!   it: the work of earlier sessions is dropped (a retry loop too), and the
//!   sender sends it again from the oldest unacknowledged message.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc;

use super::{Connector, Event, Uplink, UplinkError};
use crate::log;
use crate::nucleus::{Nucleus, Qos};
use crate::outbox::Message;

/// Largest message this uplink carries; the outbox refuses larger ones.
/// The SDK's IPC packet is at most 10,000 bytes (`GG_IPC_MAX_MSG_LEN`, fixed
/// when it is compiled; nucleus lite's IPC server has the same bound) and the
/// payload travels in it as base64: 7,323 bytes passed with a 21-byte topic,
/// 7,324 did not. 7,000 leaves room for any topic IoT Core allows (256 bytes).
pub const MAX_MESSAGE: usize = 7000;

/// Messages handed to the IPC thread at once (it sends them one by one).
const WINDOW: usize = 32;

enum Work {
    /// QoS 1, tried until the nucleus takes it (or the session ends).
    Publish {
        session: u64,
        seq: u64,
        topic: String,
        payload: Vec<u8>,
    },
    /// QoS 0, one attempt.
    Health { topic: String, payload: Vec<u8> },
}

/// The IPC thread, and where it reports.
struct Worker {
    tx: std_mpsc::Sender<Work>,
    thread: JoinHandle<()>,
    session: Arc<AtomicU64>,
    events: Arc<Mutex<Option<mpsc::UnboundedSender<Event>>>>,
}

pub struct IpcConnector {
    nucleus: Arc<Nucleus>,
    retry_max: Duration,
    worker: Mutex<Option<Worker>>,
}

impl IpcConnector {
    pub fn new(nucleus: Arc<Nucleus>, retry_max: Duration) -> IpcConnector {
        IpcConnector {
            nucleus,
            retry_max: retry_max.max(Duration::from_millis(500)),
            worker: Mutex::new(None),
        }
    }

    /// Messages unacknowledged at once, and the longest wait between attempts.
    pub fn pacing(&self) -> (usize, Duration) {
        (WINDOW, self.retry_max)
    }

    fn start_worker(&self) -> Result<Worker, UplinkError> {
        let (tx, rx) = std_mpsc::channel();
        let session = Arc::new(AtomicU64::new(0));
        let events = Arc::new(Mutex::new(None));
        let publisher = Publisher {
            nucleus: self.nucleus.clone(),
            session: session.clone(),
            events: events.clone(),
            retry_max: self.retry_max,
        };
        let thread = thread::Builder::new()
            .name("verge-ipc".into())
            .spawn(move || publisher.run(rx))
            .map_err(|e| UplinkError::Setup(format!("starting the IPC thread: {e}")))?;
        Ok(Worker {
            tx,
            thread,
            session,
            events,
        })
    }
}

impl Connector for IpcConnector {
    type Uplink = IpcUplink;

    async fn connect(&self) -> Result<IpcUplink, UplinkError> {
        let mut worker = self.worker.lock().unwrap_or_else(|e| e.into_inner());
        if worker.as_ref().is_none_or(|w| w.thread.is_finished()) {
            *worker = Some(self.start_worker()?);
        }
        let w = worker.as_ref().expect("started above");
        let (tx, rx) = mpsc::unbounded_channel();
        *w.events.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        let session = w.session.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(IpcUplink {
            tx: w.tx.clone(),
            session,
            rx,
        })
    }
}

pub struct IpcUplink {
    tx: std_mpsc::Sender<Work>,
    session: u64,
    rx: mpsc::UnboundedReceiver<Event>,
}

fn gone<T>(_: T) -> UplinkError {
    UplinkError::Lost("the IPC thread is gone".into())
}

impl Uplink for IpcUplink {
    fn send(&mut self, msg: &Message) -> Result<(), UplinkError> {
        self.tx
            .send(Work::Publish {
                session: self.session,
                seq: msg.seq,
                topic: msg.topic.clone(),
                payload: msg.payload.clone(),
            })
            .map_err(gone)
    }

    fn notify(&mut self, topic: &str, payload: Vec<u8>) -> Result<(), UplinkError> {
        self.tx
            .send(Work::Health {
                topic: topic.to_owned(),
                payload,
            })
            .map_err(gone)
    }

    async fn events(&mut self) -> Vec<Event> {
        // Cancel-safe: recv loses nothing when dropped.
        let Some(first) = self.rx.recv().await else {
            return vec![Event::Lost("the IPC thread stopped".into())];
        };
        let mut out = vec![first];
        while let Ok(e) = self.rx.try_recv() {
            out.push(e);
        }
        out
    }
}

struct Publisher {
    nucleus: Arc<Nucleus>,
    session: Arc<AtomicU64>,
    events: Arc<Mutex<Option<mpsc::UnboundedSender<Event>>>>,
    retry_max: Duration,
}

impl Publisher {
    fn current(&self, session: u64) -> bool {
        self.session.load(Ordering::SeqCst) == session
    }

    fn run(self, rx: std_mpsc::Receiver<Work>) {
        for work in rx {
            match work {
                Work::Health { topic, payload } => {
                    if let Err(e) =
                        self.nucleus
                            .publish_to_iot_core(&topic, &payload, Qos::AtMostOnce)
                    {
                        log::warn(
                            "health report not taken by the nucleus",
                            json!({ "topic": topic, "error": e.to_string() }),
                        );
                    }
                }
                Work::Publish {
                    session,
                    seq,
                    topic,
                    payload,
                } => self.publish(session, seq, &topic, &payload),
            }
        }
    }

    /// Publishes until the nucleus takes it, or the session is over.
    fn publish(&self, session: u64, seq: u64, topic: &str, payload: &[u8]) {
        let mut wait = Duration::from_millis(500);
        while self.current(session) {
            let started = Instant::now();
            match self
                .nucleus
                .publish_to_iot_core(topic, payload, Qos::AtLeastOnce)
            {
                Ok(()) => {
                    let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
                    if let (true, Some(tx)) = (self.current(session), events.as_ref()) {
                        let _ = tx.send(Event::Acked(seq));
                    }
                    return;
                }
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
                    let end = Instant::now() + wait;
                    while self.current(session) && Instant::now() < end {
                        thread::sleep(
                            end.saturating_duration_since(Instant::now())
                                .min(Duration::from_millis(100)),
                        );
                    }
                    wait = (wait * 2).min(self.retry_max);
                }
            }
        }
    }
}
