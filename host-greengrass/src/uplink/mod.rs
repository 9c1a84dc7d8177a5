//! The uplink: what carries the outbox to the cloud. The [`Connector`] /
//! [`Uplink`] traits are the seam (MQTT with rumqttc, Greengrass IPC's
//! PublishToIoTCore), [`KINDS`] the one list that `[uplink] type` picks
//! from, and [`run_sender`] the one loop that drains the outbox through any
//! of them:
//!
//! * messages go out oldest first, at most `window` unacknowledged at a time;
//! * a message leaves the outbox only once the other side acknowledged it;
//! * on a lost connection everything unacknowledged is sent again from the
//!   oldest, after a backoff; ids inside the payloads let the cloud drop the
//!   duplicates this can make.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

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

/// One kind of uplink: its name in `[uplink] type`, the check of its
/// settings (in memory, when the configuration is checked) and how it is
/// made at start-up (files read, nucleus joined).
pub struct Kind {
    pub name: &'static str,
    pub check: fn(&Sections) -> Result<(), String>,
    pub make: fn(&Sections) -> Result<AnyConnector, UplinkError>,
}

/// Every uplink verge knows. A new one is its module and a line here.
pub const KINDS: &[Kind] = &[mqtt::KIND, ipc::KIND];

/// The configuration an uplink is made from: `[uplink]` (its `type`, and the
/// kind's own settings beside it), `[mqtt]` (the mqtt uplink's, a section of
/// its own since the first release), and the nucleus the daemon runs under.
#[derive(Clone, Copy)]
pub struct Sections<'a> {
    pub uplink: &'a Settings,
    pub mqtt: Option<&'a mqtt::Settings>,
    pub nucleus: Option<&'a Arc<Nucleus>>,
}

/// `[uplink]`: what carries the outbox to the cloud.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Settings {
    /// One of [`KINDS`]; none: see [`Settings::kind`].
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The longest wait between two tries of a message the other side did
    /// not take (default 30 s; mqtt has `[mqtt] reconnect_max_s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_max_s: Option<u64>,
    /// The kind's own settings, read by its module ([`Settings::options`]).
    #[serde(flatten)]
    pub options: serde_json::Map<String, serde_json::Value>,
}

impl Settings {
    /// The uplink that carries the outbox, if any: `type`; else Greengrass
    /// IPC under a nucleus (when something goes to the cloud); else MQTT when
    /// there is an `[mqtt]` section; else IPC again when a route sends to the
    /// cloud (the one uplink that needs no settings: the daemon refuses to
    /// start outside a nucleus). Whether there is one at all does not depend
    /// on the nucleus.
    pub fn kind(&self, has_mqtt: bool, cloud: bool, nucleus: bool) -> Option<&'static str> {
        if let Some(kind) = &self.kind {
            KINDS.iter().find(|k| k.name == kind).map(|k| k.name)
        } else if nucleus && (cloud || has_mqtt) {
            Some(ipc::KIND.name)
        } else if has_mqtt {
            Some(mqtt::KIND.name)
        } else {
            cloud.then_some(ipc::KIND.name)
        }
    }

    /// The longest wait between two tries of a message.
    pub fn retry_max(&self) -> Duration {
        Duration::from_secs(self.retry_max_s.unwrap_or(30).max(1))
    }

    /// The kind's own settings beside `type`, as its module declares them.
    pub fn options<T: serde::de::DeserializeOwned>(&self, kind: &str) -> Result<T, String> {
        serde_json::from_value(serde_json::Value::Object(self.options.clone()))
            .map_err(|e| format!("[uplink] for type \"{kind}\": {e}"))
    }

    /// For a kind with no settings of its own in `[uplink]`.
    pub fn no_options(&self, kind: &str) -> Result<(), String> {
        match self.options.keys().next() {
            Some(key) => Err(format!("[uplink] {key}: not a setting of type \"{kind}\"")),
            None => Ok(()),
        }
    }

    /// Checks `[uplink]` in memory: a known type, settings it accepts, and
    /// the same for each kind the daemon may pick on its own.
    pub fn check(&self, mqtt: Option<&mqtt::Settings>, cloud: bool) -> Result<(), String> {
        if self.retry_max_s == Some(0) {
            return Err("uplink.retry_max_s must be positive".into());
        }
        if let Some(kind) = &self.kind
            && !KINDS.iter().any(|k| k.name == kind)
        {
            let known: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
            return Err(format!(
                "[uplink] type \"{kind}\": unknown variant, expected one of {}",
                known.join(", ")
            ));
        }
        let sections = Sections {
            uplink: self,
            mqtt,
            nucleus: None,
        };
        let mut checked = false;
        for nucleus in [false, true] {
            if let Some(name) = self.kind(mqtt.is_some(), cloud, nucleus) {
                let kind = KINDS.iter().find(|k| k.name == name).expect("a known kind");
                (kind.check)(&sections)?;
                checked = true;
            }
        }
        match self.options.keys().next() {
            Some(key) if !checked => Err(format!(
                "[uplink] {key}: no uplink is used (nothing goes to the cloud), so it has no settings"
            )),
            _ => Ok(()),
        }
    }

    /// Why `[mqtt]` would go unused under a nucleus, if it would.
    pub fn ignored_mqtt(&self, has_mqtt: bool) -> Option<&'static str> {
        (has_mqtt && self.kind.is_none()).then_some(
            "the configuration has [mqtt], but under a Greengrass nucleus the outbox goes through \
             Greengrass IPC and [mqtt] is not used (set [uplink] type = \"mqtt\" for a connection of verge's own)",
        )
    }
}

/// `[health]`: the periodic report the uplink sends (QoS 0).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    #[serde(default = "default_health_interval")]
    pub interval_s: u64,
    #[serde(default = "default_health_topic")]
    pub topic: String,
}

fn default_health_interval() -> u64 {
    60
}
fn default_health_topic() -> String {
    "verge/{thing}/health".into()
}

impl Default for Health {
    fn default() -> Self {
        Health {
            interval_s: default_health_interval(),
            topic: default_health_topic(),
        }
    }
}

impl Health {
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_s.max(1))
    }
}

/// The configured uplink, whichever kind it is; the daemon and the sender see only this.
pub struct AnyConnector {
    kind: &'static str,
    max_message: usize,
    window: usize,
    max_backoff: Duration,
    inner: Box<dyn DynConnector>,
}

impl AnyConnector {
    /// Wraps a kind's connector: `max_message` is the largest message it
    /// carries, `window` its unacknowledged messages at most, `max_backoff`
    /// the longest wait between attempts.
    pub fn new(
        kind: &'static str,
        max_message: usize,
        window: usize,
        max_backoff: Duration,
        connector: impl Connector,
    ) -> AnyConnector {
        AnyConnector {
            kind,
            max_message,
            window,
            max_backoff,
            inner: Box::new(connector),
        }
    }

    /// The uplink the configuration names, its settings checked (TLS files
    /// read); `None` when nothing goes to the cloud.
    pub fn make(sections: &Sections, cloud: bool) -> Result<Option<AnyConnector>, UplinkError> {
        let name = sections
            .uplink
            .kind(sections.mqtt.is_some(), cloud, sections.nucleus.is_some());
        match KINDS.iter().find(|k| Some(k.name) == name) {
            Some(kind) => (kind.make)(sections).map(Some),
            None => Ok(None),
        }
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The largest message this uplink carries (the outbox refuses larger).
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// How the sender drains the outbox through it.
    pub fn sender_options(&self, health: &Health) -> SenderOptions {
        SenderOptions {
            window: self.window,
            max_backoff: self.max_backoff,
            health_topic: health.topic.clone(),
            health_interval: health.interval(),
        }
    }
}

/// A live connection of an [`AnyConnector`].
pub type AnyUplink = Box<dyn DynUplink>;

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`Connector`] behind a pointer: what lets [`KINDS`] hold any kind.
trait DynConnector: Send + Sync {
    fn connect(&self) -> Boxed<'_, Result<AnyUplink, UplinkError>>;
}

impl<C: Connector> DynConnector for C {
    fn connect(&self) -> Boxed<'_, Result<AnyUplink, UplinkError>> {
        Box::pin(async move {
            let up = Connector::connect(self).await?;
            Ok(Box::new(up) as AnyUplink)
        })
    }
}

/// [`Uplink`] behind a pointer.
pub trait DynUplink: Send {
    fn send(&mut self, msg: &Message) -> Result<(), UplinkError>;
    fn notify(&mut self, topic: &str, payload: Vec<u8>) -> Result<(), UplinkError>;
    fn events(&mut self) -> Boxed<'_, Vec<Event>>;
}

impl<U: Uplink> DynUplink for U {
    fn send(&mut self, msg: &Message) -> Result<(), UplinkError> {
        Uplink::send(self, msg)
    }
    fn notify(&mut self, topic: &str, payload: Vec<u8>) -> Result<(), UplinkError> {
        Uplink::notify(self, topic, payload)
    }
    fn events(&mut self) -> Boxed<'_, Vec<Event>> {
        Box::pin(Uplink::events(self))
    }
}

impl Connector for AnyConnector {
    type Uplink = AnyUplink;

    async fn connect(&self) -> Result<AnyUplink, UplinkError> {
        self.inner.connect().await
    }
}

impl Uplink for AnyUplink {
    fn send(&mut self, msg: &Message) -> Result<(), UplinkError> {
        (**self).send(msg)
    }

    fn notify(&mut self, topic: &str, payload: Vec<u8>) -> Result<(), UplinkError> {
        (**self).notify(topic, payload)
    }

    async fn events(&mut self) -> Vec<Event> {
        (**self).events().await
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
                if let Some(why) = settle(events, &mut inflight, outbox, metrics).await {
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
            _ = stopped(shutdown) => {
                // Acknowledgements already on their way are taken in, so the
                // next start does not send those messages again; bounded, so
                // the daemon still exits well before Greengrass's SIGKILL.
                let _ = tokio::time::timeout(STOP_ACK_WAIT, async {
                    while !inflight.is_empty() {
                        let events = up.events().await;
                        if settle(events, &mut inflight, outbox, metrics).await.is_some() {
                            break;
                        }
                    }
                })
                .await;
                return None;
            }
        }
    }
}

/// How long a stopping sender waits for the acknowledgements of messages in flight.
const STOP_ACK_WAIT: Duration = Duration::from_secs(1);

/// Takes a connection's events in: acknowledged messages leave the outbox.
/// Returns why the connection was lost, if it was.
async fn settle(
    events: Vec<Event>,
    inflight: &mut VecDeque<u64>,
    outbox: &Arc<Outbox>,
    metrics: &Metrics,
) -> Option<String> {
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
        metrics
            .uplink_published
            .fetch_add(acked.len() as u64, Ordering::Relaxed);
        let o = outbox.clone();
        if let Err(e) = blocking(move || o.remove(&acked)).await {
            // They stay queued and go again: duplicates, never losses.
            log::error("removing acknowledged messages", json!({ "error": e }));
        }
    }
    lost
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
    use crate::outbox::Policy;

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

    #[test]
    fn every_kind_is_found_by_its_name_and_refuses_settings_it_lacks() {
        for kind in KINDS {
            assert_eq!(KINDS.iter().filter(|k| k.name == kind.name).count(), 1);
            let mut settings = Settings {
                kind: Some(kind.name.into()),
                ..Default::default()
            };
            assert_eq!(settings.kind(false, false, false), Some(kind.name));
            settings.options.insert("no-such-setting".into(), json!(1));
            let sections = Sections {
                uplink: &settings,
                mqtt: None,
                nucleus: None,
            };
            let refused = (kind.check)(&sections).unwrap_err();
            assert!(
                refused.contains("no-such-setting"),
                "{}: {refused}",
                kind.name
            );
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
