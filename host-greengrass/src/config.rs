//! The daemon's configuration as a value: read (TOML, or JSON as Greengrass
//! writes it), built in memory, checked in memory, written. Every section's
//! type, defaults and own checks live with the capability it configures
//! (`api`, `nn`, `outbox`, `state`, `uplink`); this module holds [`Config`],
//! the checks that span sections, and the paths.
//!
//! Every setting is documented once, annotated, in `verge.example.toml`
//! beside this crate's manifest (a test below parses and checks it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::{self, Listen, MAX_WORKERS};
use crate::limits::Limits;
use crate::nn::{Libraries, ModelSettings, ModelSpec, OnnxRuntimeSettings, TensorflowLiteSettings};
use crate::outbox;
use crate::state::StateQuota;
use crate::uplink::{self, mqtt};

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

/// The placeholder for the device's name in topics and the client id.
pub const THING: &str = "{thing}";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thing_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifacts_dir: Option<PathBuf>,
    /// Longest the start may take to load every model and component before
    /// the daemon gives up and exits 1 (default 900 s: a TensorRT engine
    /// build on a small device takes minutes).
    #[serde(default = "default_load_timeout")]
    pub load_timeout_s: u64,
    #[serde(default)]
    pub api: api::Settings,
    #[serde(default)]
    pub models: BTreeMap<String, ModelSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onnxruntime: Option<OnnxRuntimeSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tensorflowlite: Option<TensorflowLiteSettings>,
    #[serde(default)]
    pub components: BTreeMap<String, Artifact>,
    #[serde(default)]
    pub routes: BTreeMap<String, Route>,
    #[serde(default)]
    pub outbox: outbox::Settings,
    /// What each component's durable state may hold.
    #[serde(default)]
    pub state: StateQuota,
    /// Which uplink carries the outbox (see [`uplink::Settings::kind`]).
    #[serde(default)]
    pub uplink: uplink::Settings,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<mqtt::Settings>,
    #[serde(default)]
    pub health: uplink::Health,
}

fn default_load_timeout() -> u64 {
    900
}

/// An empty configuration: every section's defaults, no routes.
impl Default for Config {
    fn default() -> Self {
        serde_json::from_str("{}").expect("every setting has a default")
    }
}

/// A file the deployment ships, checked by digest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    pub path: PathBuf,
    pub sha256: String,
}

/// `[routes.NAME]`: a component served at `/v1/infer/NAME`, its bounds, its
/// settings and where its outcomes go.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud: Option<Topic>,
    /// The local pub/sub topic of the Greengrass nucleus that also gets this
    /// route's outcomes (best effort; for applications on the device).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<Topic>,
    /// Calls of this route running at once; more wait for their turn without
    /// holding a worker. Default: one less than the workers (at least one), so
    /// a route whose component hangs until its deadline leaves room for the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// MiB of `wasi:nn` tensors a call may hold in the host (default: `memory_mb`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tensor_mb: Option<usize>,
    /// Host resources a call may hold at once: tensors, graphs, contexts,
    /// buckets, streams (default 4,096).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_resources: Option<usize>,
    /// MiB of outcome a call may return (default: a quarter of `memory_mb`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_mb: Option<usize>,
}

impl Route {
    /// A route to `component` with every default.
    pub fn to(component: &str) -> Route {
        Route {
            component: component.to_string(),
            deadline_ms: default_deadline(),
            memory_mb: default_memory(),
            config: BTreeMap::new(),
            cloud: None,
            local: None,
            concurrency: None,
            tensor_mb: None,
            max_resources: None,
            output_mb: None,
        }
    }

    /// The bounds of one call of this route.
    pub fn limits(&self, max_body_bytes: usize) -> Limits {
        Limits::new(
            Duration::from_millis(self.deadline_ms),
            self.memory_mb << 20,
            max_body_bytes,
        )
        .overridden(self.tensor_mb, self.max_resources, self.output_mb)
    }

    /// The route's own checks.
    fn check(&self, name: &str) -> Result<(), String> {
        if self.deadline_ms == 0
            || self.memory_mb == 0
            || self.tensor_mb == Some(0)
            || self.max_resources == Some(0)
            || self.output_mb == Some(0)
        {
            return Err(format!(
                "route '{name}': deadline_ms, memory_mb, tensor_mb, max_resources and output_mb must be positive"
            ));
        }
        if self.concurrency.is_some_and(|c| c == 0 || c > MAX_WORKERS) {
            return Err(format!(
                "route '{name}': concurrency is from 1 to {MAX_WORKERS}"
            ));
        }
        let largest = self
            .memory_mb
            .max(self.tensor_mb.unwrap_or(0))
            .max(self.output_mb.unwrap_or(0));
        if largest > 1 << 20 {
            return Err(format!(
                "route '{name}': memory_mb, tensor_mb and output_mb are at most 1048576 (1 TiB)"
            ));
        }
        Ok(())
    }
}

fn default_deadline() -> u64 {
    10_000
}
fn default_memory() -> usize {
    256
}

/// An MQTT topic (cloud) or a local pub/sub topic; `{thing}` is filled in.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topic {
    pub topic: String,
}

/// What the command line may override.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub thing_name: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub artifacts_dir: Option<PathBuf>,
}

/// A path the configuration names, and what it is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathField<'a> {
    Model {
        name: &'a str,
        sha256: &'a str,
    },
    Component {
        name: &'a str,
        sha256: &'a str,
    },
    OnnxruntimeLibrary,
    TensorflowliteLibrary,
    MqttCa,
    /// A device's own secret (a certificate, a key, a token): it never ships.
    Secret(&'static str),
}

impl std::fmt::Display for PathField<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathField::Model { name, .. } => write!(f, "model '{name}'"),
            PathField::Component { name, .. } => write!(f, "component '{name}'"),
            PathField::OnnxruntimeLibrary => f.write_str("onnxruntime.library"),
            PathField::TensorflowliteLibrary => f.write_str("tensorflowlite.library"),
            PathField::MqttCa => f.write_str("mqtt.tls.ca"),
            PathField::Secret(what) => f.write_str(what),
        }
    }
}

impl Config {
    /// Reads, checks and completes a configuration file for the daemon: the
    /// overrides applied, relative paths anchored, every check passed,
    /// `{thing}` filled in. Digests are checked when the files are loaded
    /// ([`verify`]).
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = read(path)?;
        Config::parse(path, &text, overrides)
    }

    /// [`Config::load`] for text already read: `path` only decides the syntax
    /// (`.json`, else TOML), names the file in errors and anchors relative
    /// paths; nothing is read from disk.
    pub fn parse(path: &Path, text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut config = Config::from_text(path, text)?;
        config.apply(overrides);
        config.anchor(config_dir(path));
        config.check()?;
        config.fill_thing()?;
        Ok(config)
    }

    /// The configuration as written in a file: syntax and types only, paths
    /// as they are, nothing filled in or checked across sections.
    pub fn read(path: &Path) -> Result<Config, ConfigError> {
        Config::from_text(path, &read(path)?)
    }

    fn from_text(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let parsed = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(text).map_err(|e| e.to_string())
        } else {
            toml::from_str(text).map_err(|e| e.to_string())
        };
        parsed.map_err(|message| ConfigError::Parse {
            path: path.into(),
            message,
        })
    }

    /// As JSON, the form the Greengrass recipe ships.
    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a configuration is JSON");
        bytes.push(b'\n');
        bytes
    }

    pub fn apply(&mut self, overrides: &Overrides) {
        if let Some(t) = &overrides.thing_name {
            self.thing_name = Some(t.clone());
        }
        if let Some(d) = &overrides.state_dir {
            self.state_dir = Some(d.clone());
        }
        if let Some(d) = &overrides.artifacts_dir {
            self.artifacts_dir = Some(d.clone());
        }
    }

    /// Visits every path to a file the configuration names.
    pub fn visit_paths(&mut self, mut f: impl FnMut(PathField, &mut PathBuf)) {
        for (name, m) in &mut self.models {
            let field = PathField::Model {
                name,
                sha256: &m.sha256,
            };
            f(field, &mut m.path);
        }
        for (name, a) in &mut self.components {
            let field = PathField::Component {
                name,
                sha256: &a.sha256,
            };
            f(field, &mut a.path);
        }
        if let Some(lib) = self.onnxruntime.as_mut().and_then(|o| o.library.as_mut()) {
            f(PathField::OnnxruntimeLibrary, lib);
        }
        if let Some(lib) = self
            .tensorflowlite
            .as_mut()
            .and_then(|t| t.library.as_mut())
        {
            f(PathField::TensorflowliteLibrary, lib);
        }
        if let Some(token) = self.api.token_file.as_mut() {
            f(PathField::Secret("api.token_file"), token);
        }
        if let Some(tls) = self.mqtt.as_mut().and_then(|m| m.tls.as_mut()) {
            f(PathField::MqttCa, &mut tls.ca);
            f(PathField::Secret("mqtt.tls.cert"), &mut tls.cert);
            f(PathField::Secret("mqtt.tls.key"), &mut tls.key);
        }
    }

    /// Makes relative paths absolute: files under `artifacts_dir` (itself
    /// relative to `config_dir`), the API's socket under `state_dir`.
    pub fn anchor(&mut self, config_dir: &Path) {
        let base = match &self.artifacts_dir {
            Some(d) => config_dir.join(d),
            None => config_dir.to_path_buf(),
        };
        self.visit_paths(|_, p| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        });
        if let (Some(Listen::Unix(p)), Some(state)) = (&mut self.api.listen, &self.state_dir)
            && p.is_relative()
        {
            *p = state.join(&*p);
        }
    }

    /// Checks the whole configuration in memory (no file is touched): each
    /// section's own checks, names that refer to each other, digests'
    /// syntax, and the topics as `{thing}` will make them.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.check_sections().map_err(ConfigError::Invalid)?;
        let mut filled = self.clone();
        filled.fill_thing()?;
        if let Some(m) = &filled.mqtt {
            m.check().map_err(ConfigError::Invalid)?;
        }
        Ok(())
    }

    fn check_sections(&self) -> Result<(), String> {
        if self.state_dir.is_none() {
            return Err("no state_dir (set it, or pass --state-dir)".into());
        }
        if self.routes.is_empty() {
            return Err("no routes: nothing to serve".into());
        }
        self.api.check()?;
        self.outbox.check()?;
        for (name, m) in &self.models {
            m.check(name, self.libraries())?;
        }
        let digests = self.models.iter().map(|(n, m)| (n, &m.sha256));
        for (name, sha256) in digests.chain(self.components.iter().map(|(n, a)| (n, &a.sha256))) {
            if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("'{name}': sha256 must be 64 hexadecimal digits"));
            }
        }
        for (name, route) in &self.routes {
            if !self.components.contains_key(&route.component) {
                return Err(format!(
                    "route '{name}' names component '{}', which is not configured",
                    route.component
                ));
            }
            route.check(name)?;
        }
        self.uplink.check(self.mqtt.as_ref(), self.sends_to_cloud())
    }

    /// Every setting that may hold `{thing}`, and what it is.
    fn templates(&mut self) -> Vec<(&'static str, &mut String)> {
        let health = self.has_uplink();
        let mut out = Vec::new();
        for route in self.routes.values_mut() {
            for to in [&mut route.cloud, &mut route.local].into_iter().flatten() {
                out.push(("topic", &mut to.topic));
            }
        }
        if health {
            out.push(("health topic", &mut self.health.topic));
        }
        if let Some(m) = &mut self.mqtt {
            out.push(("client_id", &mut m.client_id));
        }
        out
    }

    /// Puts the thing's name in for `{thing}`, and checks each topic it makes.
    fn fill_thing(&mut self) -> Result<(), ConfigError> {
        let thing = self.thing_name.clone();
        for (what, t) in self.templates() {
            match &thing {
                Some(thing) => *t = t.replace(THING, thing),
                None if t.contains(THING) => {
                    return Err(invalid(format!(
                        "{what} '{t}' uses {THING} but no thing_name is set (set it, or pass --thing-name)"
                    )));
                }
                None => {}
            }
            if what.ends_with("topic") {
                check_topic(t).map_err(ConfigError::Invalid)?;
            }
        }
        Ok(())
    }

    /// Whether some route sends its outcomes to the cloud.
    pub fn sends_to_cloud(&self) -> bool {
        self.routes.values().any(|r| r.cloud.is_some())
    }

    /// Whether something carries the outbox (which kind may depend on the
    /// nucleus; whether there is one does not).
    pub fn has_uplink(&self) -> bool {
        self.uplink
            .kind(self.mqtt.is_some(), self.sends_to_cloud(), false)
            .is_some()
    }

    /// The uplink's sections, for a daemon under `nucleus` (or not).
    pub fn uplink_sections<'a>(
        &'a self,
        nucleus: Option<&'a std::sync::Arc<crate::nucleus::Nucleus>>,
    ) -> uplink::Sections<'a> {
        uplink::Sections {
            uplink: &self.uplink,
            mqtt: self.mqtt.as_ref(),
            nucleus,
        }
    }

    /// The uplink's kind for a daemon under a nucleus or not.
    pub fn uplink_kind(&self, nucleus: bool) -> Option<&'static str> {
        self.uplink
            .kind(self.mqtt.is_some(), self.sends_to_cloud(), nucleus)
    }

    /// The engine libraries every model shares.
    pub fn libraries(&self) -> Libraries<'_> {
        Libraries {
            onnxruntime: self.onnxruntime.as_ref(),
            tensorflowlite: self.tensorflowlite.as_ref(),
        }
    }

    pub fn state_dir(&self) -> &Path {
        self.state_dir.as_deref().unwrap_or(Path::new("."))
    }

    /// The models to load, each with the engine the deployment chose.
    pub fn model_specs(&self) -> Vec<ModelSpec> {
        let cache = self.state_dir().join("cache");
        self.models
            .iter()
            .map(|(name, m)| m.spec(name, self.libraries(), cache.clone()))
            .collect()
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.into(),
        error,
    })
}

/// The folder a configuration file's relative paths start from.
pub fn config_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// MQTT topics a client may publish to: no wildcards, not empty.
fn check_topic(t: &str) -> Result<(), String> {
    if t.is_empty() || t.contains(['+', '#', '\0']) || t.len() > 256 {
        return Err(format!(
            "topic '{t}' is not a publishable MQTT topic (empty, wildcard or too long)"
        ));
    }
    Ok(())
}

/// Reads a file and checks its sha256 against the configuration.
pub fn verify(what: &str, path: &Path, sha256: &str) -> Result<Vec<u8>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|error| ConfigError::Read {
        path: path.into(),
        error,
    })?;
    let actual = format!("{:x}", Sha256::digest(&bytes));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, thing: Option<&str>) -> Result<Config, ConfigError> {
        let overrides = Overrides {
            thing_name: thing.map(Into::into),
            ..Default::default()
        };
        Config::parse(Path::new("/base/verge.toml"), text, &overrides)
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
        assert_eq!(c.api.listen(), api::Settings::default().listen());
        assert_eq!(c.outbox.policy, outbox::Policy::DropOldest);
    }

    #[test]
    fn picks_the_uplink_and_fills_local_topics() {
        let c = parse(MINIMAL, Some("t1")).unwrap();
        assert_eq!(c.uplink_kind(false), Some("mqtt"));
        assert_eq!(c.uplink_kind(true), Some("greengrass-ipc"));
        let explicit = format!("{MINIMAL}\n[uplink]\ntype = \"greengrass-ipc\"\nretry_max_s = 5\n");
        let c = parse(&explicit, Some("t1")).unwrap();
        assert_eq!(c.uplink_kind(false), Some("greengrass-ipc"));
        assert_eq!(c.uplink.retry_max(), Duration::from_secs(5));
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
        assert_eq!(c.uplink_kind(true), None);
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
        assert_eq!(c.outbox.policy, outbox::Policy::RejectNew);
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
        assert_eq!(ipc.uplink_kind(false), Some("greengrass-ipc"));
        let lone_uplink = format!("{no_mqtt}\n[uplink]\ntype = \"mqtt\"\n");
        assert!(err(&lone_uplink).contains("needs an [mqtt] section"));
        let unknown = format!("{MINIMAL}\n[uplink]\ntype = \"carrier-pigeon\"\n");
        assert!(err(&unknown).contains("unknown variant"));
        // A setting no uplink kind has, beside the type.
        let stray = format!("{MINIMAL}\n[uplink]\ntype = \"mqtt\"\nspeed = 3\n");
        assert!(err(&stray).contains("[uplink] speed"));
    }

    /// The one documentation of the configuration is a configuration the
    /// daemon accepts, and every section of [`Config`] appears in it.
    #[test]
    fn the_annotated_example_is_a_valid_configuration() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("verge.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let c = Config::parse(&path, &text, &Overrides::default()).unwrap();
        assert_eq!(
            c.routes["file-type"].cloud.as_ref().unwrap().topic,
            "verge/line-3-camera/file-type"
        );
        let written = serde_json::to_value(Config::read(&path).unwrap()).unwrap();
        let documented: Vec<&String> = written.as_object().unwrap().keys().collect();
        let every = serde_json::to_value(Config {
            thing_name: Some("t".into()),
            state_dir: Some("s".into()),
            onnxruntime: Some(Default::default()),
            mqtt: c.mqtt.clone(),
            ..Default::default()
        })
        .unwrap();
        for key in every.as_object().unwrap().keys() {
            let uncommented = documented.contains(&key);
            let commented =
                text.contains(&format!("# [{key}]")) || text.contains(&format!("# {key} ="));
            assert!(
                uncommented || commented,
                "verge.example.toml does not document {key}"
            );
        }
    }

    /// A configuration built in memory, written and read back, is the same.
    #[test]
    fn a_built_configuration_survives_writing() {
        let mut c = Config {
            state_dir: Some("/var/lib/verge".into()),
            ..Default::default()
        };
        c.components.insert(
            "p".into(),
            Artifact {
                path: "/a/p.wasm".into(),
                sha256: "ab".repeat(32),
            },
        );
        let mut route = Route::to("p");
        route.cloud = Some(Topic {
            topic: "verge/{thing}/p".into(),
        });
        c.routes.insert("p".into(), route);
        c.thing_name = Some("t".into());
        c.check().unwrap();
        let json = c.to_json();
        let back = Config::parse(
            Path::new("/x/verge.json"),
            std::str::from_utf8(&json).unwrap(),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap()["routes"]["p"]["cloud"]["topic"],
            "verge/t/p"
        );
        let mut again = back.clone();
        again.fill_thing().unwrap();
        assert_eq!(
            serde_json::to_value(&again).unwrap(),
            serde_json::to_value(&back).unwrap()
        );
    }
}
