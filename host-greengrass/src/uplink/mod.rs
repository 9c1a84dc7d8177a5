//! The uplink: what carries the outbox to the cloud. The [`Connector`] /
//! [`Uplink`] traits are the seam (MQTT with rumqttc today, Greengrass IPC's
//! PublishToIoTCore later); [`run_sender`] is the one loop that drains the
//! outbox through any of them:
//!
//! * messages go out oldest first, at most `window` unacknowledged at a time;
//! * a message leaves the outbox only once the other side acknowledged it;
//! * on a lost connection everything unacknowledged is sent again from the
//!   oldest, after a backoff; ids inside the payloads let the cloud drop the
//!   duplicates this can make.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

use crate::log;
use crate::metrics::Metrics;
use crate::outbox::{Message, Outbox};

pub mod mqtt;

#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("connecting: {0}")]
    Connect(String),
    #[error("connection lost: {0}")]
    Lost(String),
    #[error("{0}")]
    Setup(String),
}

/// What a connected uplink reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The message with this `seq` was acknowledged.
    Acked(u64),
    /// The connection is gone; the uplink is of no further use.
    Lost(String),
}

/// A live connection to the cloud.
pub trait Uplink: Send {
    /// Sends a message at least once; its acknowledgement comes from [`Uplink::events`].
    fn send(&mut self, msg: &Message) -> Result<(), UplinkError>;
    /// Sends without acknowledgement, best effort (health reports).
    fn notify(&mut self, topic: &str, payload: Vec<u8>) -> Result<(), UplinkError>;
    /// Waits for at least one event and returns all that are ready.
    /// Cancel-safe: dropping the future loses nothing.
    fn events(&mut self) -> impl Future<Output = Vec<Event>> + Send;
}

/// Makes connections.
pub trait Connector: Send + Sync + 'static {
    type Uplink: Uplink;
    fn connect(&self) -> impl Future<Output = Result<Self::Uplink, UplinkError>> + Send;
}

/// How the sender behaves.
#[derive(Debug, Clone)]
pub struct SenderOptions {
    /// Unacknowledged messages at most.
    pub window: usize,
    /// Longest wait between connection attempts (the wait doubles from 0.5 s).
    pub max_backoff: Duration,
    pub health_topic: String,
    pub health_interval: Duration,
}

/// Drains the outbox through connections from `connector` until `shutdown`
/// turns true. `health` makes the periodic health report.
pub async fn run_sender<C: Connector>(
    connector: C,
    outbox: Arc<Outbox>,
    metrics: Arc<Metrics>,
    options: SenderOptions,
    health: impl Fn() -> serde_json::Value + Send + Sync,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let attempt = tokio::select! {
            c = connector.connect() => c,
            _ = stopped(&mut shutdown) => return,
        };
        let reason = match attempt {
            Ok(mut up) => {
                backoff = Duration::from_millis(500);
                metrics.mqtt_connected.store(true, Ordering::Relaxed);
                metrics.mqtt_connects.fetch_add(1, Ordering::Relaxed);
                log::info("uplink connected", json!({}));
                let reason =
                    drain(&mut up, &outbox, &metrics, &options, &health, &mut shutdown).await;
                metrics.mqtt_connected.store(false, Ordering::Relaxed);
                match reason {
                    None => return,
                    Some(r) => r,
                }
            }
            Err(e) => e.to_string(),
        };
        log::warn(
            "uplink down, retrying",
            json!({ "error": reason, "retry_in_ms": backoff.as_millis() as u64 }),
        );
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopped(&mut shutdown) => return,
        }
        backoff = (backoff * 2).min(options.max_backoff.max(Duration::from_millis(500)));
    }
}

/// Runs one connection: `None` when shutting down, else why it ended.
async fn drain<U: Uplink>(
    up: &mut U,
    outbox: &Arc<Outbox>,
    metrics: &Metrics,
    options: &SenderOptions,
    health: &(impl Fn() -> serde_json::Value + Send + Sync),
    shutdown: &mut watch::Receiver<bool>,
) -> Option<String> {
    let mut inflight: VecDeque<u64> = VecDeque::new();
    let mut last_sent = 0u64;
    let mut ticker = tokio::time::interval(options.health_interval);
    loop {
        let room = options.window.saturating_sub(inflight.len());
        if room > 0 {
            let o = outbox.clone();
            let next = blocking(move || o.after(last_sent, room)).await;
            match next {
                Ok(messages) => {
                    for m in messages {
                        if let Err(e) = up.send(&m) {
                            return Some(e.to_string());
                        }
                        inflight.push_back(m.seq);
                        last_sent = m.seq;
                    }
                }
                Err(e) => log::error("reading the outbox", json!({ "error": e })),
            }
        }
        let full = inflight.len() >= options.window;
        tokio::select! {
            events = up.events() => {
                let mut acked = Vec::new();
                let mut lost = None;
                for e in events {
                    match e {
                        Event::Acked(seq) => acked.push(seq),
                        Event::Lost(why) => lost = Some(why),
                    }
                }
                if !acked.is_empty() {
                    inflight.retain(|s| !acked.contains(s));
                    metrics.mqtt_published.fetch_add(acked.len() as u64, Ordering::Relaxed);
                    let o = outbox.clone();
                    if let Err(e) = blocking(move || o.remove(&acked)).await {
                        // They stay queued and go again: duplicates, never losses.
                        log::error("removing acknowledged messages", json!({ "error": e }));
                    }
                }
                if let Some(why) = lost {
                    return Some(why);
                }
            }
            _ = outbox.pushed(), if !full => {}
            _ = ticker.tick() => {
                let report = health().to_string().into_bytes();
                if let Err(e) = up.notify(&options.health_topic, report) {
                    return Some(e.to_string());
                }
            }
            _ = stopped(shutdown) => return None,
        }
    }
}

/// Resolves once `stop` turns true (or its sender is gone). Returns nothing
/// borrowed, so it can sit in a `select!` next to other awaits.
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Runs an outbox operation off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::outbox::OutboxError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("outbox task failed: {e}")),
    }
}
