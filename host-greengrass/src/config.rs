//! The daemon's configuration: a TOML file (or JSON, as Greengrass writes its
//! component configuration), checked in full before anything starts.
//!
//! ```toml
//! thing_name = "line-3-camera"          # or --thing-name; fills {thing} in topics
//! state_dir = "/var/lib/verge"          # or --state-dir
//! load_timeout_s = 900                  # loading longer than this: exit 1
//!
//! [api]
//! listen = "127.0.0.1:8470"
//!
//! [models.magika]
//! path = "model.onnx"
//! sha256 = "fc8e…"
//! backend = "onnxruntime"               # or "tract" (the default, built in)
//! threads = 2                           # intra-op threads; 0 = the backend's default
//! target = "cpu"                        # or "gpu": ONNX Runtime's execution providers
//! providers = ["tensorrt", "cuda"]      # for "gpu", tried in this order
//! device = "0"                          # the providers' device: CUDA/TensorRT id, OpenVINO "CPU"/"GPU"/"NPU"
//! fallback = "tract"                    # run on tract if ONNX Runtime (or the gpu) is missing
//!
//! [onnxruntime]
//! library = "/usr/lib/libonnxruntime.so" # default: ORT_DYLIB_PATH, then the usual places
//!
//! [components.file-type]
//! path = "file_type.wasm"
//! sha256 = "9b1d…"
//!
//! [routes.file-type]
//! component = "file-type"
//! deadline_ms = 2000
//! memory_mb = 128
//! config = { threshold = "0.5" }
//! cloud = { topic = "verge/{thing}/file-type" }
//! local = { topic = "verge/file-type" }  # Greengrass local pub/sub, for device applications
//!
//! [outbox]
//! max_bytes = 67108864
//! policy = "drop-oldest"                # or "reject-new"
//!
//! [uplink]
//! type = "greengrass-ipc"               # or "mqtt"; default: greengrass-ipc under a nucleus,
//!                                       # else mqtt when there is an [mqtt] section
//! retry_max_s = 30                      # longest wait between two tries of a message
//!
//! [mqtt]
//! host = "abc123-ats.iot.eu-west-1.amazonaws.com"
//! port = 8883
//! client_id = "{thing}"
//! tls = { ca = "AmazonRootCA1.pem", cert = "device.pem.crt", key = "private.pem.key" }
//!
//! [health]
//! interval_s = 60
//! topic = "verge/{thing}/health"
//! ```
//!
//! Relative paths are relative to `artifacts_dir` (or `--artifacts-dir`),
//! which defaults to the configuration file's folder.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::nn::{Backend, EngineSpec, ModelSpec, Provider, Target};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("configuration: {0}")]
    Invalid(String),
    #[error("{what} {}: sha256 is {actual}, the configuration expects {expected}", path.display())]
    Digest {
        what: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },
}

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(message.into())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub thing_name: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub artifacts_dir: Option<PathBuf>,
    /// Longest the start may take to load every model and component before
    /// the daemon gives up and exits 1 (default 900 s: a TensorRT engine
    /// build on a small device takes minutes).
    #[serde(default = "default_load_timeout")]
    pub load_timeout_s: u64,
    #[serde(default)]
    pub api: Api,
    #[serde(default)]
    pub models: BTreeMap<String, ModelConfig>,
    pub onnxruntime: Option<OnnxRuntime>,
    #[serde(default)]
    pub components: BTreeMap<String, Artifact>,
    #[serde(default)]
    pub routes: BTreeMap<String, Route>,
    #[serde(default)]
    pub outbox: Outbox,
    /// What each component's durable state may hold.
    #[serde(default)]
    pub state: crate::state::StateQuota,
    /// Which uplink carries the outbox (see [`Config::uplink_kind`]).
    #[serde(default)]
    pub uplink: UplinkConfig,
    pub mqtt: Option<Mqtt>,
    #[serde(default)]
    pub health: Health,
}

/// `[uplink]`: what carries the outbox to the cloud.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    #[serde(rename = "type")]
    pub kind: Option<UplinkKind>,
    /// greengrass-ipc: the longest wait between two tries of a message the
    /// nucleus did not take (default 30 s; mqtt has `[mqtt] reconnect_max_s`).
    pub retry_max_s: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UplinkKind {
    /// A connection of the daemon's own to an MQTT broker (`[mqtt]`).
    Mqtt,
    /// PublishToIoTCore through the Greengrass nucleus the daemon runs under.
    GreengrassIpc,
}

impl UplinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UplinkKind::Mqtt => "mqtt",
            UplinkKind::GreengrassIpc => "greengrass-ipc",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// Loopback TCP by default: the API is for applications on the device.
    /// `unix:PATH` listens on a Unix domain socket instead (a relative PATH
    /// is in `state_dir`), which file permissions guard.
    #[serde(default = "default_listen")]
    pub listen: Listen,
    /// The Unix socket's permissions, in octal: who may connect (default
    /// "660": the daemon's user and group).
    #[serde(default = "default_socket_mode")]
    pub socket_mode: String,
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Calls run at once; more wait. Defaults to the number of cores.
    pub workers: Option<usize>,
    /// How long a shutdown waits for in-flight requests.
    #[serde(default = "default_drain")]
    pub shutdown_grace_s: u64,
    /// A file holding a token callers must send as `Authorization: Bearer <token>`
    /// (every path but `/healthz`); none: no authentication (keep the API on loopback).
    pub token_file: Option<PathBuf>,
}

fn default_load_timeout() -> u64 {
    900
}

fn default_listen() -> Listen {
    Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], 8470)))
}
fn default_socket_mode() -> String {
    "660".into()
}

/// Where the API listens.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Listen {
    Tcp(SocketAddr),
    /// A Unix domain socket at this path.
    Unix(PathBuf),
}

impl TryFrom<String> for Listen {
    type Error = String;
    fn try_from(s: String) -> Result<Listen, String> {
        match s.strip_prefix("unix:") {
            Some("") => Err("listen = \"unix:\" needs a path".into()),
            Some(path) => Ok(Listen::Unix(path.into())),
            None => s.parse().map(Listen::Tcp).map_err(|_| {
                format!(
                    "listen = {s:?}: expected an address and port (127.0.0.1:8470) or unix:PATH"
                )
            }),
        }
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "{a}"),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl Api {
    /// `socket_mode` as permission bits, if it is octal ones (checked when
    /// the configuration loads, so a loaded one always is).
    fn socket_mode_bits(&self) -> Option<u32> {
        u32::from_str_radix(&self.socket_mode, 8)
            .ok()
            .filter(|m| *m <= 0o777)
    }

    pub fn socket_mode(&self) -> u32 {
        self.socket_mode_bits().unwrap_or(0o600)
    }
}
fn default_max_body() -> usize {
    16 << 20
}
fn default_drain() -> u64 {
    10
}

impl Default for Api {
    fn default() -> Self {
        Api {
            listen: default_listen(),
            socket_mode: default_socket_mode(),
            max_body_bytes: default_max_body(),
            workers: None,
            shutdown_grace_s: default_drain(),
            token_file: None,
        }
    }
}

/// A model the deployment ships, checked by digest, and how to run it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub path: PathBuf,
    pub sha256: String,
    #[serde(default)]
    pub backend: Backend,
    #[serde(default)]
    pub threads: usize,
    #[serde(default)]
    pub target: Target,
    #[serde(default)]
    pub providers: Vec<Provider>,
    /// The providers' device: OpenVINO's device type ("CPU", "GPU", "NPU",
    /// "AUTO:GPU,CPU", …), CUDA's and TensorRT's device id ("0"). What they
    /// compile is kept under `state_dir/cache/<provider>/`.
    pub device: Option<String>,
    /// The only fallback is tract, which is always there.
    pub fallback: Option<Backend>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxRuntime {
    /// The `libonnxruntime` to load.
    pub library: Option<PathBuf>,
}

/// A file the deployment ships, checked by digest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    pub path: PathBuf,
    pub sha256: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub component: String,
    #[serde(default = "default_deadline")]
    pub deadline_ms: u64,
    #[serde(default = "default_memory")]
    pub memory_mb: usize,
    /// Settings the component reads through `wasi:config`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Where this route's outcomes go in the cloud, if anywhere.
    pub cloud: Option<Cloud>,
    /// The local pub/sub topic of the Greengrass nucleus that also gets this
    /// route's outcomes (best effort; for applications on the device).
    pub local: Option<Cloud>,
    /// Calls of this route running at once; more wait for their turn without
    /// holding a worker. Default: one less than the workers (at least one), so
    /// a route whose component hangs until its deadline leaves room for the others.
    pub concurrency: Option<usize>,
    /// MiB of `wasi:nn` tensors a call may hold in the host (default: `memory_mb`).
    pub tensor_mb: Option<usize>,
    /// Host resources a call may hold at once: tensors, graphs, contexts,
    /// buckets, streams (default 4,096).
    pub max_resources: Option<usize>,
    /// MiB of outcome a call may return (default: a quarter of `memory_mb`).
    pub output_mb: Option<usize>,
}

impl Route {
    /// The bounds of one call of this route.
    pub fn limits(&self, max_body_bytes: usize) -> crate::runtime::Limits {
        crate::runtime::Limits::new(
            Duration::from_millis(self.deadline_ms),
            self.memory_mb << 20,
            max_body_bytes,
        )
        .overridden(self.tensor_mb, self.max_resources, self.output_mb)
    }
}

fn default_deadline() -> u64 {
    10_000
}
fn default_memory() -> usize {
    256
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cloud {
    pub topic: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Make room by dropping the oldest messages.
    DropOldest,
    /// Keep what is queued; refuse the new message.
    RejectNew,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outbox {
    #[serde(default = "default_outbox_bytes")]
    pub max_bytes: u64,
    #[serde(default = "default_policy")]
    pub policy: Policy,
}

fn default_outbox_bytes() -> u64 {
    64 << 20
}
fn default_policy() -> Policy {
    Policy::DropOldest
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox {
            max_bytes: default_outbox_bytes(),
            policy: default_policy(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mqtt {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default = "default_client_id")]
    pub client_id: String,
    #[serde(default = "default_keep_alive")]
    pub keep_alive_s: u64,
    /// Mutual TLS (as AWS IoT Core requires); plain TCP when absent.
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
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

/// What the command line may override.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub thing_name: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub artifacts_dir: Option<PathBuf>,
}

impl Config {
    /// Reads and checks a configuration file: its syntax, names that refer to
    /// each other, topics, and the paths made absolute. Digests are checked
    /// when the files are loaded ([`verify`]).
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.into(),
            error,
        })?;
        Config::parse(path, &text, overrides)
    }

    /// [`Config::load`] for text already read: `path` only decides the syntax
    /// (`.json`, else TOML), names the file in errors and anchors relative
    /// paths; nothing is read from disk.
    pub fn parse(path: &Path, text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        let parse_error = |message: String| ConfigError::Parse {
            path: path.into(),
            message,
        };
        let mut config: Config = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(text).map_err(|e| parse_error(e.to_string()))?
        } else {
            toml::from_str(text).map_err(|e| parse_error(e.to_string()))?
        };
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        config.finish(base, overrides)?;
        Ok(config)
    }

    fn finish(&mut self, config_dir: PathBuf, overrides: &Overrides) -> Result<(), ConfigError> {
        if let Some(t) = &overrides.thing_name {
            self.thing_name = Some(t.clone());
        }
        if let Some(d) = &overrides.state_dir {
            self.state_dir = Some(d.clone());
        }
        if let Some(d) = &overrides.artifacts_dir {
            self.artifacts_dir = Some(d.clone());
        }
        let base = match &self.artifacts_dir {
            Some(d) if d.is_relative() => config_dir.join(d),
            Some(d) => d.clone(),
            None => config_dir,
        };
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for m in self.models.values_mut() {
            abs(&mut m.path);
        }
        for a in self.components.values_mut() {
            abs(&mut a.path);
        }
        if let Some(lib) = self.onnxruntime.as_mut().and_then(|o| o.library.as_mut()) {
            abs(lib);
        }
        if let Some(token) = self.api.token_file.as_mut() {
            abs(token);
        }
        if let Some(tls) = self.mqtt.as_mut().and_then(|m| m.tls.as_mut()) {
            abs(&mut tls.ca);
            abs(&mut tls.cert);
            abs(&mut tls.key);
        }
        if self.state_dir.is_none() {
            return Err(invalid("no state_dir (set it, or pass --state-dir)"));
        }
        if let Listen::Unix(p) = &mut self.api.listen
            && p.is_relative()
        {
            *p = self.state_dir.as_ref().expect("state_dir").join(&*p);
        }
        if self.api.socket_mode_bits().is_none() {
            return Err(invalid(format!(
                "api.socket_mode {:?}: expected permission bits in octal, like \"660\"",
                self.api.socket_mode
            )));
        }
        for (name, m) in &self.models {
            if m.fallback == Some(Backend::Onnxruntime) {
                return Err(invalid(format!(
                    "model '{name}': the only fallback is \"tract\""
                )));
            }
        }
        for spec in self.model_specs() {
            spec.engine
                .validate()
                .map_err(|e| invalid(format!("model '{}': {e}", spec.name)))?;
        }
        let digests = self.models.iter().map(|(n, m)| (n, &m.sha256));
        for (name, sha256) in digests.chain(self.components.iter().map(|(n, a)| (n, &a.sha256))) {
            if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(format!(
                    "'{name}': sha256 must be 64 hexadecimal digits"
                )));
            }
        }
        if self.routes.is_empty() {
            return Err(invalid("no routes: nothing to serve"));
        }
        let thing = self.thing_name.clone();
        let fill = |what: &str, t: &str| -> Result<String, ConfigError> {
            match (&thing, t.contains("{thing}")) {
                (Some(thing), _) => Ok(t.replace("{thing}", thing)),
                (None, false) => Ok(t.to_string()),
                (None, true) => Err(invalid(format!(
                    "{what} '{t}' uses {{thing}} but no thing_name is set (set it, or pass --thing-name)"
                ))),
            }
        };
        let uplink = self.uplink_kind();
        if self.uplink.kind == Some(UplinkKind::Mqtt) && self.mqtt.is_none() {
            return Err(invalid("[uplink] type = \"mqtt\" needs an [mqtt] section"));
        }
        for (name, route) in &mut self.routes {
            if !self.components.contains_key(&route.component) {
                return Err(invalid(format!(
                    "route '{name}' names component '{}', which is not configured",
                    route.component
                )));
            }
            if route.deadline_ms == 0
                || route.memory_mb == 0
                || route.tensor_mb == Some(0)
                || route.max_resources == Some(0)
                || route.output_mb == Some(0)
            {
                return Err(invalid(format!(
                    "route '{name}': deadline_ms, memory_mb, tensor_mb, max_resources and output_mb must be positive"
                )));
            }
            if route.concurrency.is_some_and(|c| c == 0 || c > MAX_WORKERS) {
                return Err(invalid(format!(
                    "route '{name}': concurrency is from 1 to {MAX_WORKERS}"
                )));
            }
            if route
                .memory_mb
                .max(route.tensor_mb.unwrap_or(0))
                .max(route.output_mb.unwrap_or(0))
                > 1 << 20
            {
                return Err(invalid(format!(
                    "route '{name}': memory_mb, tensor_mb and output_mb are at most 1048576 (1 TiB)"
                )));
            }
            for to in [&mut route.cloud, &mut route.local].into_iter().flatten() {
                to.topic = fill("topic", &to.topic)?;
                check_topic(&to.topic)?;
            }
        }
        if uplink.is_some() {
            self.health.topic = fill("health topic", &self.health.topic)?;
            check_topic(&self.health.topic)?;
        }
        if self.uplink.retry_max_s == Some(0) {
            return Err(invalid("uplink.retry_max_s must be positive"));
        }
        if let Some(m) = &mut self.mqtt {
            m.client_id = fill("client_id", &m.client_id)?;
            if m.client_id.is_empty() || m.max_inflight == 0 {
                return Err(invalid(
                    "mqtt: client_id and max_inflight must not be empty",
                ));
            }
        }
        if self.api.workers.is_some_and(|w| w == 0 || w > MAX_WORKERS) {
            return Err(invalid(format!("api.workers is from 1 to {MAX_WORKERS}")));
        }
        if self.outbox.max_bytes == 0 || self.api.max_body_bytes == 0 {
            return Err(invalid(
                "outbox.max_bytes and api.max_body_bytes must be positive",
            ));
        }
        Ok(())
    }

    /// The uplink that carries the outbox, if any: `[uplink] type`; else
    /// Greengrass IPC under a nucleus (when something goes to the cloud);
    /// else MQTT when there is an `[mqtt]` section; else IPC again when a
    /// route sends to the cloud (the one uplink that needs no settings: the
    /// daemon refuses to start outside a nucleus).
    pub fn uplink_kind(&self) -> Option<UplinkKind> {
        let cloud = self.routes.values().any(|r| r.cloud.is_some());
        if let Some(kind) = self.uplink.kind {
            Some(kind)
        } else if crate::nucleus::present() && (cloud || self.mqtt.is_some()) {
            Some(UplinkKind::GreengrassIpc)
        } else if self.mqtt.is_some() {
            Some(UplinkKind::Mqtt)
        } else {
            cloud.then_some(UplinkKind::GreengrassIpc)
        }
    }

    /// The longest wait between two tries of a message (greengrass-ipc).
    pub fn uplink_retry_max(&self) -> Duration {
        Duration::from_secs(self.uplink.retry_max_s.unwrap_or(30).max(1))
    }

    pub fn state_dir(&self) -> &Path {
        self.state_dir.as_deref().unwrap_or(Path::new("."))
    }

    pub fn health_interval(&self) -> Duration {
        Duration::from_secs(self.health.interval_s.max(1))
    }
}

/// The most worker threads, and calls of one route at once.
pub const MAX_WORKERS: usize = 1024;

/// MQTT topics a client may publish to: no wildcards, not empty.
fn check_topic(t: &str) -> Result<(), ConfigError> {
    if t.is_empty() || t.contains(['+', '#', '\0']) || t.len() > 256 {
        return Err(invalid(format!(
            "topic '{t}' is not a publishable MQTT topic (empty, wildcard or too long)"
        )));
    }
    Ok(())
}

impl Config {
    /// The models to load, each with the engine the deployment chose.
    pub fn model_specs(&self) -> Vec<ModelSpec> {
        let library = self.onnxruntime.as_ref().and_then(|o| o.library.clone());
        self.models
            .iter()
            .map(|(name, m)| ModelSpec {
                name: name.clone(),
                path: m.path.clone(),
                engine: EngineSpec {
                    backend: m.backend,
                    threads: m.threads,
                    target: m.target,
                    providers: m.providers.clone(),
                    library: library.clone(),
                    fallback_to_tract: m.fallback == Some(Backend::Tract),
                    device: m.device.clone(),
                    cache_dir: Some(self.state_dir().join("cache")),
                    profile: None,
                },
            })
            .collect()
    }
}

/// Reads a file and checks its sha256 against the configuration.
pub fn verify(what: &str, path: &Path, sha256: &str) -> Result<Vec<u8>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|error| ConfigError::Read {
        path: path.into(),
        error,
    })?;
    let actual = sha256_hex(&bytes);
    if !actual.eq_ignore_ascii_case(sha256) {
        return Err(ConfigError::Digest {
            what: what.into(),
            path: path.into(),
            expected: sha256.to_ascii_lowercase(),
            actual,
        });
    }
    Ok(bytes)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, thing: Option<&str>) -> Result<Config, ConfigError> {
        let mut c: Config = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        c.finish(
            PathBuf::from("/base"),
            &Overrides {
                thing_name: thing.map(Into::into),
                ..Default::default()
            },
        )?;
        Ok(c)
    }

    const MINIMAL: &str = r#"
        state_dir = "state"
        [components.p]
        path = "p.wasm"
        sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
        [routes.r]
        component = "p"
        cloud = { topic = "verge/{thing}/r" }
        [mqtt]
        host = "localhost"
        port = 1883
    "#;

    #[test]
    fn fills_thing_and_resolves_paths() {
        let c = parse(MINIMAL, Some("t1")).unwrap();
        assert_eq!(c.routes["r"].cloud.as_ref().unwrap().topic, "verge/t1/r");
        assert_eq!(c.mqtt.as_ref().unwrap().client_id, "t1");
        assert_eq!(c.health.topic, "verge/t1/health");
        assert_eq!(c.components["p"].path, PathBuf::from("/base/p.wasm"));
        assert_eq!(c.api.listen, default_listen());
        assert_eq!(c.outbox.policy, Policy::DropOldest);
    }

    #[test]
    fn picks_the_uplink_and_fills_local_topics() {
        // (No nucleus in unit tests: the IPC variables are not set.)
        let c = parse(MINIMAL, Some("t1")).unwrap();
        assert_eq!(c.uplink_kind(), Some(UplinkKind::Mqtt));
        let explicit = format!("{MINIMAL}\n[uplink]\ntype = \"greengrass-ipc\"\nretry_max_s = 5\n");
        let c = parse(&explicit, Some("t1")).unwrap();
        assert_eq!(c.uplink_kind(), Some(UplinkKind::GreengrassIpc));
        assert_eq!(c.uplink_retry_max(), Duration::from_secs(5));
        let zero = explicit.replace("retry_max_s = 5", "retry_max_s = 0");
        assert!(
            parse(&zero, Some("t1"))
                .unwrap_err()
                .to_string()
                .contains("retry_max_s")
        );
        // Nothing to the cloud, no [mqtt]: no uplink at all.
        let local = MINIMAL
            .split("[mqtt]")
            .next()
            .unwrap()
            .replace("cloud = {", "local = {");
        let c = parse(&local, Some("t1")).unwrap();
        assert_eq!(c.uplink_kind(), None);
        assert_eq!(c.routes["r"].local.as_ref().unwrap().topic, "verge/t1/r");
        assert!(
            parse(&local.replace("{thing}/r", "#"), Some("t1"))
                .unwrap_err()
                .to_string()
                .contains("wildcard")
        );
    }

    #[test]
    fn reads_the_json_form_greengrass_writes() {
        let dir = std::env::temp_dir().join(format!("verge-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("verge.json");
        let json = serde_json::json!({
            "state_dir": "/var/lib/verge",
            "components": { "p": { "path": "p.wasm", "sha256": "ab".repeat(32) } },
            "routes": { "r": { "component": "p", "cloud": { "topic": "verge/{thing}/r" } } },
            "mqtt": { "host": "localhost", "client_id": "{thing}-verge",
                      "tls": { "ca": "/certs/ca.pem", "cert": "c.pem", "key": "k.pem" } },
            "outbox": { "policy": "reject-new" },
        });
        std::fs::write(&path, json.to_string()).unwrap();
        let c = Config::load(
            &path,
            &Overrides {
                thing_name: Some("gg-core".into()),
                artifacts_dir: Some("/artifacts".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.mqtt.as_ref().unwrap().client_id, "gg-core-verge");
        assert_eq!(
            c.routes["r"].cloud.as_ref().unwrap().topic,
            "verge/gg-core/r"
        );
        assert_eq!(c.components["p"].path, PathBuf::from("/artifacts/p.wasm"));
        let tls = c.mqtt.as_ref().unwrap().tls.as_ref().unwrap();
        assert_eq!(tls.ca, PathBuf::from("/certs/ca.pem"));
        assert_eq!(tls.cert, PathBuf::from("/artifacts/c.pem"));
        assert_eq!(c.outbox.policy, Policy::RejectNew);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_what_cannot_work() {
        let err = |text: &str| parse(text, None).unwrap_err().to_string();
        assert!(err(MINIMAL).contains("no thing_name"));
        assert!(err(&MINIMAL.replace("component = \"p\"", "component = \"q\"")).contains("'q'"));
        assert!(err(&MINIMAL.replace("{thing}/r", "+/r")).contains("wildcard"));
        assert!(err(&MINIMAL.replace("port = 1883", "prot = 1")).contains("unknown field"));
        assert!(
            err(&MINIMAL.replace("sha256 = \"0000", "sha256 = \"zz00")).contains("hexadecimal")
        );
        let no_mqtt = MINIMAL.split("[mqtt]").next().unwrap();
        // A cloud route with no [mqtt]: through the nucleus (checked at start).
        let ipc = parse(no_mqtt, Some("t1")).unwrap();
        assert_eq!(ipc.uplink_kind(), Some(UplinkKind::GreengrassIpc));
        let lone_uplink = format!("{no_mqtt}\n[uplink]\ntype = \"mqtt\"\n");
        assert!(err(&lone_uplink).contains("needs an [mqtt] section"));
        let unknown = format!("{MINIMAL}\n[uplink]\ntype = \"carrier-pigeon\"\n");
        assert!(err(&unknown).contains("unknown variant"));
    }
}
