//! The application manifest (`verge.app.toml`): an application described
//! once, for both edges. See the README's "One app, both edges" for a complete
//! example; `examples/shop/verge.app.toml` is one.
//!
//! Paths are relative to the manifest's folder, and may name environment
//! variables as `${NAME}` (built components live in a cargo target folder).
//! The device's own sections are the daemon's configuration, passed through
//! and checked by the daemon's own parser, so nothing here repeats its schema.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use verge_device::recipe::Arch;
use verge_edge::package::{Engine, OnError};
use verge_edge::quota::{Runtime, Trigger};

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("reading {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct App {
    /// The application's name: letters, digits, '-' and '_'.
    pub name: String,
    /// MAJOR.MINOR.PATCH: the Greengrass component's version.
    pub version: String,
    #[serde(default)]
    pub models: BTreeMap<String, Model>,
    pub components: BTreeMap<String, Component>,
    #[serde(default)]
    pub device: Device,
    /// Where the manifest is: what relative paths are relative to.
    #[serde(skip)]
    pub dir: PathBuf,
}

/// A model file (or, for the edge, a URL the function fetches), with its digest.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    pub path: String,
    pub sha256: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    pub path: String,
    /// Checked when given (a component's digest changes with every build).
    pub sha256: Option<String>,
    /// The models it loads, by the names in `[models]`.
    #[serde(default)]
    pub models: Vec<String>,
    /// Its settings (`wasi:config`) wherever it runs; a placement may override
    /// some of these keys, never add others.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// The content type of its inputs (`verge check`, warm durations).
    #[serde(default)]
    pub content_type: String,
    /// An input whose warm duration at the edge the summary measures.
    pub sample: Option<String>,
    /// Its route on the device: the daemon's route keys (`deadline_ms`,
    /// `memory_mb`, `concurrency`, `cloud = { topic = … }`, …), plus `route`
    /// (the route's name, default the component's) and `config` (overrides).
    pub device: Option<toml::Table>,
    /// Its Lambda@Edge functions.
    #[serde(default)]
    pub edge: Vec<EdgeFunction>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeFunction {
    pub trigger: Trigger,
    /// Default: onnxruntime at origin triggers, compact at viewer ones.
    pub engine: Option<Engine>,
    #[serde(default = "default_memory")]
    pub memory_mb: u32,
    #[serde(default = "default_timeout")]
    pub timeout_s: u32,
    /// The Lambda runtime: nodejs22.x (default) or nodejs24.x.
    #[serde(default)]
    pub runtime: Runtime,
    #[serde(default)]
    pub include_body: bool,
    #[serde(default = "default_on_error")]
    pub on_error: OnError,
    /// Intra-op threads for the onnxruntime engine (0: by memory).
    #[serde(default)]
    pub threads: u32,
    /// The cache behaviour's path pattern; none: the default behaviour.
    pub path: Option<String>,
    /// Settings that differ from the component's.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

fn default_memory() -> u32 {
    128
}
fn default_timeout() -> u32 {
    5
}
fn default_on_error() -> OnError {
    OnError::Pass
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// The architectures the recipe has a manifest for (default: this machine's).
    #[serde(default)]
    pub platforms: Vec<String>,
    /// The Greengrass component's name (default `verge.<name>`).
    pub component: Option<String>,
    /// Where the artifacts will be uploaded: s3://BUCKET/PREFIX.
    pub artifacts_uri: Option<String>,
    #[serde(default)]
    pub privileged: bool,
    #[serde(default)]
    pub thing_name_in_policy: bool,
    /// Keys every model gets on the device (`backend`, `threads`, `target`, …).
    pub model: Option<toml::Table>,
    /// The rest of the daemon's configuration (`[api]`, `[outbox]`, `[mqtt]`,
    /// `[state]`, `[health]`, `[onnxruntime]`), as `verge-device serve` reads it.
    pub daemon: Option<toml::Table>,
}

impl App {
    pub fn load(path: &Path) -> Result<App, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|error| ManifestError::Read {
            path: path.into(),
            error,
        })?;
        let mut app: App = toml::from_str(&text).map_err(|e| ManifestError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        app.dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        Ok(app)
    }

    /// A path of the manifest, `${NAME}` expanded and made relative to its folder.
    pub fn resolve(&self, path: &str) -> Result<PathBuf, String> {
        let expanded = expand(path)?;
        let p = PathBuf::from(expanded);
        let p = if p.is_absolute() { p } else { self.dir.join(p) };
        // Absolute: the daemon configuration made from these lives elsewhere.
        std::path::absolute(&p).map_err(|e| format!("{}: {e}", p.display()))
    }

    /// The Greengrass component name.
    pub fn device_component(&self) -> String {
        self.device
            .component
            .clone()
            .unwrap_or_else(|| format!("verge.{}", self.name))
    }

    /// The platforms, parsed (default: this machine's).
    pub fn platforms(&self) -> Result<Vec<Arch>, String> {
        if self.device.platforms.is_empty() {
            return Arch::current().map(|a| vec![a]).ok_or_else(|| {
                "this machine's architecture has no Greengrass name: set device.platforms".into()
            });
        }
        self.device
            .platforms
            .iter()
            .map(|p| {
                p.parse::<Arch>()
                    .map_err(|e| format!("device.platforms: {e}"))
            })
            .collect()
    }
}

impl Component {
    /// The settings of a placement: the component's, with `overrides` on top.
    /// An override of a key the component does not set is a problem (a typo
    /// would otherwise silently leave the default).
    pub fn settings(
        &self,
        overrides: &BTreeMap<String, String>,
    ) -> (BTreeMap<String, String>, Vec<String>) {
        let mut settings = self.config.clone();
        let mut unknown = Vec::new();
        for (k, v) in overrides {
            if !self.config.contains_key(k) {
                unknown.push(k.clone());
            }
            settings.insert(k.clone(), v.clone());
        }
        (settings, unknown)
    }
}

/// `${NAME}` replaced by the variable's value; an unset variable is an error.
pub fn expand(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("'{s}': '${{' without '}}'"))?;
        let name = &after[..end];
        let value = std::env::var(name)
            .map_err(|_| format!("'{s}' names ${{{name}}}, which is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_replaces_variables_and_refuses_unset_ones() {
        // SAFETY: set before any thread of this test reads the environment.
        unsafe { std::env::set_var("VERGE_APP_TEST_DIR", "/opt/x") };
        assert_eq!(
            expand("${VERGE_APP_TEST_DIR}/a.wasm").unwrap(),
            "/opt/x/a.wasm"
        );
        assert_eq!(expand("plain/path").unwrap(), "plain/path");
        assert!(
            expand("${VERGE_APP_TEST_UNSET_9}/a")
                .unwrap_err()
                .contains("not set")
        );
        assert!(expand("${OPEN").unwrap_err().contains("without"));
    }

    #[test]
    fn an_override_of_an_unknown_key_is_reported() {
        let c: Component =
            toml::from_str("path = \"a.wasm\"\nconfig = { low = \"0.2\", high = \"0.4\" }")
                .unwrap();
        let (s, unknown) = c.settings(&BTreeMap::from([
            ("high".to_string(), "0.5".to_string()),
            ("hgih".to_string(), "0.9".to_string()),
        ]));
        assert_eq!(s["high"], "0.5");
        assert_eq!(s["low"], "0.2");
        assert_eq!(unknown, ["hgih"]);
    }
}
