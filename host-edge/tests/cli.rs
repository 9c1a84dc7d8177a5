//! `verge-edge pack --dry-run` and `verge-edge stack`, run as the binary, on
//! the built components and the fetched models (`./dev test` sets
//! VERGE_WASM_DIR and VERGE_MODELS_DIR). The onnxruntime engine's binding is
//! pointed at nothing, so its rows are "not available" (and the tests fast).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn env_dir(name: &str) -> PathBuf {
    let dir = std::env::var_os(name).unwrap_or_else(|| {
        panic!("{name} is not set: run through ./dev test, or set it (VERGE_WASM_DIR = the cargo target's wasm32-wasip2/component, VERGE_MODELS_DIR = models/.cache)")
    });
    PathBuf::from(dir)
}

fn wasm(file: &str) -> PathBuf {
    let p = env_dir("VERGE_WASM_DIR").join(file);
    assert!(
        p.exists(),
        "{} is missing: build the components",
        p.display()
    );
    p
}

fn model(path: &str) -> PathBuf {
    let p = env_dir("VERGE_MODELS_DIR").join(path);
    assert!(
        p.exists(),
        "{} is missing: run models/fetch.py",
        p.display()
    );
    p
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("verge-edge-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn edge(args: &[&str], scratch: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_verge-edge"))
        .args(args)
        .env("VERGE_NN_PROVIDER_DIR", env_dir("VERGE_WASM_DIR"))
        .env(
            "VERGE_ONNXRUNTIME_NODE",
            scratch.join("no-onnxruntime-node"),
        )
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn fraud_score_args() -> Vec<String> {
    vec![
        "--component".into(),
        wasm("fraud_score.wasm").display().to_string(),
        "--model".into(),
        format!("fraud-score={}", model("fraud-score/model.onnx").display()),
    ]
}

fn row<'a>(rows: &'a [Value], trigger: &str, engine: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["trigger"] == trigger && r["engine"] == engine)
        .unwrap_or_else(|| panic!("no row for {trigger} on {engine}"))
}

#[test]
fn dry_run_fraud_score_fits_the_viewer_on_compact_only() {
    let dir = scratch("dry-fraud");
    let mut args = vec!["pack".to_string(), "--dry-run".into(), "--json".into()];
    args.extend(fraud_score_args());
    args.extend(["--include-body", "--memory", "1024", "--timeout", "30"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = edge(&args, &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 12, "4 triggers × 3 engines");

    // --memory 1024 --timeout 30 are origin settings: at the viewer they are
    // reported as they are, not adjusted.
    let compact = row(&rows, "viewer-request", "compact");
    assert_eq!(compact["status"], "misfit", "{compact}");
    assert_eq!(
        compact["reasons"],
        serde_json::json!([
            "--memory 1024 is over viewer-request's 128 MB",
            "--timeout 30 is over viewer-request's 5 s"
        ])
    );
    assert!(compact["zip_bytes"].as_u64().unwrap() < 1024 * 1024);

    let tract = row(&rows, "viewer-request", "tract");
    let size = tract["zip_bytes"].as_u64().unwrap();
    assert!(size > 1024 * 1024, "{tract}");
    let over = format!(
        "over the 1 MB zip quota by {} KB",
        (size - 1024 * 1024).div_ceil(1024)
    );
    assert!(
        tract["reasons"].as_array().unwrap().contains(&over.into()),
        "{tract}"
    );

    for engine in ["compact", "tract"] {
        let r = row(&rows, "origin-request", engine);
        assert_eq!(r["status"], "fits", "{r}");
        assert_eq!(r["packed_engine"], engine);
        // A response trigger gets no body.
        let r = row(&rows, "origin-response", engine);
        assert_eq!(
            r["reasons"],
            serde_json::json!([
                "--include-body: origin-response gets no body (request triggers only)"
            ])
        );
    }
    for t in ["viewer-request", "origin-request"] {
        let r = row(&rows, t, "onnxruntime");
        assert_eq!(r["status"], "not-available", "{r}");
        assert!(r["reason"].as_str().unwrap().contains("onnxruntime-node"));
    }

    // The viewer's own settings: compact fits, and is the marked row.
    let mut args = vec!["pack".to_string(), "--dry-run".into()];
    args.extend(fraud_score_args());
    args.extend(["--include-body", "--trigger", "viewer-request"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = edge(&args, &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let line = table
        .lines()
        .find(|l| l.starts_with("*viewer-request"))
        .unwrap_or_else(|| panic!("no marked row:\n{table}"));
    assert!(
        line.contains("compact") && line.ends_with("fits"),
        "{table}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn dry_run_file_type_is_refused_by_compact_and_fits_origin_on_tract() {
    let dir = scratch("dry-file-type");
    let component = wasm("file_type.wasm").display().to_string();
    let magika = format!(
        "magika={}",
        model("magika-standard-v3-3/model.onnx").display()
    );
    let out = edge(
        &[
            "pack",
            "--dry-run",
            "--component",
            &component,
            "--model",
            &magika,
            "--memory",
            "512",
            "--timeout",
            "30",
        ],
        &dir,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let line = |trigger: &str, engine: &str| {
        table
            .lines()
            .find(|l| {
                let mut cells = l.split_whitespace();
                cells.next() == Some(trigger) && cells.next() == Some(engine)
            })
            .unwrap_or_else(|| panic!("no {trigger} {engine} row:\n{table}"))
            .to_string()
    };
    for trigger in ["viewer-request", "origin-request"] {
        let compact = line(trigger, "compact");
        assert!(
            compact.contains("model 'magika' uses what the compact engine does not run:")
                && compact.contains("Conv"),
            "{table}"
        );
    }
    assert!(
        line("viewer-request", "compact").contains("--memory 512 is over viewer-request's 128 MB"),
        "{table}"
    );
    assert!(
        line("origin-request", "tract").ends_with(" fits"),
        "{table}"
    );
    assert!(
        line("viewer-request", "tract").contains("over the 1 MB zip quota by"),
        "{table}"
    );
    // tract at origin-request and origin-response; onnxruntime is not here.
    assert!(
        table.contains("2 of 12 trigger × engine combinations fit"),
        "{table}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn dry_run_exits_1_when_nothing_fits() {
    let dir = scratch("dry-none");
    let component = wasm("fraud_score.wasm").display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_verge-edge"))
        .args(["pack", "--dry-run", "--component", &component])
        .env("VERGE_NN_PROVIDER_DIR", &dir)
        .env("VERGE_ONNXRUNTIME_NODE", dir.join("none"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let table = text(&out.stdout);
    assert!(
        table.contains("not available: reading the provider"),
        "{table}"
    );
    assert!(table.contains("0 of 12"), "{table}");
    let _ = std::fs::remove_dir_all(dir);
}

fn pack(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let out_dir = dir.join(name);
    let mut args = vec!["pack".to_string()];
    args.extend(fraud_score_args());
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(["--out".to_string(), out_dir.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = edge(&args, dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    out_dir
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// cfn-lint on a template, when VERGE_CFN_LINT names it (pip install cfn-lint;
/// ./dev test installs it and requires it with VERGE_REQUIRE_ALL=1).
fn cfn_lint(template: &Path) {
    let Some(lint) = std::env::var_os("VERGE_CFN_LINT") else {
        assert!(
            std::env::var("VERGE_REQUIRE_ALL").as_deref() != Ok("1"),
            "set VERGE_CFN_LINT: the templates must pass cfn-lint"
        );
        eprintln!(
            "VERGE_CFN_LINT is not set: {} not linted",
            template.display()
        );
        return;
    };
    let out = Command::new(lint).arg(template).output().unwrap();
    assert!(
        out.status.success(),
        "cfn-lint {}:\n{}{}",
        template.display(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn stack_puts_the_cascade_on_one_cache_behaviour() {
    let dir = scratch("stack");
    let viewer = pack(
        &dir,
        "viewer",
        &[
            "--trigger",
            "viewer-request",
            "--include-body",
            "--config",
            "low=0.2",
            "--config",
            "high=0.5",
        ],
    );
    let origin = pack(
        &dir,
        "origin",
        &[
            "--trigger",
            "origin-request",
            "--include-body",
            "--engine",
            "tract",
            "--memory",
            "1024",
            "--timeout",
            "30",
        ],
    );
    let stack_dir = dir.join("stack");
    let (v, o, s) = (
        viewer.display().to_string(),
        origin.display().to_string(),
        stack_dir.display().to_string(),
    );
    // Origin first: the template follows CloudFront's order anyway.
    let out = edge(
        &["stack", "--package", &o, "--package", &v, "--out", &s],
        &dir,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = read_json(&stack_dir.join("template.json"));
    let r = &t["Resources"];
    let sha = |p: &Path| verge_edge::sha256(&std::fs::read(p).unwrap());
    for (suffix, pack_dir, zip, memory) in [
        ("ViewerRequest", &viewer, "viewer-request.zip", 128),
        ("OriginRequest", &origin, "origin-request.zip", 1024),
    ] {
        let f = &r[format!("EdgeFunction{suffix}")]["Properties"];
        assert_eq!(f["MemorySize"], memory);
        assert_eq!(f["Role"]["Fn::GetAtt"][0], "EdgeRole");
        assert_eq!(f["Code"]["S3Key"]["Ref"], format!("CodeKey{suffix}"));
        assert_eq!(t["Parameters"][format!("CodeKey{suffix}")]["Default"], zip);
        // The zip beside the template is the pack's, and the version names it.
        let copied = sha(&stack_dir.join(zip));
        assert_eq!(copied, sha(&pack_dir.join("function.zip")));
        assert_eq!(
            r[format!("EdgeFunctionVersion{suffix}")]["Properties"]["Description"],
            format!("package sha256 {copied}")
        );
    }
    let assoc = &r["Distribution"]["Properties"]["DistributionConfig"]["DefaultCacheBehavior"]["LambdaFunctionAssociations"];
    assert_eq!(
        assoc,
        &serde_json::json!([
            { "EventType": "viewer-request", "IncludeBody": true,
              "LambdaFunctionARN": { "Ref": "EdgeFunctionVersionViewerRequest" } },
            { "EventType": "origin-request", "IncludeBody": true,
              "LambdaFunctionARN": { "Ref": "EdgeFunctionVersionOriginRequest" } },
        ])
    );
    cfn_lint(&stack_dir.join("template.json"));

    // A stack of one is the template pack writes, but for the zip's name.
    let one = dir.join("one");
    let out = edge(
        &[
            "stack",
            "--package",
            &v,
            "--out",
            &one.display().to_string(),
        ],
        &dir,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut packed = read_json(&viewer.join("template.json"));
    assert_eq!(packed["Parameters"]["CodeKey"]["Default"], "function.zip");
    packed["Parameters"]["CodeKey"]["Default"] = "viewer-request.zip".into();
    assert_eq!(read_json(&one.join("template.json")), packed);
    cfn_lint(&viewer.join("template.json"));

    // Two packages for one event: refused, both named, nothing written.
    let twice = dir.join("twice");
    let out = edge(
        &[
            "stack",
            "--package",
            &v,
            "--package",
            &v,
            "--out",
            &twice.display().to_string(),
        ],
        &dir,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        format!(
            "verge-edge: {v} and {v} are both for viewer-request on the default cache behaviour: a cache behaviour runs at most one function per event type"
        )
    );
    assert!(!twice.exists());

    // A manifest that is not the zip's: refused.
    let mut m = read_json(&origin.join("verge.json"));
    m["memory_mb"] = 2048.into();
    std::fs::write(origin.join("verge.json"), m.to_string()).unwrap();
    let out = edge(&["stack", "--package", &o, "--out", &s], &dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("differs from the verge.json inside function.zip"),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A TensorFlow Lite model (the file's `TFL3` identifier) is refused by every
/// engine, naming the device as the place it runs; so is the engine's name.
#[test]
fn pack_refuses_tensorflow_lite_and_names_the_device() {
    let dir = scratch("tflite");
    let tflite = dir.join("face.tflite");
    let mut bytes = vec![0x1c, 0, 0, 0];
    bytes.extend_from_slice(b"TFL3");
    bytes.resize(64, 0);
    std::fs::write(&tflite, bytes).unwrap();
    let component = wasm("probe.wasm").display().to_string();
    let model = format!("face={}", tflite.display());
    for engine in ["tract", "compact"] {
        let out = dir.join(format!("out-{engine}"));
        let o = edge(
            &[
                "pack",
                "--component",
                &component,
                "--model",
                &model,
                "--engine",
                engine,
                "--trigger",
                "origin-request",
                "--out",
                &out.display().to_string(),
            ],
            &dir,
        );
        let err = text(&o.stderr);
        assert!(!o.status.success(), "{engine}: {err}");
        assert!(
            err.contains("model 'face'")
                && err.contains("is a TensorFlow Lite model")
                && err.contains("run on the device host"),
            "{engine}: {err}"
        );
        assert!(!out.join("function.zip").exists());
    }
    let o = edge(
        &[
            "pack",
            "--component",
            &component,
            "--engine",
            "tensorflowlite",
            "--trigger",
            "origin-request",
            "--out",
            &dir.join("out").display().to_string(),
        ],
        &dir,
    );
    let err = text(&o.stderr);
    assert!(
        !o.status.success()
            && err
                .contains("--engine tensorflowlite: TensorFlow Lite models run on the device host"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
