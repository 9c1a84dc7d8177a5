//! The MQTT uplink (rumqttc, MQTT 3.1.1): QoS 1 for outbox messages, QoS 0
//! for health; mutual TLS with an X.509 client certificate (as AWS IoT Core
//! requires) or plain TCP to a local broker.
//!
//! Each connection is a fresh client and event loop with a clean session:
//! the outbox, not rumqttc's memory, decides what is sent again after a drop.
//! The event loop runs in its own task and reports through a channel, so the
//! sender can wait on it without cancelling a poll halfway.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event as MqttEvent, EventLoop, MqttOptions, Outgoing, Packet,
    QoS, TlsConfiguration, Transport,
};
use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use serde::{Deserialize, Serialize};

use super::{AnyConnector, Connector, Event, Kind, Uplink, UplinkError};
use crate::outbox::Message;

/// Largest message AWS IoT Core accepts (128 KiB), used as the packet bound.
pub const MAX_PACKET: usize = 128 << 10;
const CONNECT_TIMEOUT_S: u64 = 10;

/// `[mqtt]`: the broker the `mqtt` uplink connects to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default = "default_client_id")]
    pub client_id: String,
    #[serde(default = "default_keep_alive")]
    pub keep_alive_s: u64,
    /// Mutual TLS (as AWS IoT Core requires); plain TCP when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// Messages published and not yet acknowledged, at most.
    #[serde(default = "default_inflight")]
    pub max_inflight: u16,
    /// Longest wait between reconnection attempts, in seconds.
    #[serde(default = "default_reconnect")]
    pub reconnect_max_s: u64,
}

fn default_reconnect() -> u64 {
    30
}

fn default_port() -> u16 {
    8883
}
fn default_client_id() -> String {
    "{thing}".into()
}
fn default_keep_alive() -> u64 {
    30
}
fn default_inflight() -> u16 {
    32
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Settings {
    /// The section's own checks (after `{thing}` is filled in).
    pub fn check(&self) -> Result<(), String> {
        if self.client_id.is_empty() || self.max_inflight == 0 {
            return Err("mqtt: client_id and max_inflight must not be empty".into());
        }
        Ok(())
    }
}

/// `[uplink] type = "mqtt"`: a connection of the daemon's own to `[mqtt]`.
pub const KIND: Kind = Kind {
    name: "mqtt",
    check: |s| {
        s.uplink.no_options("mqtt")?;
        match s.mqtt {
            Some(_) => Ok(()),
            None => Err("[uplink] type = \"mqtt\" needs an [mqtt] section".into()),
        }
    },
    make: |s| {
        let settings = s
            .mqtt
            .ok_or_else(|| UplinkError::Setup("the mqtt uplink needs an [mqtt] section".into()))?;
        let connector = MqttConnector::new(settings)?;
        let (window, max_backoff) = connector.pacing();
        Ok(AnyConnector::new(
            KIND.name,
            MAX_PACKET,
            window,
            max_backoff,
            connector,
        ))
    },
};

pub struct MqttConnector {
    options: MqttOptions,
    window: usize,
    max_backoff: Duration,
}

/// Builds the TLS client configuration (ring crypto), reading the PEM files.
pub fn tls_config(tls: &Tls) -> Result<ClientConfig, UplinkError> {
    let setup = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        UplinkError::Setup(format!("mqtt tls {what} {}: {e}", path.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    let cas = CertificateDer::pem_file_iter(&tls.ca)
        .map_err(|e| setup("ca", &tls.ca, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| setup("ca", &tls.ca, &e))?;
    if cas.is_empty() {
        return Err(setup("ca", &tls.ca, &"no certificate in the file"));
    }
    for ca in cas {
        roots.add(ca).map_err(|e| setup("ca", &tls.ca, &e))?;
    }
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(|e| setup("cert", &tls.cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| setup("cert", &tls.cert, &e))?;
    if certs.is_empty() {
        return Err(setup("cert", &tls.cert, &"no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| setup("key", &tls.key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| UplinkError::Setup(format!("mqtt tls: {e}")))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| setup("cert/key", &tls.cert, &e))
}

impl MqttConnector {
    /// Checks the settings (and reads the TLS files) once, at start-up.
    pub fn new(mqtt: &Settings) -> Result<MqttConnector, UplinkError> {
        let mut options = MqttOptions::new(&mqtt.client_id, &mqtt.host, mqtt.port);
        options
            .set_keep_alive(Duration::from_secs(mqtt.keep_alive_s.max(5)))
            .set_clean_session(true)
            .set_max_packet_size(MAX_PACKET + 1024, MAX_PACKET + 1024)
            .set_inflight(mqtt.max_inflight.max(1));
        if let Some(tls) = &mqtt.tls {
            let tls = tls_config(tls)?;
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(tls),
            )));
        }
        Ok(MqttConnector {
            options,
            window: mqtt.max_inflight.max(1) as usize,
            max_backoff: Duration::from_secs(mqtt.reconnect_max_s.max(1)),
        })
    }
}

/// What the event-loop task reports.
enum Raw {
    /// A QoS 1 publish went out with this packet id.
    Sent(u16),
    Acked(u16),
    Lost(String),
}

fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => {
            format!("broker refused the connection: {code:?}")
        }
        other => other.to_string(),
    }
}

impl MqttConnector {
    /// Messages unacknowledged at once, and the longest wait between attempts.
    pub fn pacing(&self) -> (usize, Duration) {
        (self.window, self.max_backoff)
    }
}

impl Connector for MqttConnector {
    type Uplink = MqttUplink;

    async fn connect(&self) -> Result<MqttUplink, UplinkError> {
        let (client, mut eventloop) = AsyncClient::new(self.options.clone(), self.window * 2 + 16);
        eventloop
            .network_options
            .set_connection_timeout(CONNECT_TIMEOUT_S);
        // Wait for the broker's CONNACK before reporting a connection.
        loop {
            match eventloop.poll().await {
                Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => break,
                Ok(_) => {}
                Err(e) => return Err(UplinkError::Connect(describe(&e))),
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(pump(eventloop, tx));
        Ok(MqttUplink {
            client,
            rx,
            task,
            unassigned: VecDeque::new(),
            by_pkid: HashMap::new(),
        })
    }
}

/// Drives the event loop, forwarding what the sender needs.
async fn pump(mut eventloop: EventLoop, tx: mpsc::UnboundedSender<Raw>) {
    loop {
        let raw = match eventloop.poll().await {
            // QoS 0 publishes (health) carry packet id 0: not ours to track.
            Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => Raw::Sent(pkid),
            Ok(MqttEvent::Incoming(Packet::PubAck(ack))) => Raw::Acked(ack.pkid),
            Ok(_) => continue,
            Err(e) => {
                let _ = tx.send(Raw::Lost(describe(&e)));
                return;
            }
        };
        if tx.send(raw).is_err() {
            return;
        }
    }
}

pub struct MqttUplink {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Raw>,
    task: JoinHandle<()>,
    /// Messages handed to the client, waiting for their packet id (rumqttc
    /// assigns ids in the order it takes requests, so the oldest is next).
    unassigned: VecDeque<u64>,
    by_pkid: HashMap<u16, u64>,
}

impl Drop for MqttUplink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MqttUplink {
    fn translate(&mut self, raw: Raw) -> Option<Event> {
        match raw {
            Raw::Sent(pkid) => {
                if let Some(seq) = self.unassigned.pop_front() {
                    self.by_pkid.insert(pkid, seq);
                }
                None
            }
            Raw::Acked(pkid) => self.by_pkid.remove(&pkid).map(Event::Acked),
            Raw::Lost(why) => Some(Event::Lost(why)),
        }
    }
}

impl Uplink for MqttUplink {
    fn send(&mut self, msg: &Message) -> Result<(), UplinkError> {
        self.client
            .try_publish(&msg.topic, QoS::AtLeastOnce, false, msg.payload.clone())
            .map_err(|e| UplinkError::Lost(format!("publishing: {e}")))?;
        self.unassigned.push_back(msg.seq);
        Ok(())
    }

    fn notify(&mut self, topic: &str, payload: Vec<u8>) -> Result<(), UplinkError> {
        self.client
            .try_publish(topic, QoS::AtMostOnce, false, payload)
            .map_err(|e| UplinkError::Lost(format!("publishing: {e}")))
    }

    async fn events(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while out.is_empty() {
            let Some(raw) = self.rx.recv().await else {
                return vec![Event::Lost("event loop stopped".into())];
            };
            out.extend(self.translate(raw));
            while let Ok(raw) = self.rx.try_recv() {
                out.extend(self.translate(raw));
            }
        }
        out
    }
}
