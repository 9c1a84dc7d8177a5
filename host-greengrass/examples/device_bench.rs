//! Device inference and start-up, every system measured in this run and
//! alternated within each repetition; one JSON line per series of samples
//! (`bench/report.py` turns them into the table).
//!
//! For each workload of `bench/workloads.json`:
//! * model only, on zero tensors of the model's input shapes: tract natively
//!   (the floor for our backend, one thread and two), ONNX Runtime natively
//!   through the same `ort` binding (one thread and its default), and the
//!   probe component calling `wasi:nn` in the device host on each backend (the
//!   probe's no-op call, measured alongside, is subtracted);
//! * the real component on a real request, preprocessing included, on each backend.
//!
//! Start-up: instantiate + trivial call of a precompiled component, compile
//! against loading precompiled, and Magika's preprocessing in Wasm against native.
//!
//! cargo run --release -p verge-device --example device_bench -- [--reps N] [--rows FILE] [--only a,b]

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::json;
use verge_device::nn::{ElementType, EngineSpec, Graphs, ModelSpec, Tensor};
use verge_device::runtime::{Deployment, Limits, Outcome, Placement, Prepared, Request, Runtime};
use wasmtime::component::Component;

#[derive(Deserialize)]
struct Workloads {
    workloads: Vec<Workload>,
}

#[derive(Deserialize)]
struct Workload {
    workload: String,
    graph: String,
    model: String,
    component: String,
    body: String,
    content_type: String,
    inputs: Vec<Input>,
}

#[derive(Deserialize)]
struct Input {
    name: String,
    dims: Vec<u32>,
    #[serde(rename = "type")]
    ty: String,
}

impl Input {
    fn zeros(&self) -> Result<Tensor> {
        let ty = match self.ty.as_str() {
            "f32" => ElementType::F32,
            "i32" => ElementType::I32,
            "i64" => ElementType::I64,
            "u8" => ElementType::U8,
            other => bail!("input type {other}"),
        };
        let n: u32 = self.dims.iter().product();
        Ok(Tensor::new(
            self.dims.clone(),
            ty,
            vec![0; n as usize * ty.size()],
        ))
    }

    /// The probe's spelling: `NAME:DIMS:TYPE`.
    fn probe(&self) -> String {
        let dims: Vec<String> = self.dims.iter().map(u32::to_string).collect();
        format!("{}:{}:{}", self.name, dims.join(","), self.ty)
    }
}

struct Args {
    reps: usize,
    rows: Option<PathBuf>,
    only: Option<Vec<String>>,
    root: PathBuf,
}

fn args() -> Result<Args> {
    let mut a = Args {
        reps: 30,
        rows: None,
        only: None,
        root: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--reps" => a.reps = value()?.parse()?,
            "--rows" => a.rows = Some(value()?.into()),
            "--only" => a.only = Some(value()?.split(',').map(String::from).collect()),
            other => bail!("unknown flag {other} (--reps N, --rows FILE, --only a,b)"),
        }
    }
    if a.reps == 0 {
        bail!("--reps must be positive");
    }
    Ok(a)
}

fn time<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let t = Instant::now();
    let v = f();
    (t.elapsed(), v)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn call(
    runtime: &Runtime,
    p: &Prepared,
    body: &[u8],
    content_type: &str,
    attributes: Vec<(String, String)>,
) -> Result<(Duration, Outcome)> {
    let d = Deployment::new(Placement::Local, Limits::default(), &[]);
    let request = Request {
        content_type: content_type.into(),
        body: body.to_vec(),
        attributes,
        truncated: false,
    };
    let (t, r) = time(|| runtime.call(p, &d, &request));
    Ok((t, r.map_err(|e| anyhow::anyhow!("{e}"))?))
}

/// A device host with one model on one engine and the workload's component and the probe.
struct Host {
    runtime: Runtime,
    component: Prepared,
    probe: Prepared,
}

impl Host {
    fn new(w: &Workload, model: &Path, engine: EngineSpec, wasm: &Wasm) -> Result<Host> {
        let spec = ModelSpec {
            name: w.graph.clone(),
            path: model.to_path_buf(),
            engine,
        };
        let runtime = Runtime::new(Graphs::load(&[spec])?)?;
        let prepare = |bytes: &[u8]| -> Result<Prepared> {
            let c =
                Component::new(runtime.engine(), bytes).map_err(|e| anyhow::anyhow!("{e:#}"))?;
            Ok(runtime.prepare(&c)?)
        };
        Ok(Host {
            component: prepare(&wasm.component)?,
            probe: prepare(&wasm.probe)?,
            runtime,
        })
    }
}

struct Wasm {
    component: Vec<u8>,
    probe: Vec<u8>,
}

/// The samples of one system, in milliseconds.
type Series = Vec<(String, Vec<f64>)>;

fn push(series: &mut Series, system: &str, v: f64) {
    match series.iter_mut().find(|(s, _)| s == system) {
        Some((_, xs)) => xs.push(v),
        None => series.push((system.to_string(), vec![v])),
    }
}

const TRACT: &str = "tract, native Rust, 1 thread";

fn inference(a: &Args, w: &Workload, rows: &mut Vec<serde_json::Value>) -> Result<()> {
    let models = verge_testkit::models_dir();
    let model = models.join(&w.model);
    let body_path = match w.body.strip_prefix("models:") {
        Some(p) => models.join(p),
        None => a.root.join(&w.body),
    };
    let body = std::fs::read(&body_path).with_context(|| body_path.display().to_string())?;
    let wasm = Wasm {
        component: std::fs::read(verge_testkit::wasm(&w.component))?,
        probe: std::fs::read(verge_testkit::wasm("probe"))?,
    };
    let inputs: Vec<(String, Tensor)> = w
        .inputs
        .iter()
        .map(|i| Ok((i.name.clone(), i.zeros()?)))
        .collect::<Result<_>>()?;
    let probe_nn = format!(
        "nn:{}:{}",
        w.graph,
        w.inputs
            .iter()
            .map(Input::probe)
            .collect::<Vec<_>>()
            .join("+")
    );

    // Native sessions, straight on the engines.
    let tract = |threads| EngineSpec {
        threads,
        ..EngineSpec::default()
    };
    let native: Vec<(&str, EngineSpec)> = vec![
        (TRACT, tract(1)),
        ("tract, native Rust, 2 threads", tract(2)),
        (
            "onnxruntime, native Rust, 1 thread",
            verge_testkit::onnxruntime(1),
        ),
        (
            "onnxruntime, native Rust, default threads",
            verge_testkit::onnxruntime(0),
        ),
    ];
    let mut sessions: Vec<(&str, verge_nn::Context)> = Vec::new();
    for (system, engine) in native {
        let spec = ModelSpec {
            name: "m".into(),
            path: model.clone(),
            engine,
        };
        let graphs = Graphs::load(&[spec])?;
        sessions.push((system, graphs.get("m").unwrap().context()));
    }
    // The device host on each backend.
    let hosts = [
        (
            "verge-device (tract)",
            Host::new(w, &model, tract(1), &wasm)?,
        ),
        (
            "verge-device (onnxruntime, 1 thread)",
            Host::new(w, &model, verge_testkit::onnxruntime(1), &wasm)?,
        ),
        (
            "verge-device (onnxruntime, default threads)",
            Host::new(w, &model, verge_testkit::onnxruntime(0), &wasm)?,
        ),
    ];

    let probe_attr = |cmd: &str| vec![("probe".to_string(), cmd.to_string())];
    // One sample is the mean of `k` back-to-back calls, `k` chosen so a sample
    // lasts about 2 ms: a single call of a tiny model right after another
    // system ran measures cold caches, not the engine.
    let k = {
        for _ in 0..3 {
            sessions[0]
                .1
                .compute_named(inputs.clone())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let (t, r) = time(|| sessions[0].1.compute_named(inputs.clone()));
        r.map_err(|e| anyhow::anyhow!("{e}"))?;
        (2.0 / ms(t).max(1e-3)).ceil().clamp(1.0, 200.0) as u32
    };
    let mean = |f: &mut dyn FnMut() -> Result<Duration>| -> Result<f64> {
        let mut total = Duration::ZERO;
        for _ in 0..k {
            total += f()?;
        }
        Ok(ms(total) / f64::from(k))
    };
    let mut series: Series = Vec::new();
    for rep in 0..a.reps + 2 {
        let warm = rep < 2;
        for (system, s) in &mut sessions {
            let t = mean(&mut || {
                let (t, r) = time(|| s.compute_named(inputs.clone()));
                r.map_err(|e| anyhow::anyhow!("{system}: {e}"))?;
                Ok(t)
            })?;
            if !warm {
                push(&mut series, &format!("{system}, model only"), t);
            }
        }
        for (system, h) in &hosts {
            let nn = mean(&mut || {
                let (t, outcome) = call(&h.runtime, &h.probe, b"", "", probe_attr(&probe_nn))?;
                if !matches!(outcome, Outcome::Respond(_)) {
                    bail!("{system}: probe {probe_nn}: {outcome:?}");
                }
                Ok(t)
            })?;
            let noop = mean(&mut || Ok(call(&h.runtime, &h.probe, b"echo", "", vec![])?.0))?;
            let whole = mean(&mut || {
                let (t, outcome) = call(&h.runtime, &h.component, &body, &w.content_type, vec![])?;
                if let Outcome::Respond(r) = &outcome
                    && r.status >= 400
                {
                    bail!("{system}: {} answered {}", w.component, r.status);
                }
                Ok(t)
            })?;
            if !warm {
                push(
                    &mut series,
                    &format!("{system}, model only (wasi:nn via probe)"),
                    (nn - noop).max(0.0),
                );
                push(
                    &mut series,
                    &format!("{system}, whole request incl. preprocessing"),
                    whole,
                );
            }
        }
    }
    for (system, samples) in series {
        rows.push(json!({
            "section": "device-inference", "workload": w.workload, "system": system,
            "metric": "inference", "unit": "ms", "samples": samples,
            "baseline": system.starts_with(TRACT), "better": "lower",
        }));
    }
    Ok(())
}

fn startup(a: &Args, rows: &mut Vec<serde_json::Value>) -> Result<()> {
    let models = verge_testkit::models_dir();
    let graphs = Graphs::load(&[ModelSpec::tract(
        "magika",
        models.join("magika-standard-v3-3/model.onnx"),
    )])?;
    let runtime = Runtime::new(graphs)?;
    let ft = std::fs::read(verge_testkit::wasm("file_type"))?;
    let probe_bytes = std::fs::read(verge_testkit::wasm("probe"))?;
    let probe = runtime.prepare(
        &Component::new(runtime.engine(), &probe_bytes).map_err(|e| anyhow::anyhow!("{e:#}"))?,
    )?;
    let serialized = runtime
        .engine()
        .precompile_component(&ft)
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let input = std::fs::read(a.root.join("host-greengrass/src/runtime.rs"))?;
    const PREP_RUNS: u32 = 200;
    let mut s: HashMap<&str, Vec<f64>> = HashMap::new();
    for rep in 0..a.reps + 3 {
        let (noop, _) = call(&runtime, &probe, b"echo", "", vec![])?;
        let (compile, _) = time(|| Component::new(runtime.engine(), &ft));
        // SAFETY: bytes this engine produced above.
        let (load, _) = time(|| unsafe { Component::deserialize(runtime.engine(), &serialized) });
        let (native, ()) = time(|| {
            for _ in 0..PREP_RUNS {
                std::hint::black_box(magika::prepare(std::hint::black_box(&input)));
            }
        });
        let (_, outcome) = call(
            &runtime,
            &probe,
            &input,
            "",
            vec![("probe".into(), format!("prep:{PREP_RUNS}"))],
        )?;
        let Outcome::Respond(r) = outcome else {
            bail!("probe prep: {outcome:?}")
        };
        let wasm_ns = serde_json::from_slice::<serde_json::Value>(&r.body)?["ns_per_call"]
            .as_f64()
            .context("ns_per_call")?;
        if rep >= 3 {
            s.entry("instantiate + trivial call (precompiled)")
                .or_default()
                .push(ms(noop));
            s.entry("compile component").or_default().push(ms(compile));
            s.entry("load precompiled component")
                .or_default()
                .push(ms(load));
            s.entry("native")
                .or_default()
                .push(ms(native) / f64::from(PREP_RUNS));
            s.entry("wasm").or_default().push(wasm_ns / 1e6);
        }
    }
    let row = |workload: &str, system: &str, metric: &str, samples: &Vec<f64>, baseline: bool| {
        json!({ "section": "device-startup", "workload": workload, "system": system, "metric": metric,
            "unit": "ms", "samples": samples, "baseline": baseline, "better": "lower" })
    };
    rows.push(row(
        "file-type",
        "verge-device",
        "instantiate + trivial call (precompiled)",
        &s["instantiate + trivial call (precompiled)"],
        false,
    ));
    rows.push(row(
        "file-type",
        "compile (Component::new)",
        "component ready",
        &s["compile component"],
        true,
    ));
    rows.push(row(
        "file-type",
        "load precompiled (cache)",
        "component ready",
        &s["load precompiled component"],
        false,
    ));
    rows.push(row(
        "file-type",
        "Magika preprocessing, native Rust",
        "preprocessing",
        &s["native"],
        true,
    ));
    rows.push(row(
        "file-type",
        "Magika preprocessing, in Wasm",
        "preprocessing",
        &s["wasm"],
        false,
    ));
    Ok(())
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let a = args()?;
    let text = std::fs::read_to_string(a.root.join("bench/workloads.json"))?;
    let workloads: Workloads = serde_json::from_str(&text)?;
    let mut rows = Vec::new();
    for w in &workloads.workloads {
        if a.only.as_ref().is_some_and(|o| !o.contains(&w.workload)) {
            continue;
        }
        eprintln!("device inference: {} ({} repetitions)", w.workload, a.reps);
        inference(&a, w, &mut rows).with_context(|| w.workload.clone())?;
    }
    eprintln!("device start-up ({} repetitions)", a.reps);
    startup(&a, &mut rows)?;
    println!("| section | workload | system | metric | median ms |");
    println!("|---|---|---|---|---:|");
    for r in &rows {
        let samples: Vec<f64> = serde_json::from_value(r["samples"].clone())?;
        println!(
            "| {} | {} | {} | {} | {:.3} |",
            r["section"].as_str().unwrap_or(""),
            r["workload"].as_str().unwrap_or(""),
            r["system"].as_str().unwrap_or(""),
            r["metric"].as_str().unwrap_or(""),
            median(&samples)
        );
    }
    if let Some(path) = &a.rows {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        for r in &rows {
            writeln!(f, "{r}")?;
        }
    }
    Ok(())
}
