//! Device inference costs, each against a baseline measured in the same run,
//! the systems alternated within every repetition:
//!
//! * Magika through a component and `wasi:nn` against the same model run by
//!   tract natively in this process (inference only: the probe component's
//!   wasi:nn call minus its no-op call, both instantiating);
//! * `file-type`'s preprocessing in Wasm against the same code compiled natively;
//! * a call on a precompiled component (instantiate + trivial handler);
//! * compiling a component against loading it precompiled.
//!
//! cargo run --release -p verge-device --example device_bench -- [--reps N] [--input FILE] [--json FILE]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use magika::Prepared as Features;
use verge_device::nn::{Graphs, ModelSpec};
use verge_device::runtime::{Deployment, Limits, Outcome, Placement, Prepared, Request, Runtime};
use verge_nn_tract::{ElementType, Tensor};
use wasmtime::component::Component;

struct Args {
    reps: usize,
    input: PathBuf,
    json: Option<PathBuf>,
    wasm_dir: PathBuf,
    models_dir: PathBuf,
}

fn args() -> Result<Args> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let mut a = Args {
        reps: 200,
        input: PathBuf::from("/bin/ls"),
        json: None,
        wasm_dir: std::env::var_os("VERGE_WASM_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| target.join("wasm32-wasip2/component")),
        models_dir: std::env::var_os("VERGE_MODELS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/.cache")),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--reps" => a.reps = value()?.parse()?,
            "--input" => a.input = value()?.into(),
            "--json" => a.json = Some(value()?.into()),
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

/// Median and the 10th–90th percentile spread, in microseconds.
struct Stat {
    median: f64,
    p10: f64,
    p90: f64,
}

fn stat(mut xs: Vec<Duration>) -> Stat {
    xs.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let at = |q: f64| us(xs[((xs.len() - 1) as f64 * q).round() as usize]);
    Stat {
        median: at(0.5),
        p10: at(0.1),
        p90: at(0.9),
    }
}

fn time<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let t = Instant::now();
    let v = f();
    (t.elapsed(), v)
}

fn call(runtime: &Runtime, p: &Prepared, d: &Deployment, body: &[u8]) -> Duration {
    call_with(runtime, p, d, body, vec![]).0
}

fn call_with(
    runtime: &Runtime,
    p: &Prepared,
    d: &Deployment,
    body: &[u8],
    attributes: Vec<(String, String)>,
) -> (Duration, Outcome) {
    let request = Request {
        content_type: String::new(),
        body: body.to_vec(),
        attributes,
        truncated: false,
    };
    let (t, r) = time(|| runtime.call(p, d, &request));
    (t, r.expect("the benchmark's calls succeed"))
}

/// The probe component times file-type's preprocessing inside Wasm.
fn wasm_prep_ns(
    runtime: &Runtime,
    probe: &Prepared,
    d: &Deployment,
    input: &[u8],
    n: u32,
) -> Result<f64> {
    let (_, outcome) = call_with(
        runtime,
        probe,
        d,
        input,
        vec![("probe".into(), format!("prep:{n}"))],
    );
    let Outcome::Respond(r) = outcome else {
        anyhow::bail!("unexpected probe outcome {outcome:?}")
    };
    let v: serde_json::Value = serde_json::from_slice(&r.body)?;
    v["ns_per_call"].as_f64().context("ns_per_call")
}

fn main() -> Result<()> {
    let a = args()?;
    let model_path = a.models_dir.join("magika-standard-v3-3/model.onnx");
    let graphs = Graphs::load(&[ModelSpec::tract("magika", model_path)])?;
    let runtime = Runtime::new(graphs.clone())?;
    let load = |name: &str| -> Result<(Vec<u8>, Prepared)> {
        let bytes = std::fs::read(a.wasm_dir.join(format!("{name}.wasm")))
            .with_context(|| format!("{name}.wasm: build the components first"))?;
        let c = Component::new(runtime.engine(), &bytes).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        Ok((bytes, runtime.prepare(&c)?))
    };
    let (ft_bytes, file_type) = load("file_type")?;
    let (_, probe) = load("probe")?;
    let deployment = Deployment::new(Placement::Local, Limits::default(), &[]);
    let input = std::fs::read(&a.input).with_context(|| format!("{}", a.input.display()))?;

    let Features::Model(features) = magika::prepare(&input) else {
        anyhow::bail!("{} is too small to reach the model", a.input.display());
    };
    let tensor = Tensor::new(
        vec![1, magika::FEATURES as u32],
        ElementType::I32,
        features.iter().flat_map(|v| v.to_le_bytes()).collect(),
    );
    let mut session = graphs.engine("magika").expect("loaded above").session();

    let (mut native, mut nn, mut noop, mut ft, mut ft_tiny, mut prep, mut wprep) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    const PREP_RUNS: u32 = 200;
    // Warm-up: caches, lazy plan state, page faults.
    for _ in 0..10 {
        session.run(&[("bytes".into(), tensor.clone())])?;
        call(&runtime, &probe, &deployment, b"nn:magika:bytes:1,2048:i32");
        call(&runtime, &file_type, &deployment, &input);
    }
    for _ in 0..a.reps {
        native.push(time(|| session.run(&[("bytes".into(), tensor.clone())])).0);
        nn.push(call(
            &runtime,
            &probe,
            &deployment,
            b"nn:magika:bytes:1,2048:i32",
        ));
        noop.push(call(&runtime, &probe, &deployment, b"echo"));
        ft.push(call(&runtime, &file_type, &deployment, &input));
        ft_tiny.push(call(&runtime, &file_type, &deployment, b"tiny"));
        let (t, ()) = time(|| {
            for _ in 0..PREP_RUNS {
                std::hint::black_box(magika::prepare(std::hint::black_box(&input)));
            }
        });
        prep.push(t / PREP_RUNS);
        let ns = wasm_prep_ns(&runtime, &probe, &deployment, &input, PREP_RUNS)?;
        wprep.push(Duration::from_nanos(ns as u64));
    }
    let (native, nn, noop, ft, ft_tiny, prep, wprep) = (
        stat(native),
        stat(nn),
        stat(noop),
        stat(ft),
        stat(ft_tiny),
        stat(prep),
        stat(wprep),
    );
    let nn_only = nn.median - noop.median;
    let wasm_prep = wprep.median;

    // Compiling against loading precompiled.
    let mut compile = vec![];
    let mut deserialize = vec![];
    let serialized = runtime
        .engine()
        .precompile_component(&ft_bytes)
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    for _ in 0..5 {
        compile.push(time(|| Component::new(runtime.engine(), &ft_bytes)).0);
        // SAFETY: bytes this engine produced a moment ago.
        deserialize
            .push(time(|| unsafe { Component::deserialize(runtime.engine(), &serialized) }).0);
    }
    let (compile, deserialize) = (stat(compile), stat(deserialize));

    let rows = [
        ("Magika inference, native tract (baseline)", &native),
        (
            "Magika via probe component + wasi:nn (incl. instantiation)",
            &nn,
        ),
        ("probe no-op call (instantiate + call)", &noop),
        ("file-type end to end on the input", &ft),
        ("file-type on 4 bytes (no model)", &ft_tiny),
        ("Magika preprocessing, native", &prep),
        (
            "Magika preprocessing, in Wasm (timed inside the probe)",
            &wprep,
        ),
        ("compile file-type.wasm (Component::new)", &compile),
        ("load precompiled file-type (deserialize)", &deserialize),
    ];
    println!(
        "device benchmark: {} repetitions, input {} ({} bytes)\n",
        a.reps,
        a.input.display(),
        input.len()
    );
    println!("| measurement | median µs | p10–p90 µs |");
    println!("|---|---:|---:|");
    for (name, s) in &rows {
        println!("| {name} | {:.1} | {:.1}–{:.1} |", s.median, s.p10, s.p90);
    }
    let ratio = nn_only / native.median;
    println!();
    println!(
        "inference through component + wasi:nn: {nn_only:.1} µs vs native {:.1} µs → ratio {ratio:.3} (goal ≤ 1.10)",
        native.median
    );
    println!(
        "preprocessing in Wasm ≈ {wasm_prep:.1} µs vs native {:.1} µs → ratio {:.2}",
        prep.median,
        wasm_prep / prep.median.max(0.001)
    );
    println!(
        "instantiate + trivial call of a precompiled component: {:.1} µs (goal < 1000 µs)",
        noop.median
    );
    println!(
        "compile {:.1} ms vs load precompiled {:.2} ms → {:.0}× faster start",
        compile.median / 1e3,
        deserialize.median / 1e3,
        compile.median / deserialize.median
    );
    if let Some(path) = a.json {
        let row = |metric: &str, value: f64, unit: &str, ratio: Option<f64>| {
            serde_json::json!({ "workload": "file-type", "system": "verge-device", "metric": metric,
                "value": value, "unit": unit, "ratio_to_baseline": ratio })
        };
        let out = serde_json::json!([
            row("native tract inference", native.median, "us", Some(1.0)),
            row("component wasi:nn inference", nn_only, "us", Some(ratio)),
            row("native preprocessing", prep.median, "us", Some(1.0)),
            row(
                "wasm preprocessing",
                wasm_prep,
                "us",
                Some(wasm_prep / prep.median.max(0.001))
            ),
            row("instantiate + call", noop.median, "us", None),
            row("compile", compile.median, "us", Some(1.0)),
            row(
                "load precompiled",
                deserialize.median,
                "us",
                Some(deserialize.median / compile.median)
            ),
        ]);
        std::fs::write(&path, serde_json::to_vec_pretty(&out)?)?;
    }
    Ok(())
}
