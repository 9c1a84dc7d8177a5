//! `verge build`: the manifest checked in full (every problem at once), then
//! the device deployment and the CloudFront stack written from it.
//!
//! Nothing here packs, composes or writes a recipe itself: the edge packages
//! are `verge_edge::package::pack`, their template `cloudformation::stack`,
//! the device's recipe `verge_device::recipe::write` over a daemon
//! configuration built as a `verge_device::config::Config` and checked by it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use verge_device::config::{Artifact, Config, Overrides, Route};
use verge_device::nn::{Backend, ModelSettings};
use verge_device::recipe::{self, Arch};
use verge_edge::cloudformation::{self, Function};
use verge_edge::package::{self, Engine, ModelSource, OnnxruntimeNode, PackError, PackOptions};
use verge_edge::quota::{Runtime, Trigger};
use verge_edge::sha256;

use crate::manifest::{App, Component};

pub struct Options {
    /// The thing group the deployment document targets (its ARN).
    pub thing_group: Option<String>,
    /// verge-device per architecture (default: found beside this program).
    pub device_binaries: Vec<(Arch, PathBuf)>,
    /// The ONNX Runtime library per architecture (default for this machine's:
    /// `ORT_DYLIB_PATH`, then the usual install prefixes).
    pub device_onnxruntime: Vec<(Arch, PathBuf)>,
    /// The TensorFlow Lite C library per architecture, shipped where a model
    /// is a TFLite file (default for this machine's: $VERGE_TENSORFLOWLITE_LIB,
    /// then the usual install prefixes).
    pub device_tensorflowlite: Vec<(Arch, PathBuf)>,
    pub onnxruntime_node: Option<PathBuf>,
    /// For `verge check`: nothing will be deployed, so the recipe's needs
    /// (binaries per platform, the artifacts' URI) are not problems.
    pub check_only: bool,
}

/// A component's models as (name, source), or none when one of them has a problem.
type ModelsOf<'a> = dyn Fn(&Component) -> Option<Vec<(String, ModelSource)>> + 'a;

/// One Lambda@Edge function, packed in memory.
pub struct EdgePlan {
    pub component: String,
    /// Its folder in `edge/`: `<component>-<trigger>`.
    pub dir: String,
    pub trigger: Trigger,
    pub engine: Engine,
    pub memory_mb: u32,
    pub timeout_s: u32,
    pub runtime: Runtime,
    pub include_body: bool,
    pub path: Option<String>,
    pub settings: BTreeMap<String, String>,
    pub package: package::Package,
}

/// One device route.
pub struct RoutePlan {
    pub route: String,
    pub component: String,
    pub settings: BTreeMap<String, String>,
}

pub struct DevicePlan {
    /// The daemon's configuration, paths as the manifest gives them, from its
    /// folder (the recipe makes them artifact names).
    pub config: Config,
    pub routes: Vec<RoutePlan>,
    pub binaries: Vec<(Arch, PathBuf)>,
    pub artifacts_uri: String,
    /// The backend the manifest names for the models; none: ONNX Runtime
    /// where its library ships, tract elsewhere.
    pub backend: Option<Backend>,
    /// The ONNX Runtime library shipped per architecture.
    pub onnxruntime: Vec<(Arch, PathBuf)>,
    /// The TensorFlow Lite library shipped per architecture (for TFLite models).
    pub tensorflowlite: Vec<(Arch, PathBuf)>,
}

impl DevicePlan {
    /// The engine the models run on, per platform where it differs.
    pub fn engines(&self) -> String {
        if let Some(b) = self.backend {
            return b.to_string();
        }
        let on = |arch: Arch| {
            let onnx = if self.onnxruntime.iter().any(|(a, _)| *a == arch) {
                "onnxruntime"
            } else {
                "tract"
            };
            if self.tensorflowlite.iter().any(|(a, _)| *a == arch) {
                format!("{onnx}+tensorflowlite")
            } else {
                onnx.to_string()
            }
        };
        let mut engines: Vec<String> = self
            .binaries
            .iter()
            .map(|(a, _)| format!("{} ({})", on(*a), a.as_str()))
            .collect();
        if engines.is_empty() {
            engines.push("tract".into());
        }
        engines.join(", ")
    }
}

pub struct Plan {
    pub edge: Vec<EdgePlan>,
    pub device: Option<DevicePlan>,
}

/// Checks everything and packs the edge functions in memory; the problems, all
/// of them, when anything is wrong.
pub fn plan(app: &App, opts: &Options) -> Result<Plan, Vec<String>> {
    let mut problems = Vec::new();
    let name_ok = !app.name.is_empty()
        && app
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    if !name_ok {
        problems.push(format!(
            "name '{}': letters, digits, '-' and '_' only",
            app.name
        ));
    }

    // Names become file and folder names (artifacts, packages): plain ones only.
    let plain = |n: &str| {
        !n.is_empty()
            && n.len() <= 64
            && !n.starts_with('.')
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    let names = app.models.keys().map(|n| ("model", n));
    for (what, n) in names.chain(app.components.keys().map(|n| ("component", n))) {
        if !plain(n) {
            problems.push(format!(
                "{what} name '{n}': letters, digits, '-', '_' and '.' (not first), at most 64"
            ));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }

    // Models: files exist and match their digest; URLs only for the edge.
    let mut models: BTreeMap<&str, Result<ModelSource, ()>> = BTreeMap::new();
    for (name, m) in &app.models {
        let source = if m.path.starts_with("https://") || m.path.starts_with("http://") {
            ModelSource::parse(&format!("{}#sha256={}", m.path, m.sha256))
                .map_err(|e| problems.push(format!("model '{name}': {e}")))
        } else {
            match app.resolve(&m.path) {
                Err(e) => {
                    problems.push(format!("model '{name}': path {e}"));
                    Err(())
                }
                Ok(path) => match std::fs::read(&path) {
                    Err(e) => {
                        problems.push(format!("model '{name}': {}: {e}", path.display()));
                        Err(())
                    }
                    Ok(bytes) => {
                        let actual = sha256(&bytes);
                        if actual != m.sha256.to_ascii_lowercase() {
                            problems.push(format!(
                                "model '{name}': {} has sha256 {actual}, the manifest says {}",
                                path.display(),
                                m.sha256
                            ));
                            Err(())
                        } else {
                            Ok(ModelSource::File(path))
                        }
                    }
                },
            }
        };
        models.insert(name, source);
    }

    // Components: files exist (and match a digest when one is given), models named.
    let mut component_paths = BTreeMap::new();
    let mut component_sha256 = BTreeMap::new();
    for (name, c) in &app.components {
        match app.resolve(&c.path) {
            Err(e) => problems.push(format!("component '{name}': path {e}")),
            Ok(path) => match std::fs::read(&path) {
                Err(e) => problems.push(format!("component '{name}': {}: {e}", path.display())),
                Ok(bytes) => {
                    let actual = sha256(&bytes);
                    match &c.sha256 {
                        Some(want) if want.to_ascii_lowercase() != actual => problems.push(format!(
                            "component '{name}': {} has sha256 {actual}, the manifest says {want}",
                            path.display()
                        )),
                        _ => {
                            component_paths.insert(name.clone(), path);
                            component_sha256.insert(name.clone(), actual);
                        }
                    }
                }
            },
        }
        for m in &c.models {
            if !app.models.contains_key(m) {
                problems.push(format!(
                    "component '{name}' loads model '{m}', which [models] does not have"
                ));
            }
        }
        if c.device.is_none() && c.edge.is_empty() {
            problems.push(format!(
                "component '{name}' runs nowhere: give it [components.{name}.device] or [[components.{name}.edge]]"
            ));
        }
        if let Some(sample) = &c.sample {
            match app.resolve(sample) {
                Ok(p) if p.is_file() => {}
                Ok(p) => problems.push(format!(
                    "component '{name}': sample {} is not a file",
                    p.display()
                )),
                Err(e) => problems.push(format!("component '{name}': sample {e}")),
            }
        }
    }
    let component_models = |c: &Component| -> Option<Vec<(String, ModelSource)>> {
        c.models
            .iter()
            .map(|m| match models.get(m.as_str()) {
                Some(Ok(source)) => Some((m.clone(), source.clone())),
                _ => None,
            })
            .collect()
    };

    let edge = plan_edge(
        app,
        opts,
        &component_paths,
        &component_models,
        &mut problems,
    );
    let device = plan_device(
        app,
        opts,
        &component_paths,
        &component_sha256,
        &component_models,
        &mut problems,
    );

    if problems.is_empty() {
        Ok(Plan { edge, device })
    } else {
        Err(problems)
    }
}

fn plan_edge(
    app: &App,
    opts: &Options,
    component_paths: &BTreeMap<String, PathBuf>,
    component_models: &ModelsOf<'_>,
    problems: &mut Vec<String>,
) -> Vec<EdgePlan> {
    let mut plans = Vec::new();
    // Providers and the binding, read once, needed only by the engines in use.
    let mut providers: BTreeMap<&'static str, Result<Vec<u8>, String>> = BTreeMap::new();
    let mut node: Option<Result<OnnxruntimeNode, String>> = None;
    let mut taken: BTreeMap<String, usize> = BTreeMap::new();
    for (name, c) in &app.components {
        for f in &c.edge {
            let trigger = f.trigger;
            let at = format!(
                "component '{name}', edge function for {}",
                trigger.event_type()
            );
            let (settings, unknown) = c.settings(&f.config);
            for k in unknown {
                problems.push(format!(
                    "{at}: setting '{k}' is not one of the component's ([components.{name}.config]); a placement overrides settings, it does not add them"
                ));
            }
            let engine = f.engine.unwrap_or_else(|| package::default_engine(trigger));
            let file = match package::provider_file(engine) {
                Ok(file) => file,
                Err(e) => {
                    problems.push(format!("{at}: {e}"));
                    continue;
                }
            };
            let provider = providers
                .entry(file)
                .or_insert_with(|| match package::find_provider(file) {
                    None => Err(format!(
                        "no {file} in $VERGE_NN_PROVIDER_DIR, beside this program or in its cargo target's wasm32-wasip2/component"
                    )),
                    Some(p) => std::fs::read(&p).map_err(|e| format!("reading {}: {e}", p.display())),
                })
                .clone();
            let provider = match provider {
                Ok(p) => p,
                Err(e) => {
                    problems.push(format!("{at}: the {} engine: {e}", engine.as_str()));
                    continue;
                }
            };
            let onnxruntime_node = if engine == Engine::Onnxruntime {
                node.get_or_insert_with(|| {
                    OnnxruntimeNode::find(opts.onnxruntime_node.clone())
                        .map_err(|e| format!("{e:#}"))
                })
                .clone()
            } else {
                Err(format!("the {} engine packs no binding", engine.as_str()))
            };
            let (Some(component), Some(models)) = (component_paths.get(name), component_models(c))
            else {
                continue; // already reported
            };
            let pack = PackOptions {
                component: component.clone(),
                provider,
                engine,
                onnxruntime_node,
                threads: f.threads,
                models,
                trigger,
                include_body: f.include_body,
                memory_mb: f.memory_mb,
                timeout_s: f.timeout_s,
                runtime: f.runtime,
                on_error: f.on_error,
                config: settings
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            };
            let package = match package::pack(&pack) {
                Ok(p) => p,
                Err(PackError::Misfit(m)) => {
                    problems.push(format!("{at}: does not fit {}: {m}", trigger.event_type()));
                    continue;
                }
                Err(e) => {
                    problems.push(format!("{at}: {e}"));
                    continue;
                }
            };
            let base = format!("{name}-{}", trigger.event_type());
            let n = taken.entry(base.clone()).or_insert(0);
            *n += 1;
            let dir = if *n == 1 { base } else { format!("{base}-{n}") };
            plans.push(EdgePlan {
                component: name.clone(),
                dir,
                trigger,
                engine,
                memory_mb: f.memory_mb,
                timeout_s: f.timeout_s,
                runtime: f.runtime,
                include_body: f.include_body,
                path: f.path.clone(),
                settings,
                package,
            });
        }
    }
    if !plans.is_empty() {
        // The template, now, so that two functions on one event and behaviour
        // are found before anything is written.
        if let Err(e) = cloudformation::stack(&functions(&plans)) {
            problems.push(format!("the CloudFront stack: {e}"));
        }
    }
    plans
}

/// The template's view of the planned functions.
pub fn functions(plans: &[EdgePlan]) -> Vec<Function> {
    plans
        .iter()
        .map(|p| Function {
            name: p.component.clone(),
            trigger: p.trigger,
            include_body: p.include_body,
            memory_mb: p.memory_mb,
            timeout_s: p.timeout_s,
            runtime: p.runtime,
            zip_sha256: sha256(&p.package.zip),
            code_key: format!("{}/function.zip", p.dir),
            source: format!("edge/{}", p.dir),
            path: p.path.clone(),
        })
        .collect()
}

fn plan_device(
    app: &App,
    opts: &Options,
    component_paths: &BTreeMap<String, PathBuf>,
    component_sha256: &BTreeMap<String, String>,
    component_models: &ModelsOf<'_>,
    problems: &mut Vec<String>,
) -> Option<DevicePlan> {
    let on_device: Vec<(&String, &Component, &toml::Table)> = app
        .components
        .iter()
        .filter_map(|(n, c)| c.device.as_ref().map(|d| (n, c, d)))
        .collect();
    if on_device.is_empty() {
        return None;
    }
    let before = problems.len();
    let daemon = app.device.daemon.clone().unwrap_or_default();
    for key in ["models", "components", "routes"] {
        if daemon.contains_key(key) {
            problems.push(format!(
                "device.daemon.{key}: the manifest's [models] and [components] make these; remove it"
            ));
        }
    }
    let mut config: Config = match toml::Value::Table(daemon).try_into() {
        Ok(c) => c,
        Err(e) => {
            problems.push(format!("device.daemon: {e}"));
            Config::default()
        }
    };
    let model_defaults = app.device.model.clone().unwrap_or_default();
    let mut backend = None;
    let mut route_plans = Vec::new();
    for (name, c, table) in on_device {
        let at = format!("component '{name}' on the device");
        match component_models(c) {
            None => continue,
            Some(list) => {
                for (m, source) in list {
                    match source {
                        ModelSource::File(path) => {
                            let mut entry = model_defaults.clone();
                            entry.insert("path".into(), path.display().to_string().into());
                            let sha256 = app.models[&m].sha256.to_ascii_lowercase();
                            entry.insert("sha256".into(), sha256.into());
                            match toml::Value::Table(entry).try_into::<ModelSettings>() {
                                Ok(settings) => {
                                    backend = settings.backend;
                                    config.models.insert(m, settings);
                                }
                                Err(e) => problems.push(format!("device.model: {e}")),
                            }
                        }
                        ModelSource::Url { url, .. } => problems.push(format!(
                            "{at}: model '{m}' is a URL ({url}); a device deployment ships its models as files"
                        )),
                    }
                }
            }
        }
        let (Some(path), Some(digest)) = (component_paths.get(name), component_sha256.get(name))
        else {
            continue;
        };
        config.components.insert(
            name.clone(),
            Artifact {
                path: path.clone(),
                sha256: digest.clone(),
            },
        );
        let mut table = table.clone();
        let route_name = match table.remove("route") {
            None => name.clone(),
            Some(toml::Value::String(s)) => s,
            Some(other) => {
                problems.push(format!("{at}: route must be a string, not {other}"));
                continue;
            }
        };
        let overrides: BTreeMap<String, String> = match table.remove("config") {
            None => BTreeMap::new(),
            Some(v) => match v.try_into() {
                Ok(o) => o,
                Err(_) => {
                    problems.push(format!("{at}: config must be a table of strings"));
                    continue;
                }
            },
        };
        let (settings, unknown) = c.settings(&overrides);
        for k in unknown {
            problems.push(format!(
                "{at}: setting '{k}' is not one of the component's ([components.{name}.config]); a placement overrides settings, it does not add them"
            ));
        }
        if table.contains_key("component") {
            problems.push(format!("{at}: component is implied: remove it"));
        }
        table.insert("component".into(), name.clone().into());
        let mut route: Route = match toml::Value::Table(table).try_into() {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("{at}: {e}"));
                continue;
            }
        };
        route.config = settings.clone();
        if config.routes.insert(route_name.clone(), route).is_some() {
            problems.push(format!("{at}: a second route named '{route_name}'"));
        }
        route_plans.push(RoutePlan {
            route: route_name,
            component: name.clone(),
            settings,
        });
    }

    let artifacts_uri = app.device.artifacts_uri.clone().unwrap_or_default();
    if artifacts_uri.is_empty() && !opts.check_only {
        problems.push(
            "device.artifacts_uri is needed for the recipe: s3://BUCKET/PREFIX (put the version in PREFIX)".into(),
        );
    }
    let binaries = match app.platforms() {
        Ok(_) if opts.check_only => Vec::new(),
        Err(e) => {
            problems.push(e);
            Vec::new()
        }
        Ok(platforms) => platforms
            .into_iter()
            .filter_map(|arch| {
                let given = opts.device_binaries.iter().find(|(a, _)| *a == arch).map(|(_, p)| p.clone());
                match given.or_else(|| default_binary(arch)) {
                    Some(p) if p.is_file() => Some((arch, p)),
                    Some(p) => {
                        problems.push(format!(
                            "device platform {}: verge-device {} is not a file (pass --device-binary {}=PATH)",
                            arch.as_str(),
                            p.display(),
                            arch.as_str()
                        ));
                        None
                    }
                    None => {
                        problems.push(format!(
                            "device platform {}: no verge-device for it found (pass --device-binary {}=PATH)",
                            arch.as_str(),
                            arch.as_str()
                        ));
                        None
                    }
                }
            })
            .collect(),
    };
    for (arch, _) in &opts.device_binaries {
        if !binaries.iter().any(|(a, _)| a == arch)
            && app.platforms().is_ok_and(|p| !p.contains(arch))
        {
            problems.push(format!(
                "--device-binary {}: not one of device.platforms",
                arch.as_str()
            ));
        }
    }
    // ONNX Runtime ships where models name no backend, for each platform
    // with a library, unless the daemon's section names its own library.
    let ships_onnxruntime = config.models.values().any(|m| m.backend.is_none())
        && config
            .onnxruntime
            .as_ref()
            .is_none_or(|o| o.library.is_none());
    let mut onnxruntime = Vec::new();
    for (arch, _) in &binaries {
        let given = opts.device_onnxruntime.iter().find(|(a, _)| a == arch);
        match given
            .map(|(_, p)| p.clone())
            .or_else(|| default_onnxruntime(*arch))
        {
            Some(p) if !p.is_file() => problems.push(format!(
                "--device-onnxruntime {}={}: not a file",
                arch.as_str(),
                p.display()
            )),
            Some(p) if ships_onnxruntime => onnxruntime.push((*arch, p)),
            _ => {}
        }
    }
    // TensorFlow Lite ships, for each platform, where a model is a TFLite
    // file, unless the daemon's section names its own library.
    let tflite: Vec<&String> = config
        .models
        .iter()
        .filter(|(_, m)| is_tflite_file(&app.dir.join(&m.path)))
        .map(|(name, _)| name)
        .collect();
    let mut tensorflowlite = Vec::new();
    if !tflite.is_empty()
        && config
            .tensorflowlite
            .as_ref()
            .is_none_or(|t| t.library.is_none())
    {
        for (arch, _) in &binaries {
            let given = opts.device_tensorflowlite.iter().find(|(a, _)| a == arch);
            match given.map(|(_, p)| p.clone()).or_else(|| default_tensorflowlite(*arch)) {
                Some(p) if p.is_file() => tensorflowlite.push((*arch, p)),
                Some(p) => problems.push(format!(
                    "--device-tensorflowlite {}={}: not a file",
                    arch.as_str(),
                    p.display()
                )),
                None => problems.push(format!(
                    "device platform {}: model{} {} {} TensorFlow Lite, and no libtensorflowlite_c for {} was found (pass --device-tensorflowlite {}=PATH)",
                    arch.as_str(),
                    if tflite.len() > 1 { "s" } else { "" },
                    tflite.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", "),
                    if tflite.len() > 1 { "are" } else { "is" },
                    arch.as_str(),
                    arch.as_str()
                )),
            }
        }
    }
    for (arch, _) in opts
        .device_onnxruntime
        .iter()
        .chain(&opts.device_tensorflowlite)
    {
        if !binaries.iter().any(|(a, _)| a == arch) && !opts.check_only {
            problems.push(format!(
                "--device-onnxruntime {}: not one of device.platforms",
                arch.as_str()
            ));
        }
    }
    // The daemon's own checks judge the configuration, as they will on the device.
    if problems.len() == before {
        let mut device = config.clone();
        device.apply(&Overrides {
            thing_name: Some("thing".into()),
            state_dir: Some("/state".into()),
            artifacts_dir: None,
        });
        if let Err(e) = device.check() {
            problems.push(format!("the device configuration: {e}"));
        }
    }
    Some(DevicePlan {
        config,
        routes: route_plans,
        binaries,
        artifacts_uri,
        backend,
        onnxruntime,
        tensorflowlite,
    })
}

/// This machine's ONNX Runtime library, where the device host would find it:
/// `ORT_DYLIB_PATH`, then the usual install prefixes (a name the loader
/// resolves is not a file to ship).
fn default_tensorflowlite(arch: Arch) -> Option<PathBuf> {
    if Arch::current() != Some(arch) {
        return None;
    }
    verge_device::nn::tensorflowlite_library_candidates(None)
        .into_iter()
        .find(|p| p.is_absolute() && p.is_file())
}

/// Whether a model file is TensorFlow Lite's (its first 8 bytes say).
fn is_tflite_file(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| verge_device::nn::is_tflite(&head))
}

fn default_onnxruntime(arch: Arch) -> Option<PathBuf> {
    if Arch::current() != Some(arch) {
        return None;
    }
    verge_device::nn::library_candidates(None)
        .into_iter()
        .find(|p| p.is_absolute() && p.is_file())
}

/// verge-device for an architecture, as this workspace builds it: this
/// machine's beside this program, others in the cargo target's
/// `<triple>/dist` (what `./dev release` builds) or `<triple>/release`.
fn default_binary(arch: Arch) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    if Arch::current() == Some(arch) {
        return Some(dir.join("verge-device"));
    }
    let triple = match arch {
        Arch::Amd64 => "x86_64-unknown-linux-gnu",
        Arch::Aarch64 => "aarch64-unknown-linux-gnu",
        Arch::Arm => "armv7-unknown-linux-gnueabihf",
    };
    ["dist", "release"]
        .iter()
        .map(|p| dir.join("..").join(triple).join(p).join("verge-device"))
        .find(|p| p.is_file())
}

/// A temporary folder, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(what: &str) -> std::io::Result<Scratch> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("verge-{what}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What `write` wrote, for the summary.
pub struct Written {
    pub recipe: Option<PathBuf>,
    pub deployment: Option<PathBuf>,
    pub device_artifacts_bytes: u64,
    pub template: Option<PathBuf>,
}

/// Writes `out/device/` and `out/edge/` (out must be new or empty).
pub fn write(app: &App, plan: &Plan, opts: &Options, out: &Path) -> anyhow::Result<Written> {
    use anyhow::Context;
    if std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some()) {
        anyhow::bail!(
            "--out {}: the folder is not empty (give a new one, or empty it)",
            out.display()
        );
    }
    let mut written = Written {
        recipe: None,
        deployment: None,
        device_artifacts_bytes: 0,
        template: None,
    };
    if !plan.edge.is_empty() {
        let edge = out.join("edge");
        for p in &plan.edge {
            let dir = edge.join(&p.dir);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::write(dir.join("function.zip"), &p.package.zip)?;
            write_json(&dir.join("verge.json"), &p.package.manifest)?;
        }
        let template = cloudformation::stack(&functions(&plan.edge))?;
        let path = edge.join("template.json");
        write_json(&path, &template)?;
        written.template = Some(path);
    }
    if let Some(device) = &plan.device {
        let dir = out.join("device");
        let w = recipe::write(&recipe::Options {
            config: device.config.clone(),
            config_dir: std::path::absolute(&app.dir)?,
            // Artifacts share one folder on the device: two `model.onnx`
            // files must not meet there.
            name_by_key: true,
            artifacts_uri: device.artifacts_uri.clone(),
            version: app.version.clone(),
            name: app.device_component(),
            binaries: device.binaries.clone(),
            onnxruntime: device.onnxruntime.clone(),
            tensorflowlite: device.tensorflowlite.clone(),
            out: dir.clone(),
            privileged: app.device.privileged,
            thing_name_in_policy: app.device.thing_name_in_policy,
        })?;
        for warning in &w.warnings {
            eprintln!("verge: warning: {warning}");
        }
        written.device_artifacts_bytes = std::fs::read_dir(&w.artifacts)?
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum();
        if let Some(target) = &opts.thing_group {
            let path = dir.join("deployment.json");
            write_json(&path, &deployment(app, target))?;
            written.deployment = Some(path);
        }
        written.recipe = Some(w.recipe);
    }
    Ok(written)
}

/// `aws greengrassv2 create-deployment --cli-input-json file://deployment.json`.
pub fn deployment(app: &App, target_arn: &str) -> Value {
    json!({
        "targetArn": target_arn,
        "deploymentName": format!("{} {}", app.name, app.version),
        "components": { app.device_component(): { "componentVersion": app.version } },
        "deploymentPolicies": {
            "failureHandlingPolicy": "ROLLBACK",
            "componentUpdatePolicy": { "timeoutInSeconds": 60, "action": "NOTIFY_COMPONENTS" }
        }
    })
}

/// A thing group's ARN, checked: `arn:aws:iot:REGION:ACCOUNT:thinggroup/NAME`.
pub fn thing_group_arn(s: &str) -> Result<String, String> {
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    let ok = parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "iot"
        && !parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && parts[5].strip_prefix("thinggroup/").is_some_and(|n| {
            !n.is_empty()
                && n.len() <= 128
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b":_-".contains(&b))
        });
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "'{s}' is not a thing group ARN: arn:aws:iot:REGION:ACCOUNT:thinggroup/NAME"
        ))
    }
}

fn write_json(path: &Path, value: &Value) -> anyhow::Result<()> {
    let mut text = serde_json::to_vec_pretty(value)?;
    text.push(b'\n');
    std::fs::write(path, text).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}
