//! The uplink: what carries the outbox to the cloud. The [`Connector`] /
//! [`Uplink`] traits are the seam (MQTT with rumqttc, Greengrass IPC's
//! PublishToIoTCore), [`AnyConnector::from_config`] the one factory that
//! picks one by `[uplink] type`, and [`run_sender`] the one loop that drains
//! the outbox through any of them:
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

use crate::config::{Config, UplinkKind};
use crate::log;
use crate::metrics::Metrics;
use crate::nucleus::Nucleus;
use crate::outbox::{Message, Outbox};

pub mod ipc;
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

/// The configured uplink, whichever it is: the one place that knows every
/// kind ([`Connector::from_config`]); the daemon and the sender see only this.
pub enum AnyConnector {
    Mqtt(Box<mqtt::MqttConnector>),
    GreengrassIpc(ipc::IpcConnector),
}

/// A live connection of an [`AnyConnector`].
pub enum AnyUplink {
    Mqtt(mqtt::MqttUplink),
    GreengrassIpc(ipc::IpcUplink),
}

impl AnyConnector {
    /// The uplink the configuration names, its settings checked (TLS files
    /// read); `None` when nothing goes to the cloud. `nucleus`: the
    /// connection to the Greengrass nucleus, when the daemon runs under one.
    pub fn from_config(
        config: &Config,
        nucleus: Option<&Arc<Nucleus>>,
    ) -> Result<Option<AnyConnector>, UplinkError> {
        Ok(match config.uplink_kind() {
            None => None,
            Some(UplinkKind::Mqtt) => {
                let mqtt = config.mqtt.as_ref().ok_or_else(|| {
                    UplinkError::Setup("the mqtt uplink needs an [mqtt] section".into())
                })?;
                Some(AnyConnector::Mqtt(Box::new(mqtt::MqttConnector::new(
                    mqtt,
                )?)))
            }
            Some(UplinkKind::GreengrassIpc) => {
                let nucleus = nucleus.ok_or_else(|| {
                    UplinkError::Setup(format!(
                        "the greengrass-ipc uplink needs a Greengrass nucleus ({} and {} are not set): \
                         run verge-device as a Greengrass component, or configure [mqtt]",
                        crate::nucleus::SOCKET_ENV,
                        crate::nucleus::TOKEN_ENV
                    ))
                })?;
                Some(AnyConnector::GreengrassIpc(ipc::IpcConnector::new(
                    nucleus.clone(),
                    config.uplink_retry_max(),
                )))
            }
        })
    }

    pub fn kind(&self) -> UplinkKind {
        match self {
            AnyConnector::Mqtt(_) => UplinkKind::Mqtt,
            AnyConnector::GreengrassIpc(_) => UplinkKind::GreengrassIpc,
        }
    }

    /// The largest message this uplink carries (the outbox refuses larger).
    pub fn max_message(&self) -> usize {
        match self {
            AnyConnector::Mqtt(_) => mqtt::MAX_PACKET,
            AnyConnector::GreengrassIpc(_) => ipc::MAX_MESSAGE,
        }
    }

    /// How the sender drains the outbox through it.
    pub fn sender_options(&self, config: &Config) -> SenderOptions {
        let (window, max_backoff) = match self {
            AnyConnector::Mqtt(c) => c.pacing(),
            AnyConnector::GreengrassIpc(c) => c.pacing(),
        };
        SenderOptions {
            window,
            max_backoff,
            health_topic: config.health.topic.clone(),
            health_interval: config.health_interval(),
        }
    }
}

impl Connector for AnyConnector {
    type Uplink = AnyUplink;

    async fn connect(&self) -> Result<AnyUplink, UplinkError> {
        match self {
            AnyConnector::Mqtt(c) => c.connect().await.map(AnyUplink::Mqtt),
            AnyConnector::GreengrassIpc(c) => c.connect().await.map(AnyUplink::GreengrassIpc),
        }
    }
}

impl Uplink for AnyUplink {
    fn send(&mut self, msg: &Message) -> Result<(), UplinkError> {
        match self {
            AnyUplink::Mqtt(u) => u.send(msg),
            AnyUplink::GreengrassIpc(u) => u.send(msg),
        }
    }

    fn notify(&mut self, topic: &str, payload: Vec<u8>) -> Result<(), UplinkError> {
        match self {
            AnyUplink::Mqtt(u) => u.notify(topic, payload),
            AnyUplink::GreengrassIpc(u) => u.notify(topic, payload),
        }
    }

    async fn events(&mut self) -> Vec<Event> {
        match self {
            AnyUplink::Mqtt(u) => u.events().await,
            AnyUplink::GreengrassIpc(u) => u.events().await,
        }
    }
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
                metrics.uplink_connected.store(true, Ordering::Relaxed);
                metrics.uplink_connects.fetch_add(1, Ordering::Relaxed);
                log::info("uplink connected", json!({}));
                let reason =
                    drain(&mut up, &outbox, &metrics, &options, &health, &mut shutdown).await;
                metrics.uplink_connected.store(false, Ordering::Relaxed);
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
                    metrics.uplink_published.fetch_add(acked.len() as u64, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    //! The sender against a scripted uplink: the seam, without a broker.

    use std::sync::Mutex;

    use tokio::sync::mpsc;

    use super::*;
    use crate::config::Policy;

    /// Every connection attempt takes the next script: `None` refuses,
    /// `Some(n)` accepts, acknowledges the first `n` messages it is sent, then drops.
    struct Scripted {
        scripts: Mutex<VecDeque<Option<usize>>>,
        sent: Arc<Mutex<Vec<String>>>,
    }

    struct Link {
        budget: usize,
        sent: Arc<Mutex<Vec<String>>>,
        tx: mpsc::UnboundedSender<Event>,
        rx: mpsc::UnboundedReceiver<Event>,
    }

    impl Connector for Scripted {
        type Uplink = Link;
        async fn connect(&self) -> Result<Link, UplinkError> {
            let script = self.scripts.lock().unwrap().pop_front().flatten();
            let Some(budget) = script else {
                return Err(UplinkError::Connect("refused".into()));
            };
            let (tx, rx) = mpsc::unbounded_channel();
            Ok(Link {
                budget,
                sent: self.sent.clone(),
                tx,
                rx,
            })
        }
    }

    impl Uplink for Link {
        fn send(&mut self, msg: &Message) -> Result<(), UplinkError> {
            self.sent.lock().unwrap().push(msg.id.clone());
            let event = if self.budget == 0 {
                Event::Lost("dropped".into())
            } else {
                self.budget -= 1;
                Event::Acked(msg.seq)
            };
            let _ = self.tx.send(event);
            Ok(())
        }
        fn notify(&mut self, _: &str, _: Vec<u8>) -> Result<(), UplinkError> {
            Ok(())
        }
        async fn events(&mut self) -> Vec<Event> {
            let mut out = vec![self.rx.recv().await.expect("sender alive")];
            while let Ok(e) = self.rx.try_recv() {
                out.push(e);
            }
            out
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn drains_in_order_through_refusals_and_drops() {
        let dir = std::env::temp_dir().join(format!("verge-sender-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let outbox =
            Arc::new(Outbox::open(&dir.join("o.db"), 1 << 20, 1 << 16, Policy::RejectNew).unwrap());
        let ids: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
        for id in &ids {
            outbox.push(id, "t", b"{}").unwrap();
        }
        let sent = Arc::new(Mutex::new(Vec::new()));
        // Refused, then 3 acknowledged and dropped, refused, then all the rest.
        let connector = Scripted {
            scripts: Mutex::new([None, Some(3), None, Some(usize::MAX)].into()),
            sent: sent.clone(),
        };
        let metrics = Arc::new(Metrics::new(&[]));
        let options = SenderOptions {
            window: 4,
            max_backoff: Duration::from_millis(1),
            health_topic: "h".into(),
            health_interval: Duration::from_secs(60),
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run_sender(
            connector,
            outbox.clone(),
            metrics.clone(),
            options,
            || json!({}),
            stop_rx,
        ));
        for _ in 0..500 {
            if outbox.stats().depth.load(Ordering::Relaxed) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop_tx.send(true).unwrap();
        task.await.unwrap();
        assert_eq!(outbox.stats().depth.load(Ordering::Relaxed), 0);
        assert_eq!(metrics.uplink_connects.load(Ordering::Relaxed), 2);
        assert_eq!(metrics.uplink_published.load(Ordering::Relaxed), 10);
        // First sends are in order; after the drop, the sender starts again
        // from the oldest unacknowledged message.
        let sent = sent.lock().unwrap().clone();
        let mut seen = std::collections::HashSet::new();
        let firsts: Vec<&String> = sent.iter().filter(|id| seen.insert(*id)).collect();
        assert_eq!(firsts, ids.iter().collect::<Vec<_>>());
        let resumed = sent.iter().rposition(|id| id == "m3").unwrap();
        assert_eq!(sent[resumed..], ids[3..]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
