//! `verge-device recipe`: an AWS IoT Greengrass v2 recipe for a daemon
//! configuration, and the folder of artifacts to upload beside it.
//!
//! The recipe is written as JSON (`recipe.json`): Greengrass takes JSON or YAML
//! recipes, JSON is valid YAML 1.2, `serde_json` is already here, and JSON has
//! none of YAML's quoting traps. One recipe serves both nuclei, the classic
//! (Java) nucleus and nucleus lite, so it keeps to what lite accepts
//! (`aws-greengrass-lite`, `docs/RECIPE_SUPPORT_CHANGES.md`, and its sources):
//!
//! * keys spelt exactly as lite reads them (`Uri`, lifecycle phase `run`,
//!   `Script`, `RequiresPrivilege`); the classic nucleus reads keys in any case;
//! * one manifest per architecture, each with `os: linux`, `runtime: "*"` and
//!   its own `Lifecycle` (no global lifecycle, no `Selections`);
//! * a `run` step only: no `shutdown` (the daemon drains on SIGTERM), no
//!   `recover`, no `Skipif`, and no `Timeout` (on the classic nucleus a `run`
//!   timeout would stop the daemon after that long);
//! * recipe variables only among those lite substitutes: `{artifacts:path}`,
//!   `{work:path}`, `{iot:thingName}`; none in the component configuration. The
//!   daemon's configuration is an artifact file, so nothing interpolates it:
//!   `{thing}` in its topics stays for the daemon to fill at run time.
//!
//! Every artifact carries `Algorithm: SHA-256` and the base64 of its raw
//! SHA-256 `Digest`; the files are copied into `OUT/artifacts/`, flat, named as
//! the recipe's URIs name them.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::prelude::{BASE64_STANDARD, Engine as _};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::api::Listen;
use crate::config::{Config, ConfigError, Overrides, PathField, THING};

/// The daemon configuration's file name among the artifacts.
pub const CONFIG_ARTIFACT: &str = "verge.json";
/// The API's Unix socket under Greengrass, in the state folder
/// (`{work:path}/state/api.sock` on the device).
pub const API_SOCKET: &str = "api.sock";
/// The recipe's file name in the output folder.
pub const RECIPE_FILE: &str = "recipe.json";
/// The folder, in the output folder, whose files go to the artifacts URI.
pub const ARTIFACTS_DIR: &str = "artifacts";
/// The ONNX Runtime library's file name among the artifacts. Each
/// architecture's copy has its own URI (`PREFIX/ARCH/libonnxruntime.so`) and
/// lands under this one name on the device, so one configuration names it.
pub const ONNXRUNTIME_ARTIFACT: &str = "libonnxruntime.so";
/// The TensorFlow Lite C library's, shipped per architecture the same way.
pub const TENSORFLOWLITE_ARTIFACT: &str = "libtensorflowlite_c.so";

/// An engine's native library, shipped per architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineLibrary {
    Onnxruntime,
    Tensorflowlite,
}

impl EngineLibrary {
    /// Its file name among the artifacts (and on the device).
    pub fn artifact(self) -> &'static str {
        match self {
            EngineLibrary::Onnxruntime => ONNXRUNTIME_ARTIFACT,
            EngineLibrary::Tensorflowlite => TENSORFLOWLITE_ARTIFACT,
        }
    }

    fn flag(self) -> &'static str {
        match self {
            EngineLibrary::Onnxruntime => "--onnxruntime",
            EngineLibrary::Tensorflowlite => "--tensorflowlite",
        }
    }

    /// The configuration's own `library` for this engine.
    fn configured(self, config: &mut Config) -> &mut Option<PathBuf> {
        match self {
            EngineLibrary::Onnxruntime => &mut config.onnxruntime.get_or_insert_default().library,
            EngineLibrary::Tensorflowlite => {
                &mut config.tensorflowlite.get_or_insert_default().library
            }
        }
    }
}
/// Nucleus lite reads a component's recipe file into a buffer of this many
/// bytes (`ggl_recipe_get_from_file` in its `ggl-recipe` module).
pub const LITE_RECIPE_MAX_BYTES: usize = 8196;

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Invalid(String),
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

fn invalid(message: impl Into<String>) -> RecipeError {
    RecipeError::Invalid(message.into())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RecipeError + '_ {
    move |error| RecipeError::Io {
        path: path.into(),
        error,
    }
}

/// A Greengrass platform architecture, by the name Greengrass gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Arch {
    Amd64,
    Aarch64,
    Arm,
}

impl Arch {
    pub const ALL: [Arch; 3] = [Arch::Amd64, Arch::Aarch64, Arch::Arm];

    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Aarch64 => "aarch64",
            Arch::Arm => "arm",
        }
    }

    /// The ELF `e_machine` of a binary built for it.
    fn elf_machine(self) -> u16 {
        match self {
            Arch::Amd64 => 0x3e,
            Arch::Aarch64 => 0xb7,
            Arch::Arm => 0x28,
        }
    }

    /// The architecture this binary was built for, if Greengrass names it.
    pub fn current() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::Amd64),
            "aarch64" => Some(Arch::Aarch64),
            "arm" => Some(Arch::Arm),
            _ => None,
        }
    }

    /// The binary's file name among the artifacts.
    pub fn binary_name(self) -> String {
        format!("verge-device-{}", self.as_str())
    }
}

impl FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Arch, String> {
        match s {
            "amd64" | "x86_64" => Ok(Arch::Amd64),
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            "arm" => Ok(Arch::Arm),
            _ => Err(format!(
                "unknown architecture '{s}' (Greengrass's names: amd64, aarch64, arm)"
            )),
        }
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Options {
    /// The daemon configuration as written ([`Config::read`], or built in
    /// memory): paths as the daemon resolves them from `config_dir`.
    pub config: Config,
    /// The folder relative paths start from (a configuration file's folder).
    pub config_dir: PathBuf,
    /// Name each model's and component's artifact after its name in the
    /// configuration (`NAME.onnx`, `NAME.wasm`) rather than its file's, so
    /// two `model.onnx` files can ship side by side.
    pub name_by_key: bool,
    /// Where the artifacts will be: `s3://BUCKET/PREFIX`.
    pub artifacts_uri: String,
    /// The component version (semantic versioning).
    pub version: String,
    /// The component name.
    pub name: String,
    /// The verge-device binary per architecture; none: this very binary.
    pub binaries: Vec<(Arch, PathBuf)>,
    /// The ONNX Runtime library per architecture, shipped to the devices of
    /// that architecture; models that name no backend run on it there, and
    /// on tract elsewhere ([`crate::nn::ModelSettings::backend`]).
    pub onnxruntime: Vec<(Arch, PathBuf)>,
    /// The TensorFlow Lite C library per architecture; TFLite models run on it.
    pub tensorflowlite: Vec<(Arch, PathBuf)>,
    /// The output folder: must not exist, or be empty.
    pub out: PathBuf,
    /// Run the daemon as root (`RequiresPrivilege`), e.g. to read the core
    /// device's own private key.
    pub privileged: bool,
    /// Write `{iot:thingName}` in the IPC policy's topics instead of a
    /// wildcard (see [`policy_resource`]).
    pub thing_name_in_policy: bool,
}

/// What was written.
#[derive(Debug)]
pub struct Written {
    pub recipe: PathBuf,
    pub artifacts: PathBuf,
    /// Artifacts per manifest (the binary included).
    pub artifacts_per_manifest: usize,
    pub manifests: usize,
    pub recipe_bytes: usize,
    /// Things that work on one nucleus and not the other, or may not work.
    pub warnings: Vec<String>,
}

/// One file shipped as an artifact.
struct File {
    name: String,
    source: PathBuf,
    digest: [u8; 32],
    what: String,
}

/// The files the configuration names, by artifact name.
struct Files {
    list: Vec<File>,
}

impl Files {
    /// Adds `path` as an artifact named by its file name; the same content
    /// under the same name is shipped once.
    fn add(
        &mut self,
        path: &Path,
        what: &str,
        sha256: Option<&str>,
        name: Option<String>,
    ) -> Result<String, RecipeError> {
        let name = artifact_name(name.as_deref().map_or(path, Path::new), what)?;
        if name == CONFIG_ARTIFACT || Arch::ALL.iter().any(|a| a.binary_name() == name) {
            return Err(invalid(format!(
                "{what} {} is named {name}, a name the recipe gives to its own artifacts: rename the file",
                path.display()
            )));
        }
        let digest = sha256_file(path).map_err(|e| match e {
            RecipeError::Io { path, error } => {
                invalid(format!("{what} {}: {error}", path.display()))
            }
            e => e,
        })?;
        if let Some(expected) = sha256 {
            let actual = format!("{digest:x}");
            if !actual.eq_ignore_ascii_case(expected) {
                return Err(ConfigError::Digest {
                    what: what.into(),
                    path: path.into(),
                    expected: expected.to_ascii_lowercase(),
                    actual,
                }
                .into());
            }
        }
        if let Some(other) = self.list.iter().find(|f| f.name == name) {
            if other.digest == <[u8; 32]>::from(digest) {
                return Ok(name);
            }
            return Err(invalid(format!(
                "{what} {} and {} {} are both named {name}, and artifacts share one folder on the device: rename one",
                path.display(),
                other.what,
                other.source.display()
            )));
        }
        self.list.push(File {
            name: name.clone(),
            source: path.into(),
            digest: digest.into(),
            what: what.into(),
        });
        Ok(name)
    }
}

/// A file name that is safe as the last segment of an S3 URI and a file name
/// on the device.
fn artifact_name(path: &Path, what: &str) -> Result<String, RecipeError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        return Err(invalid(format!(
            "{what} {}: an artifact's file name must be letters, digits, '.', '_' and '-' (it ends the artifact's URI)",
            path.display()
        )));
    }
    Ok(name.to_string())
}

fn sha256_file(path: &Path) -> Result<sha2::digest::Output<Sha256>, RecipeError> {
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            return Ok(hasher.finalize());
        }
        hasher.update(&buf[..n]);
    }
}

/// Checks that `path` is an ELF file (an executable, a library) for `arch`;
/// `what` is the option that named it.
fn check_elf(what: &str, arch: Arch, path: &Path) -> Result<(), RecipeError> {
    let mut header = [0u8; 20];
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let elf = file.read_exact(&mut header).is_ok() && header[..4] == *b"\x7fELF";
    // e_machine is at offset 18, in the byte order EI_DATA (offset 5) says.
    let machine = match header[5] {
        2 => u16::from_be_bytes([header[18], header[19]]),
        _ => u16::from_le_bytes([header[18], header[19]]),
    };
    if !elf || machine != arch.elf_machine() {
        return Err(invalid(format!(
            "{what} {}={}: not a Linux binary for {} (ELF machine {machine:#x}, expected {:#x})",
            arch.as_str(),
            path.display(),
            arch.as_str(),
            arch.elf_machine()
        )));
    }
    Ok(())
}

/// The IPC policy resource that allows publishing to a daemon topic.
///
/// `{thing}` is the device's name, known only on the device. In policies,
/// `{iot:thingName}` is substituted by the classic nucleus from v2.6.0 only
/// when its `interpolateComponentConfiguration` is set, and by nucleus lite
/// only after v2.6.0 (released lite compares it literally, so it would match
/// nothing). So by default `{thing}` becomes a wildcard both accept: `+` (MQTT's
/// one-level wildcard, which both nuclei accept in `aws.greengrass.ipc.mqttproxy`
/// policies) when it is a whole topic level, `*` (classic nucleus v2.6.0+, lite)
/// within a level. With `thing_variable`, `{iot:thingName}`. A literal `*` or
/// `?` is escaped as `${*}`, `${?}`.
pub fn policy_resource(topic: &str, thing_variable: bool) -> Result<String, RecipeError> {
    let rest = topic.replace(THING, "");
    if rest.contains(['{', '}']) || topic.contains("${") {
        return Err(invalid(format!(
            "topic '{topic}': braces other than {THING} would read as recipe variables in a Greengrass policy"
        )));
    }
    let level = |level: &str| {
        let level = level.replace('*', "${*}").replace('?', "${?}");
        if thing_variable {
            level.replace(THING, "{iot:thingName}")
        } else if level == THING {
            "+".to_string()
        } else {
            level.replace(THING, "*")
        }
    };
    Ok(topic.split('/').map(level).collect::<Vec<_>>().join("/"))
}

fn check_options(opts: &Options) -> Result<String, RecipeError> {
    let name_ok = !opts.name.is_empty()
        && opts.name.len() <= 128
        && opts
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !name_ok {
        return Err(invalid(format!(
            "--name '{}': a component name is letters, digits, '-', '_' and '.' (at most 128)",
            opts.name
        )));
    }
    let core = opts.version.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    let semver = parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && opts.version.len() <= 64;
    if !semver {
        return Err(invalid(format!(
            "--version '{}': Greengrass wants a semantic version, MAJOR.MINOR.PATCH",
            opts.version
        )));
    }
    let uri = opts.artifacts_uri.trim_end_matches('/');
    let bucket = uri
        .strip_prefix("s3://")
        .map(|r| r.split('/').next().unwrap_or(""));
    if bucket.is_none_or(str::is_empty) || uri.contains(char::is_whitespace) {
        return Err(invalid(format!(
            "--artifacts-uri '{}': expected s3://BUCKET/PREFIX",
            opts.artifacts_uri
        )));
    }
    Ok(uri.to_string())
}

/// Writes `OUT/recipe.json` and `OUT/artifacts/` for the configuration.
pub fn write(opts: &Options) -> Result<Written, RecipeError> {
    let uri = check_options(opts)?;

    let mut binaries = opts.binaries.clone();
    if binaries.is_empty() {
        let arch = Arch::current().ok_or_else(|| {
            invalid("this machine's architecture has no Greengrass name: pass --binary ARCH=PATH")
        })?;
        let exe =
            std::env::current_exe().map_err(|e| invalid(format!("finding this binary: {e}")))?;
        binaries.push((arch, exe));
    }
    binaries.sort_by_key(|(a, _)| *a);
    if binaries.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(invalid("--binary names an architecture twice"));
    }
    let mut binary_digests = Vec::new();
    for (arch, path) in &binaries {
        check_elf("--binary", *arch, path)?;
        binary_digests.push(<[u8; 32]>::from(sha256_file(path)?));
    }
    let mut libraries: Vec<(EngineLibrary, Arch, PathBuf, [u8; 32])> = Vec::new();
    let per_arch = [
        (EngineLibrary::Onnxruntime, &opts.onnxruntime),
        (EngineLibrary::Tensorflowlite, &opts.tensorflowlite),
    ];
    for (lib, list) in per_arch {
        let flag = lib.flag();
        for (arch, path) in list {
            if !binaries.iter().any(|(a, _)| a == arch) {
                return Err(invalid(format!(
                    "{flag} {}: the recipe has no manifest for {} (add --binary {}=PATH)",
                    arch.as_str(),
                    arch.as_str(),
                    arch.as_str()
                )));
            }
            if libraries.iter().any(|(l, a, _, _)| *l == lib && a == arch) {
                return Err(invalid(format!("{flag} names an architecture twice")));
            }
            check_elf(flag, *arch, path)?;
            libraries.push((lib, *arch, path.clone(), sha256_file(path)?.into()));
        }
        if !list.is_empty() && lib.configured(&mut opts.config.clone()).is_some() {
            let section = lib.flag().trim_start_matches('-');
            return Err(invalid(format!(
                "{flag} ships a library per architecture, and {section}.library names one: keep one of the two",
            )));
        }
    }

    // The configuration checked as the daemon will check it on the device,
    // with {thing} kept: the thing name and the state folder come from the
    // recipe's command line there.
    let overrides = Overrides {
        thing_name: Some(THING.into()),
        state_dir: Some("{work:path}/state".into()),
        artifacts_dir: None,
    };
    let mut config = opts.config.clone();
    config.apply(&overrides);
    config.check()?;
    let base = match &opts.config.artifacts_dir {
        Some(d) => opts.config_dir.join(d),
        None => opts.config_dir.clone(),
    };

    // Every component and model ships; in the shipped copy each path
    // becomes an artifact's file name. Other relative paths are files
    // beside the configuration: the CA and the ONNX Runtime library ship; a
    // certificate, a key or a token does not.
    let mut shipped = opts.config.clone();
    shipped.thing_name = None;
    shipped.state_dir = None;
    shipped.artifacts_dir = None;
    let mut files = Files { list: Vec::new() };
    let mut refused = None;
    shipped.visit_paths(|field, path| {
        if refused.is_some() {
            return;
        }
        let source = base.join(&*path);
        let what = field.to_string();
        let shipped = match field {
            PathField::Model { name, sha256 } | PathField::Component { name, sha256 } => {
                let ext = path
                    .extension()
                    .map_or(String::new(), |e| format!(".{}", e.to_string_lossy()));
                let key = opts.name_by_key.then(|| format!("{name}{ext}"));
                files.add(&source, &what, Some(sha256), key)
            }
            _ if path.is_absolute() => return,
            PathField::Secret(_) => Err(invalid(format!(
                "{what} '{}' is relative, so it would ship as an artifact to every device: \
                 a device's certificate, key or token belongs on the device; give its absolute path there",
                path.display()
            ))),
            PathField::OnnxruntimeLibrary | PathField::TensorflowliteLibrary
                if binaries.len() > 1 =>
            {
                Err(invalid(format!(
                "{what} '{}' is relative, so it would ship as one artifact for every architecture: \
                 give the library's absolute path on the device, or make one recipe per architecture",
                    path.display()
                )))
            }
            PathField::OnnxruntimeLibrary
            | PathField::TensorflowliteLibrary
            | PathField::MqttCa => {
                files.add(&source, &what, None, None)
            }
        };
        match shipped {
            Ok(name) => *path = name.into(),
            Err(e) => refused = Some(e),
        }
    });
    if let Some(e) = refused {
        return Err(e);
    }
    for (lib, ..) in &libraries {
        let name = lib.artifact();
        if let Some(f) = files.list.iter().find(|f| f.name == name) {
            return Err(invalid(format!(
                "{} {} is named {name}, the name {} gives each architecture's library on the device: rename the file",
                f.what,
                f.source.display(),
                lib.flag()
            )));
        }
        *lib.configured(&mut shipped) = Some(name.into());
    }
    // Under Greengrass the API is a Unix socket in the component's state
    // folder unless the configuration says otherwise: file permissions, not
    // a port any local process can reach, decide who calls it.
    let mut warnings = Vec::new();
    match &shipped.api.listen {
        None => shipped.api.listen = Some(Listen::Unix(API_SOCKET.into())),
        Some(listen @ Listen::Tcp(_)) if shipped.api.token_file.is_none() => {
            warnings.push(format!(
                "api.listen is TCP ({listen}) with no api.token_file: any process on the device can call the API \
                 (leave listen out for a Unix socket, or set a token file)"
            ))
        }
        Some(_) => {}
    }
    if let Some(why) = config.uplink.ignored_mqtt(config.mqtt.is_some()) {
        warnings.push(why.to_string());
    }
    let config_bytes = shipped.to_json();
    let config_digest: [u8; 32] = Sha256::digest(&config_bytes).into();

    // The IPC policy for publishing the routes' outcomes and health through
    // Greengrass (UpdateState needs none).
    let mut topics: Vec<&str> = config
        .routes
        .values()
        .filter_map(|r| r.cloud.as_ref().map(|c| c.topic.as_str()))
        .collect();
    if config.has_uplink() || !topics.is_empty() {
        topics.push(&config.health.topic);
    }
    let mut resources: Vec<String> = Vec::new();
    for topic in topics {
        let r = policy_resource(topic, opts.thing_name_in_policy)?;
        if !resources.contains(&r) {
            resources.push(r);
        }
    }

    // And for the routes' local pub/sub topics: `*` for a whole-level
    // {thing} too (MQTT's `+` is not a wildcard in pubsub policies).
    let mut local: Vec<String> = Vec::new();
    for topic in config.routes.values().filter_map(|r| r.local.as_ref()) {
        let r = policy_resource(&topic.topic, opts.thing_name_in_policy)?
            .split('/')
            .map(|level| if level == "+" { "*" } else { level })
            .collect::<Vec<_>>()
            .join("/");
        if !local.contains(&r) {
            local.push(r);
        }
    }

    let artifact = |name: &str, digest: &[u8; 32], execute: bool| {
        json!({
            "Uri": format!("{uri}/{name}"),
            "Digest": BASE64_STANDARD.encode(digest),
            "Algorithm": "SHA-256",
            "Unarchive": "NONE",
            "Permission": { "Read": "OWNER", "Execute": if execute { "OWNER" } else { "NONE" } },
        })
    };
    let manifests: Vec<Value> = binaries
        .iter()
        .zip(&binary_digests)
        .map(|((arch, _), digest)| {
            let binary = arch.binary_name();
            let mut artifacts = vec![
                artifact(&binary, digest, true),
                artifact(CONFIG_ARTIFACT, &config_digest, false),
            ];
            artifacts.extend(files.list.iter().map(|f| artifact(&f.name, &f.digest, false)));
            for (lib, _, _, digest) in libraries.iter().filter(|(_, a, _, _)| a == arch) {
                artifacts.push(artifact(
                    &format!("{}/{}", arch.as_str(), lib.artifact()),
                    digest,
                    false,
                ));
            }
            let script = format!(
                "exec \"{{artifacts:path}}/{binary}\" serve --config \"{{artifacts:path}}/{CONFIG_ARTIFACT}\" \
                 --thing-name \"{{iot:thingName}}\" --state-dir \"{{work:path}}/state\" --artifacts-dir \"{{artifacts:path}}\""
            );
            json!({
                "Platform": { "os": "linux", "architecture": arch.as_str(), "runtime": "*" },
                "Lifecycle": { "run": { "RequiresPrivilege": opts.privileged, "Script": script } },
                "Artifacts": artifacts,
            })
        })
        .collect();
    let mut recipe = json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": opts.name,
        "ComponentVersion": opts.version,
        "ComponentType": "aws.greengrass.generic",
        "ComponentDescription": "verge-device: verge inference components (WebAssembly) on the device, a local HTTP API, durable state, and a durable outbox sent to AWS IoT Core.",
        "ComponentPublisher": "verge",
    });
    let mut access = serde_json::Map::new();
    let policies = [
        (
            "mqttproxy",
            "aws.greengrass#PublishToIoTCore",
            resources,
            "route outcomes and health to AWS IoT Core",
        ),
        (
            "pubsub",
            "aws.greengrass#PublishToTopic",
            local,
            "route outcomes to device applications on local pub/sub",
        ),
    ];
    for (service, operation, resources, what) in policies {
        if !resources.is_empty() {
            let policy = json!({
                "policyDescription": format!("verge-device publishes {what}"),
                "operations": [operation],
                "resources": resources,
            });
            access.insert(
                format!("aws.greengrass.ipc.{service}"),
                json!({ format!("{}:{service}:1", opts.name): policy }),
            );
        }
    }
    if !access.is_empty() {
        recipe["ComponentConfiguration"] =
            json!({ "DefaultConfiguration": { "accessControl": access } });
    }
    recipe["Manifests"] = Value::Array(manifests);

    // The output folder.
    if std::fs::read_dir(&opts.out).is_ok_and(|mut d| d.next().is_some()) {
        return Err(invalid(format!(
            "--out {}: the folder is not empty (give a new one, or empty it)",
            opts.out.display()
        )));
    }
    let artifacts_dir = opts.out.join(ARTIFACTS_DIR);
    std::fs::create_dir_all(&artifacts_dir).map_err(io(&artifacts_dir))?;
    let copy = |source: &Path, name: &str| {
        let to = artifacts_dir.join(name);
        std::fs::copy(source, &to).map(|_| ()).map_err(io(&to))
    };
    for (arch, path) in &binaries {
        copy(path, &arch.binary_name())?;
    }
    for f in &files.list {
        copy(&f.source, &f.name)?;
    }
    for (lib, arch, path, _) in &libraries {
        let dir = artifacts_dir.join(arch.as_str());
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        copy(path, &format!("{}/{}", arch.as_str(), lib.artifact()))?;
    }
    let config_path = artifacts_dir.join(CONFIG_ARTIFACT);
    std::fs::write(&config_path, &config_bytes).map_err(io(&config_path))?;

    // The copy as the device will read it: it loads, and names what shipped.
    let device = Overrides {
        artifacts_dir: Some(std::path::absolute(&artifacts_dir).map_err(io(&artifacts_dir))?),
        ..overrides
    };
    let shipped = Config::load(&config_path, &device)?;
    for (name, c) in &shipped.components {
        crate::config::verify(&format!("component '{name}'"), &c.path, &c.sha256)?;
    }
    for (name, m) in &shipped.models {
        crate::config::verify(&format!("model '{name}'"), &m.path, &m.sha256)?;
    }

    let mut text = serde_json::to_string_pretty(&recipe).expect("JSON");
    text.push('\n');
    let recipe_path = opts.out.join(RECIPE_FILE);
    std::fs::write(&recipe_path, &text).map_err(io(&recipe_path))?;

    let compact = recipe.to_string().len();
    if text.len() > LITE_RECIPE_MAX_BYTES {
        warnings.push(format!(
            "{RECIPE_FILE} is {} bytes ({compact} without spaces): Greengrass nucleus lite reads at most \
             {LITE_RECIPE_MAX_BYTES} bytes of a recipe file{}",
            text.len(),
            if compact > LITE_RECIPE_MAX_BYTES {
                ", so lite cannot deploy it: ship fewer files (one architecture per recipe, say)"
            } else {
                ", so a local deployment of this file fails on lite"
            }
        ));
    }
    Ok(Written {
        recipe: recipe_path,
        artifacts: artifacts_dir,
        artifacts_per_manifest: 2
            + files.list.len()
            + binaries
                .iter()
                .map(|(arch, _)| libraries.iter().filter(|(_, a, _, _)| a == arch).count())
                .max()
                .unwrap_or(0),
        manifests: binaries.len(),
        recipe_bytes: text.len(),
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_is_written_as_greengrass_prints_it() {
        let empty: [u8; 32] = Sha256::digest(b"").into();
        assert_eq!(
            BASE64_STANDARD.encode(empty),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }

    #[test]
    fn thing_becomes_a_wildcard_or_the_recipe_variable() {
        let r = |t: &str, v: bool| policy_resource(t, v).unwrap();
        assert_eq!(r("verge/{thing}/health", false), "verge/+/health");
        assert_eq!(r("verge/dev-{thing}/x", false), "verge/dev-*/x");
        assert_eq!(
            r("verge/{thing}/health", true),
            "verge/{iot:thingName}/health"
        );
        assert_eq!(r("plain/topic", false), "plain/topic");
        assert_eq!(r("a*b/c?", false), "a${*}b/c${?}");
        assert!(policy_resource("verge/{site}/x", false).is_err());
        assert!(policy_resource("verge/${thing}", false).is_err());
    }
}
