//! `verge-device recipe`: the recipe is read back, every artifact's digest is
//! checked against its file, the configuration it ships loads as the device
//! would load it, and the recipe keeps to Greengrass nucleus lite's rules.
//!
//! The rules of nucleus lite's `docs/RECIPE_SUPPORT_CHANGES.md` checked by
//! [`follows_lite_rules`], in the document's words:
//!
//! 1. "All the keys in a recipe are now case sensitive": every key is one lite
//!    reads, spelt as it reads it (its sample recipe: "Notice URI needs to
//!    Uri(Camel case)"; lifecycle phases in lower case, `run`).
//! 2. "Only linux lifecycles are supported": every manifest has `os: linux`.
//! 3. "Only generic component (`aws.greengrass.generic`) recipe types are
//!    supported": `ComponentType` is `aws.greengrass.generic`.
//! 4. "Some lifecycle steps are not currently supported: shutdown, recover,
//!    bootstrap (partially)": the lifecycle is `run` alone, and no key in any
//!    case is `shutdown`, `recover` or `bootstrap`.
//! 5. "`Skipif` section for a given lifecycle step is also not supported": no
//!    key in any case is `skipif`.
//! 6. "Refering to global lifecycle requires mentioning `all` field": there is
//!    no global `Lifecycle` and no `Selections`; each manifest has its own.
//! 7. "\"runtime\": \"*\" (for Greengrass V2) or \"runtime\": \"aws_nucleus_lite\"
//!    is required": every manifest's platform has one of them.
//! 8. "Regex support is not available within recipe": no platform value is a
//!    `/regex/`.
//! 9. "Greengrass nucleus lite only support variable replacement for following
//!    cases: artifacts:path, artifacts:decompressedPath, kernel:rootPath,
//!    iot:thingName, work:path, Limited configuration:json_pointer support":
//!    every `{…}` is one of the first five; no `{configuration:…}` at all.
//! 10. "Component_dependency_name prefixes are not supported for recipe variable
//!     replacement": no three-part `{name:type:key}`.
//! 11. "Recipe variable interpolation for component configuration is not
//!     supported": no recipe variable in `ComponentConfiguration` (unless asked
//!     for with `--thing-name-in-policy`, and then only `{iot:thingName}` in a
//!     policy's resources).
//!
//! And from lite's sources: artifacts `Algorithm` is `SHA-256` and `Digest` the
//! base64 of the raw digest (`ggdeploymentd`), `Unarchive` is `NONE` or `ZIP`,
//! `Permission` values are `NONE`/`OWNER`/`ALL`; policy resources pass lite's
//! validator (no bare `?`; `${` only as `${*}`, `${?}`, `${$}`); the recipe
//! fits the 8196 bytes lite reads of a recipe file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::prelude::{BASE64_STANDARD, Engine as _};
use serde_json::Value;
use sha2::{Digest, Sha256};
use verge_device::config::{Config, Overrides};
use verge_testkit::{scratch, sha256};

fn verge_device() -> Command {
    Command::new(env!("CARGO_BIN_EXE_verge-device"))
}

/// The first bytes of an ELF executable for `machine` (all the generator
/// looks at), then some bytes to hash.
fn fake_elf(path: &Path, machine: u16) {
    let mut bytes = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0".to_vec();
    bytes.extend(machine.to_le_bytes());
    bytes.extend(b"not really a program");
    std::fs::write(path, bytes).unwrap();
}

fn recipe(args: &[&str]) -> Output {
    verge_device().arg("recipe").args(args).output().unwrap()
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn refused(out: &Output, says: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(says), "expected '{says}' in: {stderr}");
}

/// Every key of every object, recursively.
fn keys(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                out.push(k.clone());
                keys(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

/// Every string value, recursively.
fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => m.values().for_each(|v| strings(v, out)),
        Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        Value::String(s) => out.push(s),
        _ => {}
    }
}

/// The recipe variables in `s`: each `{…}` not part of a `${…}` escape.
fn variables(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    let mut offset = 0;
    while let Some(i) = rest.find('{') {
        let at = offset + i;
        let end = s[at..].find('}').expect("unterminated {") + at;
        if !(at > 0 && s.as_bytes()[at - 1] == b'$') {
            out.push(&s[at + 1..end]);
        }
        offset = end + 1;
        rest = &s[offset..];
    }
    out
}

fn key_set(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect()
}

fn subset(v: &Value, allowed: &[&str], what: &str) {
    for k in key_set(v) {
        assert!(
            allowed.contains(&k),
            "{what}: key '{k}' is not one nucleus lite reads ({allowed:?})"
        );
    }
}

/// Lite's policy resource validator (`ggl_validate_policy_resource`).
fn lite_accepts_resource(r: &str) -> bool {
    let b = r.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'?' {
            return false;
        }
        if b[i] == b'$' && b.get(i + 1) == Some(&b'{') {
            if !(matches!(b.get(i + 2), Some(b'*' | b'?' | b'$')) && b.get(i + 3) == Some(&b'}')) {
                return false;
            }
            i += 3;
        }
        i += 1;
    }
    true
}

const LITE_VARIABLES: [&str; 5] = [
    "artifacts:path",
    "artifacts:decompressedPath",
    "kernel:rootPath",
    "iot:thingName",
    "work:path",
];

/// The rules listed at the top of this file.
fn follows_lite_rules(recipe: &Value, thing_variable: bool) {
    // 1. Keys, exactly as lite reads them.
    subset(
        recipe,
        &[
            "RecipeFormatVersion",
            "ComponentName",
            "ComponentVersion",
            "ComponentType",
            "ComponentDescription",
            "ComponentPublisher",
            "ComponentConfiguration",
            "Manifests",
        ],
        "recipe",
    );
    assert_eq!(recipe["RecipeFormatVersion"], "2020-01-25");
    // 3. A generic component.
    assert_eq!(recipe["ComponentType"], "aws.greengrass.generic");
    // 6. No global lifecycle.
    assert!(recipe.get("Lifecycle").is_none());
    // 4, 5, 6: no unsupported step, Skipif or Selections, in any case.
    let mut all = Vec::new();
    keys(recipe, &mut all);
    for k in &all {
        let k = k.to_ascii_lowercase();
        for banned in ["shutdown", "recover", "bootstrap", "skipif", "selections"] {
            assert_ne!(k, banned, "the recipe has a '{k}' key");
        }
    }
    if let Some(c) = recipe.get("ComponentConfiguration") {
        subset(c, &["DefaultConfiguration"], "ComponentConfiguration");
        let d = &c["DefaultConfiguration"];
        subset(d, &["accessControl"], "DefaultConfiguration");
        subset(
            &d["accessControl"],
            &["aws.greengrass.ipc.mqttproxy", "aws.greengrass.ipc.pubsub"],
            "accessControl",
        );
        let services = d["accessControl"].as_object().unwrap();
        for (service, policies) in services {
            let operation = match service.as_str() {
                "aws.greengrass.ipc.mqttproxy" => "aws.greengrass#PublishToIoTCore",
                _ => "aws.greengrass#PublishToTopic",
            };
            for policy in policies.as_object().unwrap().values() {
                subset(
                    policy,
                    &["policyDescription", "operations", "resources"],
                    "policy",
                );
                assert_eq!(policy["operations"], serde_json::json!([operation]));
                for r in policy["resources"].as_array().unwrap() {
                    let r = r.as_str().unwrap();
                    assert!(lite_accepts_resource(r), "lite refuses the resource {r}");
                    // 11. Variables in the configuration only when asked for.
                    for v in variables(r) {
                        assert!(
                            thing_variable && v == "iot:thingName",
                            "recipe variable {{{v}}} in the component configuration"
                        );
                    }
                }
            }
        }
        let mut s = Vec::new();
        strings(&d["accessControl"], &mut s);
        for s in s {
            assert!(
                !s.contains("{thing}"),
                "{s}: the daemon's placeholder in a policy"
            );
        }
    }
    let manifests = recipe["Manifests"].as_array().unwrap();
    assert!(!manifests.is_empty());
    for m in manifests {
        subset(m, &["Platform", "Lifecycle", "Artifacts"], "manifest");
        let p = &m["Platform"];
        subset(p, &["os", "architecture", "runtime"], "Platform");
        // 2. Linux.
        assert_eq!(p["os"], "linux");
        // 7. A runtime lite takes.
        assert!(p["runtime"] == "*" || p["runtime"] == "aws_nucleus_lite");
        assert!(["amd64", "aarch64", "arm"].contains(&p["architecture"].as_str().unwrap()));
        // 8. No regex.
        for v in p.as_object().unwrap().values() {
            assert!(
                !v.as_str().unwrap().starts_with('/'),
                "a /regex/ platform value"
            );
        }
        // 4. One run step, its keys as lite reads them; no Timeout (the classic
        // nucleus would stop the daemon when it ran out).
        subset(&m["Lifecycle"], &["run"], "Lifecycle");
        subset(
            &m["Lifecycle"]["run"],
            &["RequiresPrivilege", "Script"],
            "run",
        );
        assert!(m["Lifecycle"]["run"]["RequiresPrivilege"].is_boolean());
        assert!(m["Lifecycle"]["run"]["Script"].is_string());
        for a in m["Artifacts"].as_array().unwrap() {
            subset(
                a,
                &["Uri", "Digest", "Algorithm", "Unarchive", "Permission"],
                "artifact",
            );
            assert!(a["Uri"].as_str().unwrap().starts_with("s3://"));
            assert_eq!(a["Algorithm"], "SHA-256");
            assert_eq!(
                BASE64_STANDARD
                    .decode(a["Digest"].as_str().unwrap())
                    .unwrap()
                    .len(),
                32
            );
            assert_eq!(a["Unarchive"], "NONE");
            subset(&a["Permission"], &["Read", "Execute"], "Permission");
            for v in a["Permission"].as_object().unwrap().values() {
                assert!(["NONE", "OWNER", "ALL"].contains(&v.as_str().unwrap()));
            }
        }
        // 9, 10. Only the variables lite substitutes, without a dependency prefix.
        let mut s = Vec::new();
        strings(m, &mut s);
        for s in s {
            for v in variables(s) {
                assert!(LITE_VARIABLES.contains(&v), "{{{v}}} in {s}");
            }
        }
    }
    assert!(
        recipe.to_string().len() <= 8196,
        "over the 8196 bytes lite reads of a recipe"
    );
}

/// Checks each artifact's Digest against the file in `artifacts`, and
/// returns the artifact names per architecture.
fn digests_match(recipe: &Value, uri: &str, artifacts: &Path) -> Vec<(String, BTreeSet<String>)> {
    let mut out = Vec::new();
    for m in recipe["Manifests"].as_array().unwrap() {
        let mut names = BTreeSet::new();
        for a in m["Artifacts"].as_array().unwrap() {
            let name = a["Uri"]
                .as_str()
                .unwrap()
                .strip_prefix(&format!("{uri}/"))
                .expect("the artifacts URI")
                .to_string();
            let bytes = std::fs::read(artifacts.join(&name)).unwrap();
            assert_eq!(
                BASE64_STANDARD
                    .decode(a["Digest"].as_str().unwrap())
                    .unwrap(),
                Sha256::digest(&bytes).to_vec(),
                "{name}: the Digest is not the file's SHA-256"
            );
            assert!(names.insert(name), "an artifact twice");
        }
        let arch = m["Platform"]["architecture"].as_str().unwrap().to_string();
        out.push((arch, names));
    }
    out
}

/// The first TOML block of the README's Greengrass section, with each
/// `sha256 = "…"` filled with the digest of the file named just above it.
fn readme_configuration(dir: &Path) -> String {
    let readme = include_str!("../../README.md");
    let section = &readme[readme
        .find("### Deploying with AWS IoT Greengrass v2")
        .unwrap()..];
    let start = section.find("```toml\n").unwrap() + "```toml\n".len();
    let block = &section[start..start + section[start..].find("```").unwrap()];
    let mut path = None;
    let mut out = String::new();
    for line in block.lines() {
        if let Some(p) = line.strip_prefix("path = \"") {
            path = Some(p.trim_end_matches('"').to_string());
        }
        if line.starts_with("sha256 = ") {
            let file = dir.join(path.take().expect("a path before its sha256"));
            out.push_str(&format!("sha256 = \"{}\"\n", sha256(&file)));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[test]
fn the_readme_configuration_makes_a_recipe_for_both_nuclei() {
    let dir = scratch("readme");
    // The demo's files, under the names the configuration gives them.
    std::os::unix::fs::symlink(verge_testkit::wasm("file_type"), dir.join("file_type.wasm"))
        .unwrap();
    std::os::unix::fs::symlink(verge_testkit::magika(), dir.join("model.onnx")).unwrap();
    let config = dir.join("verge.toml");
    std::fs::write(&config, readme_configuration(&dir)).unwrap();
    fake_elf(&dir.join("amd64"), 0x3e);
    fake_elf(&dir.join("aarch64"), 0xb7);
    let out = dir.join("out");
    let uri = "s3://my-bucket/verge/1.0.0";
    let stdout = ok(&recipe(&[
        "--config",
        config.to_str().unwrap(),
        "--artifacts-uri",
        &format!("{uri}/"),
        "--version",
        "1.0.0",
        "--binary",
        &format!("amd64={}", dir.join("amd64").display()),
        "--binary",
        &format!("aarch64={}", dir.join("aarch64").display()),
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(stdout.contains("aws s3 cp --recursive"), "{stdout}");
    // Through the nucleus (no [mqtt]): nothing to warn about.
    assert!(!stdout.contains("[mqtt]"), "{stdout}");

    let text = std::fs::read_to_string(out.join("recipe.json")).unwrap();
    let r: Value = serde_json::from_str(&text).unwrap();
    follows_lite_rules(&r, false);
    assert!(text.len() <= 8196, "{} bytes", text.len());
    assert_eq!(r["ComponentName"], "verge.Device");
    assert_eq!(r["ComponentVersion"], "1.0.0");

    let artifacts = out.join("artifacts");
    let per_arch = digests_match(&r, uri, &artifacts);
    let names = |arch: &str| -> BTreeSet<String> {
        [
            &format!("verge-device-{arch}"),
            "verge.json",
            "file_type.wasm",
            "model.onnx",
        ]
        .into_iter()
        .map(String::from)
        .collect()
    };
    assert_eq!(
        per_arch,
        vec![
            ("amd64".to_string(), names("amd64")),
            ("aarch64".to_string(), names("aarch64"))
        ]
    );
    // The binaries are the ones given, the only artifacts that may run.
    assert_eq!(
        std::fs::read(artifacts.join("verge-device-aarch64")).unwrap(),
        std::fs::read(dir.join("aarch64")).unwrap()
    );
    for m in r["Manifests"].as_array().unwrap() {
        let arch = m["Platform"]["architecture"].as_str().unwrap();
        for a in m["Artifacts"].as_array().unwrap() {
            let binary = a["Uri"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/verge-device-{arch}"));
            assert_eq!(a["Permission"]["Read"], "OWNER");
            assert_eq!(
                a["Permission"]["Execute"],
                if binary { "OWNER" } else { "NONE" }
            );
        }
        let run = &m["Lifecycle"]["run"];
        // IPC needs no root (the mqtt uplink with the core's key would).
        assert_eq!(run["RequiresPrivilege"], false);
        assert_eq!(
            run["Script"],
            format!(
                "exec \"{{artifacts:path}}/verge-device-{arch}\" serve --config \"{{artifacts:path}}/verge.json\" \
                 --thing-name \"{{iot:thingName}}\" --state-dir \"{{work:path}}/state\" --artifacts-dir \"{{artifacts:path}}\""
            )
        );
    }
    // {thing} is a one-level wildcard in the policy.
    assert_eq!(
        r["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"]["aws.greengrass.ipc.mqttproxy"]
            ["verge.Device:mqttproxy:1"]["resources"],
        serde_json::json!(["verge/+/file-type", "verge/+/health"])
    );
    assert_eq!(
        r["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"]["aws.greengrass.ipc.pubsub"]
            ["verge.Device:pubsub:1"]["resources"],
        serde_json::json!(["verge/*/file-type"])
    );

    // The shipped configuration: file names, {thing} kept, absolute device
    // paths untouched, nothing the command line sets.
    let shipped: Value =
        serde_json::from_slice(&std::fs::read(artifacts.join("verge.json")).unwrap()).unwrap();
    assert_eq!(shipped["components"]["file-type"]["path"], "file_type.wasm");
    assert_eq!(shipped["models"]["magika"]["path"], "model.onnx");
    assert_eq!(
        shipped["routes"]["file-type"]["cloud"]["topic"],
        "verge/{thing}/file-type"
    );
    assert!(shipped.get("mqtt").is_none());
    for key in ["thing_name", "state_dir", "artifacts_dir"] {
        assert!(shipped.get(key).is_none(), "{key}");
    }
    // As the daemon on a device reads it, with the recipe's command line.
    let device = Config::load(
        &artifacts.join("verge.json"),
        &Overrides {
            thing_name: Some("line-3".into()),
            state_dir: Some(dir.join("state")),
            artifacts_dir: Some(artifacts.clone()),
        },
    )
    .unwrap();
    assert_eq!(
        device.routes["file-type"].cloud.as_ref().unwrap().topic,
        "verge/line-3/file-type"
    );
    assert_eq!(device.health.topic, "verge/line-3/health");
    assert_eq!(
        device.routes["file-type"].local.as_ref().unwrap().topic,
        "verge/line-3/file-type"
    );
    // The API is a Unix socket in the state folder, permissions 660.
    assert_eq!(shipped["api"]["listen"], "unix:api.sock");
    assert_eq!(
        device.api.listen(),
        verge_device::api::Listen::Unix(dir.join("state").join("api.sock"))
    );
    assert_eq!(device.api.socket_mode(), 0o660);
    for c in device.components.values() {
        verge_device::config::verify("component", &c.path, &c.sha256).unwrap();
    }
    for m in device.models.values() {
        verge_device::config::verify("model", &m.path, &m.sha256).unwrap();
    }

    // Written twice into the same folder: refused, nothing overwritten.
    refused(
        &recipe(&[
            "--config",
            config.to_str().unwrap(),
            "--artifacts-uri",
            uri,
            "--version",
            "1.0.0",
            "--out",
            out.to_str().unwrap(),
        ]),
        "not empty",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

const A: &str = "a component's bytes";

/// A configuration naming small files: the generator hashes them, it does not
/// load them.
fn small(dir: &Path, extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("lib")).unwrap();
    std::fs::create_dir_all(dir.join("other")).unwrap();
    std::fs::write(dir.join("a.wasm"), A).unwrap();
    std::fs::write(dir.join("lib/m.onnx"), "model bytes").unwrap();
    std::fs::write(dir.join("other/m.onnx"), "other model bytes").unwrap();
    std::fs::write(dir.join("ca.pem"), "a CA").unwrap();
    std::fs::write(dir.join("libonnxruntime.so"), "a library").unwrap();
    let sha = |p: &str| sha256(&dir.join(p));
    let config = dir.join("small.toml");
    std::fs::write(
        &config,
        format!(
            r#"thing_name = "build-host"
state_dir = "/var/lib/verge"
[components.a]
path = "a.wasm"
sha256 = "{}"
[components.b]
path = "{}"
sha256 = "{}"
[models.m]
path = "lib/m.onnx"
sha256 = "{}"
backend = "onnxruntime"
fallback = "tract"
[models.same]
path = "lib/m.onnx"
sha256 = "{}"
[onnxruntime]
library = "libonnxruntime.so"
[routes.r]
component = "a"
cloud = {{ topic = "site/dev-{{thing}}/r" }}
[routes.local]
component = "b"
local = {{ topic = "site/{{thing}}/local" }}
[mqtt]
host = "localhost"
tls = {{ ca = "ca.pem", cert = "/etc/verge/cert.pem", key = "/etc/verge/key.pem" }}
[health]
topic = "site/{{thing}}/health"
{extra}"#,
            sha("a.wasm"),
            dir.join("a.wasm").display(),
            sha("a.wasm"),
            sha("lib/m.onnx"),
            sha("lib/m.onnx"),
        ),
    )
    .unwrap();
    config
}

#[test]
fn small_files_ship_once_each_and_the_running_binary_by_default() {
    let dir = scratch("small");
    let config = small(&dir, "");
    let out = dir.join("out");
    let uri = "s3://b/p";
    ok(&recipe(&[
        "--config",
        config.to_str().unwrap(),
        "--artifacts-uri",
        uri,
        "--version",
        "0.2.0-rc.1",
        "--name",
        "com.example.Verge",
        "--out",
        out.to_str().unwrap(),
    ]));
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("recipe.json")).unwrap()).unwrap();
    follows_lite_rules(&r, false);
    let arch = verge_device::recipe::Arch::current().unwrap().as_str();
    let per_arch = digests_match(&r, uri, &out.join("artifacts"));
    let expected: BTreeSet<String> = [
        format!("verge-device-{arch}"),
        "verge.json".into(),
        "a.wasm".into(),
        "m.onnx".into(),
        "ca.pem".into(),
        "libonnxruntime.so".into(),
    ]
    .into();
    // a.wasm named twice (once by an absolute path), m.onnx by two models: once each.
    assert_eq!(per_arch, vec![(arch.to_string(), expected)]);
    assert_eq!(
        std::fs::read(out.join("artifacts").join(format!("verge-device-{arch}"))).unwrap(),
        std::fs::read(env!("CARGO_BIN_EXE_verge-device")).unwrap()
    );
    let m = &r["Manifests"][0];
    assert_eq!(m["Lifecycle"]["run"]["RequiresPrivilege"], false);
    let policy = &r["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"]["aws.greengrass.ipc.mqttproxy"]
        ["com.example.Verge:mqttproxy:1"];
    assert_eq!(
        policy["resources"],
        serde_json::json!(["site/dev-*/r", "site/+/health"])
    );
    let local = &r["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"]["aws.greengrass.ipc.pubsub"]
        ["com.example.Verge:pubsub:1"];
    assert_eq!(
        local["operations"],
        serde_json::json!(["aws.greengrass#PublishToTopic"])
    );
    assert_eq!(local["resources"], serde_json::json!(["site/*/local"]));
    let shipped: Value =
        serde_json::from_slice(&std::fs::read(out.join("artifacts/verge.json")).unwrap()).unwrap();
    assert_eq!(shipped["components"]["b"]["path"], "a.wasm");
    assert_eq!(shipped["models"]["same"]["path"], "m.onnx");
    assert_eq!(shipped["onnxruntime"]["library"], "libonnxruntime.so");
    assert_eq!(shipped["mqtt"]["tls"]["ca"], "ca.pem");
    assert_eq!(shipped["mqtt"]["tls"]["cert"], "/etc/verge/cert.pem");
    assert_eq!(shipped["models"]["m"]["fallback"], "tract");
    assert!(shipped.get("thing_name").is_none() && shipped.get("state_dir").is_none());

    // With the recipe variable in the policy instead of a wildcard.
    let out2 = dir.join("out2");
    ok(&recipe(&[
        "--config",
        config.to_str().unwrap(),
        "--artifacts-uri",
        uri,
        "--version",
        "0.2.0",
        "--thing-name-in-policy",
        "--out",
        out2.to_str().unwrap(),
    ]));
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(out2.join("recipe.json")).unwrap()).unwrap();
    follows_lite_rules(&r, true);
    assert_eq!(
        r["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"]["aws.greengrass.ipc.mqttproxy"]
            ["verge.Device:mqttproxy:1"]["resources"],
        serde_json::json!(["site/dev-{iot:thingName}/r", "site/{iot:thingName}/health"])
    );
    assert_eq!(
        r["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"]["aws.greengrass.ipc.pubsub"]
            ["verge.Device:pubsub:1"]["resources"],
        serde_json::json!(["site/{iot:thingName}/local"])
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn what_cannot_ship_is_refused_with_the_reason() {
    let dir = scratch("refused");
    let config = small(&dir, "");
    let cfg = config.to_str().unwrap().to_string();
    let mut n = 0;
    // The defaults of --version and --artifacts-uri unless `args` give them.
    let mut run = |args: &[&str]| {
        n += 1;
        let out = dir.join(format!("out{n}"));
        let mut all = vec!["--config", &cfg];
        for (flag, value) in [("--version", "1.0.0"), ("--artifacts-uri", "s3://b/p")] {
            if !args.contains(&flag) {
                all.extend([flag, value]);
            }
        }
        all.extend_from_slice(args);
        all.extend_from_slice(&["--out", out.to_str().unwrap()]);
        recipe(&all)
    };
    refused(&run(&["--version", "1.0"]), "semantic version");
    refused(
        &run(&["--artifacts-uri", "https://b/p"]),
        "s3://BUCKET/PREFIX",
    );
    refused(&run(&["--name", "no spaces"]), "component name");
    refused(&run(&["--binary", "riscv=/bin/sh"]), "unknown architecture");
    // A binary for the wrong architecture.
    fake_elf(&dir.join("amd64"), 0x3e);
    let wrong = format!("aarch64={}", dir.join("amd64").display());
    refused(
        &run(&["--binary", &wrong]),
        "not a Linux binary for aarch64",
    );
    // The library would ship to both architectures.
    fake_elf(&dir.join("aarch64"), 0xb7);
    let amd = format!("amd64={}", dir.join("amd64").display());
    let arm = format!("aarch64={}", dir.join("aarch64").display());
    refused(
        &run(&["--binary", &amd, "--binary", &arm]),
        "onnxruntime.library 'libonnxruntime.so' is relative",
    );

    let variant = |name: &str, edit: &dyn Fn(String) -> String| {
        let text = edit(std::fs::read_to_string(&config).unwrap());
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let mut check = |config: String, says: &str| {
        n += 1;
        let out = dir.join(format!("out{n}"));
        let o = recipe(&[
            "--config",
            &config,
            "--artifacts-uri",
            "s3://b/p",
            "--version",
            "1.0.0",
            "--out",
            out.to_str().unwrap(),
        ]);
        refused(&o, says);
    };
    // Two different files of one name.
    check(
        variant("clash.toml", &|t| {
            t + "[models.other]\npath = \"other/m.onnx\"\nsha256 = \""
                + &sha256(&dir.join("other/m.onnx"))
                + "\"\n"
        }),
        "are both named m.onnx",
    );
    // A digest that is not the file's.
    check(
        variant("digest.toml", &|t| {
            t.replacen(&sha256(&dir.join("a.wasm")), &"0".repeat(64), 1)
        }),
        "the configuration expects 0000",
    );
    // A key or a token would ship to every device.
    check(
        variant("key.toml", &|t| t.replace("/etc/verge/key.pem", "key.pem")),
        "mqtt.tls.key 'key.pem' is relative",
    );
    check(
        variant("token.toml", &|t| t + "[api]\ntoken_file = \"api.token\"\n"),
        "api.token_file 'api.token' is relative",
    );
    // A name the recipe gives its own artifact.
    std::fs::write(dir.join("verge.json"), "{}").unwrap();
    check(
        variant("own.toml", &|t| {
            t.replace("path = \"lib/m.onnx\"", "path = \"verge.json\"")
                .replace(
                    &sha256(&dir.join("lib/m.onnx")),
                    &sha256(&dir.join("verge.json")),
                )
        }),
        "a name the recipe gives to its own artifacts",
    );
    // The configuration loader's own refusals come through.
    check(
        variant("bad.toml", &|t| {
            t.replace("[routes.local]", "[routes.local]\nnope = 1")
        }),
        "unknown field",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A deployment's models that name no backend run on ONNX Runtime on the
/// devices whose manifest ships its library, and on tract, with the reason
/// logged, on those whose manifest does not: the same answer on both.
#[test]
fn models_run_on_onnxruntime_where_its_library_ships_and_on_tract_elsewhere() {
    use verge_device::recipe::{Arch, ONNXRUNTIME_ARTIFACT};
    let Some(arch) = Arch::current() else { return };
    let other = if arch == Arch::Amd64 {
        Arch::Aarch64
    } else {
        Arch::Amd64
    };
    let dir = scratch("engine-by-arch");
    std::os::unix::fs::symlink(verge_testkit::wasm("file_type"), dir.join("file_type.wasm"))
        .unwrap();
    std::os::unix::fs::symlink(verge_testkit::magika(), dir.join("model.onnx")).unwrap();
    let config = dir.join("verge.toml");
    std::fs::write(
        &config,
        format!(
            "[models.magika]\npath = \"model.onnx\"\nsha256 = \"{}\"\n\
             [components.file-type]\npath = \"file_type.wasm\"\nsha256 = \"{}\"\n\
             [routes.file-type]\ncomponent = \"file-type\"\n",
            sha256(&dir.join("model.onnx")),
            sha256(&dir.join("file_type.wasm")),
        ),
    )
    .unwrap();
    fake_elf(
        &dir.join("other"),
        if other == Arch::Amd64 { 0x3e } else { 0xb7 },
    );
    let library = verge_testkit::onnxruntime_lib();
    let out = dir.join("out");
    let uri = "s3://b/p";
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_verge-device"));
    let args = |libraries: &[String]| -> Vec<String> {
        let mut v: Vec<String> = [
            "--config",
            config.to_str().unwrap(),
            "--artifacts-uri",
            uri,
            "--version",
            "1.0.0",
            "--out",
            out.to_str().unwrap(),
            "--binary",
            &format!("{}={}", arch.as_str(), binary.display()),
            "--binary",
            &format!("{}={}", other.as_str(), dir.join("other").display()),
        ]
        .map(String::from)
        .to_vec();
        for l in libraries {
            v.extend(["--onnxruntime".to_string(), l.clone()]);
        }
        v
    };
    let run = |a: Vec<String>| recipe(&a.iter().map(String::as_str).collect::<Vec<_>>());
    // A library must be one for its architecture, and for a platform the recipe has.
    refused(
        &run(args(&[format!("{}={}", other.as_str(), library.display())])),
        &format!("not a Linux binary for {}", other.as_str()),
    );
    refused(
        &run(args(&[format!("arm={}", library.display())])),
        "the recipe has no manifest for arm",
    );
    ok(&run(args(&[format!(
        "{}={}",
        arch.as_str(),
        library.display()
    )])));

    let r: Value =
        serde_json::from_slice(&std::fs::read(out.join("recipe.json")).unwrap()).unwrap();
    let artifacts = out.join("artifacts");
    let per_arch = digests_match(&r, uri, &artifacts);
    let shipped_library = format!("{}/{ONNXRUNTIME_ARTIFACT}", arch.as_str());
    for (a, names) in &per_arch {
        assert_eq!(
            names.contains(&shipped_library),
            a == arch.as_str(),
            "{a}: {names:?}"
        );
    }
    let shipped: Value =
        serde_json::from_slice(&std::fs::read(artifacts.join("verge.json")).unwrap()).unwrap();
    assert_eq!(shipped["onnxruntime"]["library"], ONNXRUNTIME_ARTIFACT);
    assert!(shipped["models"]["magika"].get("backend").is_none());

    // A device downloads its manifest's artifacts into one folder, each
    // under the last segment of its URI.
    let device = |name: &str, with_library: bool| {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for e in std::fs::read_dir(&artifacts).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), d.join(e.file_name())).unwrap();
            }
        }
        if with_library {
            std::fs::copy(
                artifacts.join(&shipped_library),
                d.join(ONNXRUNTIME_ARTIFACT),
            )
            .unwrap();
        }
        d
    };
    let body = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/src/main.rs")).unwrap();
    let mut labels = Vec::new();
    for (name, with_library) in [("with-library", true), ("without-library", false)] {
        let artifacts = device(name, with_library);
        let d = verge_testkit::serve::start_artifacts(
            &artifacts,
            &dir.join(format!("{name}-work")),
            "t",
            |_| {},
        );
        if with_library {
            let loaded = d.find("model loaded").expect("a model loaded line");
            assert_eq!(loaded["backend"], "onnxruntime", "{loaded}");
        } else {
            let fell = d.find("model fell back to tract").expect("a fallback line");
            let reason = fell["reason"].as_str().unwrap();
            assert!(reason.contains(ONNXRUNTIME_ARTIFACT), "{reason}");
        }
        let reply = d.post("file-type", "", &body);
        assert_eq!(reply.status, 200, "{}", reply.text());
        labels.push(reply.json()["respond"]["body"]["label"].clone());
    }
    assert_eq!(labels[0], "rust");
    assert_eq!(labels[0], labels[1]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An ONNX and a TensorFlow Lite model in one deployment: `--tensorflowlite`
/// ships the library for its architecture, the shipped configuration names
/// it, and the daemon started from the artifacts runs each model on the
/// engine its file asks for, face-detect answering from the TFLite one.
#[test]
fn a_tflite_model_ships_with_its_library_and_runs_beside_an_onnx_one() {
    use verge_device::recipe::{Arch, TENSORFLOWLITE_ARTIFACT};
    let Some(arch) = Arch::current() else { return };
    let dir = scratch("tflite-recipe");
    let link = |from: PathBuf, to: &str| std::os::unix::fs::symlink(from, dir.join(to)).unwrap();
    link(verge_testkit::wasm("file_type"), "file_type.wasm");
    link(verge_testkit::wasm("face_detect"), "face_detect.wasm");
    link(verge_testkit::magika(), "model.onnx");
    link(
        verge_testkit::model(
            "mediapipe-face-detection-short-range",
            "face_detection_short_range.tflite",
            "python3 models/fetch.py",
        ),
        "face.tflite",
    );
    let config = dir.join("verge.toml");
    std::fs::write(
        &config,
        format!(
            "[models.magika]\npath = \"model.onnx\"\nsha256 = \"{}\"\n\
             [models.face-detect]\npath = \"face.tflite\"\nsha256 = \"{}\"\n\
             [components.file-type]\npath = \"file_type.wasm\"\nsha256 = \"{}\"\n\
             [components.face-detect]\npath = \"face_detect.wasm\"\nsha256 = \"{}\"\n\
             [routes.file-type]\ncomponent = \"file-type\"\n\
             [routes.faces]\ncomponent = \"face-detect\"\n",
            sha256(&dir.join("model.onnx")),
            sha256(&dir.join("face.tflite")),
            sha256(&dir.join("file_type.wasm")),
            sha256(&dir.join("face_detect.wasm")),
        ),
    )
    .unwrap();
    let library = std::env::var("VERGE_TENSORFLOWLITE_LIB")
        .expect("VERGE_TENSORFLOWLITE_LIB must name libtensorflowlite_c (./dev test sets it)");
    let out = dir.join("out");
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_verge-device"));
    ok(&recipe(&[
        "--config",
        config.to_str().unwrap(),
        "--artifacts-uri",
        "s3://b/p",
        "--version",
        "1.0.0",
        "--out",
        out.to_str().unwrap(),
        "--binary",
        &format!("{}={}", arch.as_str(), binary.display()),
        "--tensorflowlite",
        &format!("{}={library}", arch.as_str()),
    ]));
    let r: Value =
        serde_json::from_slice(&std::fs::read(out.join("recipe.json")).unwrap()).unwrap();
    let artifacts = out.join("artifacts");
    let per_arch = digests_match(&r, "s3://b/p", &artifacts);
    let shipped_library = format!("{}/{TENSORFLOWLITE_ARTIFACT}", arch.as_str());
    assert!(per_arch[0].1.contains(&shipped_library), "{per_arch:?}");
    let shipped: Value =
        serde_json::from_slice(&std::fs::read(artifacts.join("verge.json")).unwrap()).unwrap();
    assert_eq!(
        shipped["tensorflowlite"]["library"],
        TENSORFLOWLITE_ARTIFACT
    );

    let d = verge_testkit::serve::start_artifacts(&artifacts, &dir.join("work"), "t", |_| {});
    let engines: Vec<(String, String)> = ["magika", "face-detect"]
        .iter()
        .map(|m| {
            let line = d
                .all("model loaded")
                .into_iter()
                .find(|l| l["model"] == *m)
                .unwrap_or_else(|| panic!("no 'model loaded' line for {m}"));
            (m.to_string(), line["backend"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(engines[0].1, "tract", "{engines:?}");
    assert_eq!(engines[1].1, "tensorflowlite", "{engines:?}");
    let photo =
        std::fs::read(verge_testkit::models_dir().join("skimage-astronaut/astronaut.png")).unwrap();
    let reply = d.post("faces", "image/png", &photo);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json()["respond"]["body"]["faces"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let reply = d.post("file-type", "", b"fn main() {}\n");
    assert_eq!(reply.status, 200, "{}", reply.text());
    drop(d);
    std::fs::remove_dir_all(&dir).unwrap();
}
