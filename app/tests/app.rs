//! `verge build` and `verge check` on the example application
//! (examples/shop/verge.app.toml) and on broken manifests.
//!
//! Needs what ./dev makes: VERGE_WASM_DIR (the components and providers),
//! VERGE_MODELS_DIR (the models), VERGE_ONNXRUNTIME_NODE (the binding the
//! onnxruntime engine packs), VERGE_CFN_LINT (cfn-lint), and node. Without them
//! the tests say so and pass, unless VERGE_REQUIRE_ALL=1. The shop's device
//! half is then served with verge-device's own harness (verge-testkit), beside
//! a mosquitto broker: `verge build` ships the verge-device Cargo built beside
//! `verge`, so build it too (`cargo test -p verge-app -p verge-device`, or the
//! whole workspace).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use verge_device::recipe::{Arch, ONNXRUNTIME_ARTIFACT};
use verge_testkit::mqtt::{Broker, Certs, Subscriber, point_mqtt};
use verge_testkit::serve::{start_artifacts, wait_until};
use verge_testkit::{scratch, sha256};

const NEEDED: [&str; 4] = [
    "VERGE_WASM_DIR",
    "VERGE_MODELS_DIR",
    "VERGE_ONNXRUNTIME_NODE",
    "VERGE_CFN_LINT",
];

fn ready(test: &str) -> bool {
    let missing: Vec<&str> = NEEDED
        .iter()
        .copied()
        .filter(|n| std::env::var_os(n).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("VERGE_REQUIRE_ALL").as_deref() != Ok("1"),
        "{test}: set {} (VERGE_REQUIRE_ALL=1)",
        missing.join(", ")
    );
    eprintln!("{test}: skipped, set {}", missing.join(", "));
    false
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn shop() -> PathBuf {
    repo().join("examples/shop/verge.app.toml")
}

/// A scratch folder holding `verge.app.toml` with `text`.
fn manifest_in(name: &str, text: &str) -> (PathBuf, PathBuf) {
    let dir = scratch(name);
    let manifest = dir.join("verge.app.toml");
    std::fs::write(&manifest, text).unwrap();
    (dir, manifest)
}

fn verge(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_verge"));
    if let Some(wasm) = std::env::var_os("VERGE_WASM_DIR") {
        command.env("VERGE_NN_PROVIDER_DIR", wasm);
    }
    command.args(args).output().expect("running verge")
}

#[test]
fn names_that_would_leave_their_folder_are_refused() {
    let (dir, manifest) = manifest_in(
        "names",
        "name = \"x\"\nversion = \"0.1.0\"\n[components.\"../escape\"]\npath = \"a.wasm\"\n[models.\"/abs\"]\npath = \"m.onnx\"\nsha256 = \"00\"\n",
    );
    let out = dir.join("dist");
    let run = verge(&[
        "build",
        manifest.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = text(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("component name '../escape'"), "{stderr}");
    assert!(stderr.contains("model name '/abs'"), "{stderr}");
    assert!(!out.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

#[test]
fn builds_the_shop_for_the_device_and_one_cloudfront_stack() {
    if !ready("build") {
        return;
    }
    let dir = scratch("shop");
    let out = dir.join("dist");
    let arch = Arch::current().expect("a Greengrass architecture");
    let library = verge_testkit::onnxruntime_lib();
    let arn = "arn:aws:iot:eu-west-1:123456789012:thinggroup/shop-floor";
    let run = verge(&[
        "build",
        shop().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--thing-group",
        arn,
        "--measure",
        "5",
        "--device-onnxruntime",
        &format!("{}={}", arch.as_str(), library.display()),
    ]);
    let stdout = text(&run.stdout);
    assert!(
        run.status.success(),
        "verge build failed: {}\n{stdout}",
        text(&run.stderr)
    );
    println!("{stdout}");

    // The device: the daemon configuration, the recipe, the deployment.
    let recipe = json(&out.join("device/recipe.json"));
    assert_eq!(recipe["ComponentName"], "verge.shop");
    assert_eq!(recipe["ComponentVersion"], "1.0.0");
    assert_eq!(recipe["Manifests"].as_array().unwrap().len(), 1);
    assert_eq!(
        recipe["Manifests"][0]["Lifecycle"]["run"]["RequiresPrivilege"],
        true
    );
    let config = json(&out.join("device/artifacts/verge.json"));
    assert_eq!(config["routes"]["fraud-score"]["config"]["low"], "0.2");
    assert_eq!(config["routes"]["fraud-score"]["config"]["high"], "0.4");
    assert_eq!(
        config["routes"]["fraud-score"]["cloud"]["topic"],
        "verge/{thing}/fraud-score"
    );
    assert_eq!(config["routes"]["file-type"]["concurrency"], 2);
    assert!(
        config["routes"].get("text-embed").is_none(),
        "text-embed runs only at the edge"
    );
    assert!(config["components"].get("text-embed").is_none());
    // The models name no backend: ONNX Runtime, shipped for this platform.
    assert_eq!(config["onnxruntime"]["library"], ONNXRUNTIME_ARTIFACT);
    assert!(config["models"]["fraud-score"].get("backend").is_none());
    let library_artifact = format!("{}/{ONNXRUNTIME_ARTIFACT}", arch.as_str());
    assert_eq!(
        std::fs::read(out.join("device/artifacts").join(&library_artifact)).unwrap(),
        std::fs::read(&library).unwrap()
    );
    assert!(
        stdout.contains(&format!("onnxruntime ({})", arch.as_str())),
        "{stdout}"
    );
    for artifact in recipe["Manifests"][0]["Artifacts"].as_array().unwrap() {
        let name = artifact["Uri"]
            .as_str()
            .unwrap()
            .strip_prefix("s3://YOUR-BUCKET/verge/shop/1.0.0/")
            .unwrap();
        assert!(
            out.join("device/artifacts").join(name).is_file(),
            "artifact {name} not written"
        );
    }
    let deployment = json(&out.join("device/deployment.json"));
    assert_eq!(deployment["targetArn"], arn);
    assert_eq!(
        deployment["components"]["verge.shop"]["componentVersion"],
        "1.0.0"
    );

    // The edge: three packages with the manifest's settings, one template.
    let pack = |d: &str| json(&out.join("edge").join(d).join("verge.json"));
    let viewer = pack("fraud-score-viewer-request");
    assert_eq!(viewer["engine"]["name"], "compact");
    assert_eq!(viewer["config"]["low"], "0.2");
    assert_eq!(viewer["config"]["high"], "0.5", "the viewer's override");
    let origin = pack("fraud-score-origin-request");
    assert_eq!(origin["config"]["high"], "0.4");
    assert_eq!(origin["engine"]["name"], "onnxruntime");
    assert_eq!(
        pack("text-embed-origin-request")["config"]["mode"],
        "annotate"
    );
    let template = json(&out.join("edge/template.json"));
    let dist = &template["Resources"]["Distribution"]["Properties"]["DistributionConfig"];
    assert_eq!(
        dist["DefaultCacheBehavior"]["LambdaFunctionAssociations"],
        serde_json::json!([])
    );
    let behaviours = dist["CacheBehaviors"].as_array().unwrap();
    assert_eq!(behaviours.len(), 2);
    assert_eq!(behaviours[0]["PathPattern"], "/checkout/*");
    let events: Vec<&str> = behaviours[0]["LambdaFunctionAssociations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["EventType"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        ["viewer-request", "origin-request"],
        "the cascade on one behaviour"
    );
    assert_eq!(behaviours[1]["PathPattern"], "/search*");
    let functions = template["Resources"]
        .as_object()
        .unwrap()
        .values()
        .filter(|r| r["Type"] == "AWS::Lambda::Function")
        .count();
    assert_eq!(functions, 3);

    // cfn-lint, no findings.
    let lint = Command::new(std::env::var("VERGE_CFN_LINT").unwrap())
        .arg(out.join("edge/template.json"))
        .output()
        .expect("running cfn-lint");
    assert!(
        lint.status.success(),
        "cfn-lint found:\n{}{}",
        text(&lint.stdout),
        text(&lint.stderr)
    );
    println!(
        "cfn-lint {}: no findings",
        out.join("edge/template.json").display()
    );

    // The summary: every placement, sizes against quotas, a cost.
    for want in [
        "device route fraud-score",
        "device route file-type",
        "viewer-request /checkout/*",
        "origin-request /search*",
        "$ per 1M requests",
        "of 1.0 MB",
    ] {
        assert!(
            stdout.contains(want),
            "the summary has no '{want}':\n{stdout}"
        );
    }
    assert!(
        stdout.contains("warm: median of 5 calls"),
        "warm durations measured:\n{stdout}"
    );

    serves_the_device_half(&out.join("device/artifacts"), &dir.join("device"));

    // A second build into the same folder is refused, not mixed in.
    let again = verge(&[
        "build",
        shop().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("not empty"),
        "{}",
        text(&again.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_problem_is_reported_at_once_and_nothing_is_written() {
    if !ready("problems") {
        return;
    }
    let models = std::env::var("VERGE_MODELS_DIR").unwrap();
    let (dir, manifest) = manifest_in(
        "problems",
        &format!(
            r#"
name = "broken"
version = "0.1.0"

[models.magika]
path = "{models}/magika-standard-v3-3/model.onnx"
sha256 = "{zeros}"

[models.fraud-score]
path = "{models}/fraud-score/model.onnx"
sha256 = "{fraud}"

[components.missing]
path = "nowhere/missing.wasm"
edge = [{{ trigger = "origin-request", engine = "tract" }}]

[components.file-type]
path = "${{VERGE_WASM_DIR}}/file_type.wasm"
models = ["magika", "magicka"]
config = {{ mode = "respond" }}
edge = [{{ trigger = "viewer-request", engine = "compact", config = {{ mdoe = "annotate" }} }}]

[components.fraud-score]
path = "${{VERGE_WASM_DIR}}/fraud_score.wasm"
models = ["fraud-score"]
config = {{ low = "0.2" }}
edge = [
  {{ trigger = "viewer-request", engine = "tract", include_body = true }},
  {{ trigger = "origin-request", memory_mb = 100000, engine = "tract" }},
]
"#,
            zeros = "0".repeat(64),
            fraud = sha256(&Path::new(&models).join("fraud-score/model.onnx")),
        ),
    );
    let out = dir.join("dist");
    let run = verge(&[
        "build",
        manifest.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = text(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    println!("{stderr}");
    for want in [
        "model 'magika'", // wrong digest
        "sha256",
        "component 'missing'",         // no such file
        "model 'magicka'",             // not in [models]
        "setting 'mdoe'",              // an override of a key the component does not set
        "does not fit viewer-request", // tract is over the viewer's 1 MB
        "memory",                      // 100000 MB is over any Lambda
    ] {
        assert!(
            stderr.contains(want),
            "no problem mentioning '{want}':\n{stderr}"
        );
    }
    assert!(
        !out.exists(),
        "nothing may be written when there are problems"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_agrees_on_the_shop_and_reports_a_placement_that_answers_otherwise() {
    if !ready("check") {
        return;
    }
    let inputs = repo().join("examples/shop/inputs");
    let mut args = vec![
        "check".to_string(),
        shop().display().to_string(),
        "--component".into(),
        "fraud-score".into(),
    ];
    for f in [
        "tx-groceries.json",
        "tx-evening-online.json",
        "tx-large-online.json",
        "tx-late-risky.json",
        "tx-far-new-card.json",
        "tx-burst.json",
    ] {
        args.push("--input".into());
        args.push(inputs.join(f).display().to_string());
    }
    let run = verge(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stdout = text(&run.stdout);
    println!("{stdout}");
    assert!(
        run.status.success(),
        "verge check found differences: {}\n{stdout}",
        text(&run.stderr)
    );
    assert!(
        stdout.contains("12 edge outcome(s) compared") && stdout.contains("all the same"),
        "{stdout}"
    );
    let kinds: Vec<&str> = ["respond 403", "annotate x-fraud-score", "defer"]
        .into_iter()
        .filter(|k| stdout.contains(k))
        .collect();
    assert!(
        kinds.len() == 3,
        "the inputs exercise every decision (403, annotate, defer): {stdout}"
    );

    // file-type with no `mode`: the device answers, the edge annotates (its
    // default there) — a difference `check` must show.
    let models = std::env::var("VERGE_MODELS_DIR").unwrap();
    let (dir, manifest) = manifest_in(
        "check-differs",
        &format!(
            r#"
name = "differs"
version = "0.1.0"
[models.magika]
path = "{models}/magika-standard-v3-3/model.onnx"
sha256 = "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c"
[components.file-type]
path = "${{VERGE_WASM_DIR}}/file_type.wasm"
models = ["magika"]
[[components.file-type.edge]]
trigger = "origin-request"
engine = "tract"
include_body = true
memory_mb = 512
timeout_s = 30
"#
        ),
    );
    let run = verge(&[
        "check",
        manifest.to_str().unwrap(),
        "--input",
        inputs.join("tx-burst.json").to_str().unwrap(),
    ]);
    let stdout = text(&run.stdout);
    println!("{stdout}");
    assert_eq!(
        run.status.code(),
        Some(1),
        "{}\n{stdout}",
        text(&run.stderr)
    );
    assert!(
        stdout.contains("DIFFERS") && stdout.contains("1 differ"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The built artifacts served as the recipe's run script serves them on a
/// core device (the harness moves the API to loopback TCP), the uplink
/// pointed at a broker here instead of AWS IoT Core: each of fraud-score's
/// decisions with the shop's device thresholds, and its outcomes delivered.
fn serves_the_device_half(artifacts: &Path, dir: &Path) {
    let certs = Certs::generate(dir);
    let mut broker = Broker::new(dir, Some(&certs));
    broker.start();
    let subscriber = Subscriber::start(broker.port, Some(&certs), "verge/shop-test/#");
    let daemon = start_artifacts(artifacts, dir, "shop-test", |config| {
        point_mqtt(config, broker.port, &certs, "client")
    });
    let inputs = repo().join("examples/shop/inputs");
    let score = |input: &str| {
        let body = std::fs::read(inputs.join(input)).unwrap();
        let reply = daemon.post("fraud-score", "application/json", &body);
        assert_eq!(reply.status, 200, "{input}: {}", reply.text());
        let outcome = reply.json();
        assert_eq!(
            outcome["outbox"]["topic"], "verge/shop-test/fraud-score",
            "{input}: {outcome}"
        );
        outcome
    };
    // Over the device's high (0.4): blocked.
    let risky = score("tx-late-risky.json");
    assert_eq!(risky["respond"]["status"], 403, "{risky}");
    assert_eq!(risky["respond"]["body"]["threshold"], 0.4, "{risky}");
    // Under its low (0.2): passed on, annotated.
    let groceries = score("tx-groceries.json");
    let annotated = groceries["annotate"]["x-fraud-score"].as_str();
    assert!(
        annotated
            .and_then(|s| s.parse::<f64>().ok())
            .is_some_and(|s| s < 0.2),
        "{groceries}"
    );
    // In between: the origin decides.
    let evening = score("tx-evening-online.json");
    assert!(evening["defer"].is_string(), "{evening}");

    let sent: Vec<String> = [&risky, &groceries, &evening]
        .iter()
        .map(|o| o["outbox"]["id"].as_str().unwrap().to_string())
        .collect();
    wait_until(
        "the outcomes at the broker",
        Duration::from_secs(30),
        || subscriber.ids("/fraud-score").len() >= sent.len(),
    );
    assert_eq!(subscriber.ids("/fraud-score"), sent, "once each, in order");
    println!(
        "served {}: fraud-score blocked, annotated and deferred; {} outcomes delivered over MQTT",
        artifacts.display(),
        sent.len()
    );
}

/// examples/languages: fraud-score in Rust, JavaScript and Python, each on a
/// device route and at CloudFront. `verge check` over the shop's transactions
/// finds every edge function agreeing with its device route, and every input
/// gets one outcome whatever the language or the host.
#[test]
fn check_shows_fraud_score_alike_in_three_languages_on_both_hosts() {
    if !ready("check languages") {
        return;
    }
    let inputs: Vec<String> = std::fs::read_dir(repo().join("examples/shop/inputs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| p.display().to_string())
        .collect();
    let manifest = repo().join("examples/languages/verge.app.toml");
    let mut args = vec!["check", manifest.to_str().unwrap(), "--input"];
    args.extend(inputs.iter().map(String::as_str));
    let run = verge(&args);
    let stdout = text(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", text(&run.stderr));
    assert!(stdout.contains("all the same"), "{stdout}");
    // input → the outcomes shown for it, over every row (component × placement).
    let mut by_input: std::collections::BTreeMap<&str, std::collections::BTreeSet<String>> =
        Default::default();
    let mut components = std::collections::BTreeSet::new();
    for line in stdout.lines().filter(|l| l.starts_with("tx-")) {
        let cols: Vec<&str> = line.split("  ").filter(|c| !c.trim().is_empty()).collect();
        assert!(cols.len() >= 4, "{line}");
        components.insert(cols[1].trim().to_string());
        by_input
            .entry(cols[0].trim())
            .or_default()
            .insert(cols[3].trim().to_string());
    }
    assert_eq!(
        components.into_iter().collect::<Vec<_>>(),
        ["fraud-score-js", "fraud-score-py", "fraud-score-rust"]
    );
    assert_eq!(by_input.len(), inputs.len(), "{stdout}");
    for (input, outcomes) in by_input {
        assert_eq!(outcomes.len(), 1, "{input}: {outcomes:?}");
    }
}

/// A TensorFlow Lite model: placed at the edge it is a problem that names
/// the device; on the device `verge build` ships libtensorflowlite_c for the
/// platform and says the model runs on it.
#[test]
fn a_tflite_model_goes_to_the_device_with_its_library_and_not_to_the_edge() {
    if !ready("tflite") {
        return;
    }
    let models = std::env::var("VERGE_MODELS_DIR").unwrap();
    let model = Path::new(&models)
        .join("mediapipe-face-detection-short-range/face_detection_short_range.tflite");
    let arch = Arch::current().expect("a Greengrass architecture");
    let library = std::env::var("VERGE_TENSORFLOWLITE_LIB")
        .expect("VERGE_TENSORFLOWLITE_LIB (./dev test sets it)");
    let app = |edge: &str| {
        format!(
            r#"
name = "kiosk"
version = "0.1.0"

[models.face-detect]
path = "{model}"
sha256 = "{sha}"

[components.face-detect]
path = "${{VERGE_WASM_DIR}}/face_detect.wasm"
models = ["face-detect"]
{edge}
[components.face-detect.device]
deadline_ms = 2000

[device]
platforms = ["{arch}"]
artifacts_uri = "s3://b/kiosk/0.1.0"
"#,
            model = model.display(),
            sha = sha256(&model),
            arch = arch.as_str(),
        )
    };
    let (dir, manifest) = manifest_in(
        "tflite-edge",
        &app(r#"edge = [{ trigger = "origin-request", engine = "tract" }]"#),
    );
    let out = dir.join("dist");
    let run = verge(&[
        "build",
        manifest.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = text(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is a TensorFlow Lite model") && stderr.contains("run on the device host"),
        "{stderr}"
    );
    assert!(!out.exists());
    let _ = std::fs::remove_dir_all(&dir);

    let (dir, manifest) = manifest_in("tflite-device", &app(""));
    let out = dir.join("dist");
    let run = verge(&[
        "build",
        manifest.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device-tensorflowlite",
        &format!("{}={library}", arch.as_str()),
    ]);
    let stdout = text(&run.stdout);
    assert!(run.status.success(), "{}\n{stdout}", text(&run.stderr));
    assert!(stdout.contains("tensorflowlite"), "{stdout}");
    let shipped = out
        .join("device/artifacts")
        .join(arch.as_str())
        .join(verge_device::recipe::TENSORFLOWLITE_ARTIFACT);
    assert_eq!(sha256(&shipped), sha256(Path::new(&library)));
    let _ = std::fs::remove_dir_all(&dir);
}
