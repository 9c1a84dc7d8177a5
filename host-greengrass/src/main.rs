//! `verge-device`: run verge components on a device.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::json;
use verge_device::config::{Config, Overrides};
use verge_device::nn::{Backend, EngineSpec, Graphs, ModelSpec, Provider, Target};
use verge_device::recipe::{self, Arch};
use verge_device::runtime::{Deployment, Limits, Placement, Request, Runtime};
use verge_device::{daemon, log, report};
use wasmtime::component::Component;

#[derive(Parser)]
#[command(
    version = verge_device::VERSION,
    about = "The verge device host: inference components on wasmtime, wasi:nn on tract or ONNX Runtime"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a component once per input and print each outcome as a JSON line.
    Run(Box<RunArgs>),
    /// Run the daemon: a local HTTP API, durable state, a durable outbox sent
    /// to the cloud over MQTT, health and metrics. Logs JSON lines to stdout.
    Serve(ServeArgs),
    /// Write an AWS IoT Greengrass v2 recipe (JSON) that deploys the daemon with
    /// this configuration, and the artifacts to upload beside it.
    Recipe(RecipeArgs),
}

#[derive(clap::Args)]
struct RecipeArgs {
    /// The daemon's configuration (as for `serve`): every component and model
    /// it names ships as an artifact, and so does the configuration itself.
    #[arg(long)]
    config: PathBuf,
    /// Where the artifacts will be uploaded: s3://BUCKET/PREFIX (put the
    /// version in PREFIX: a component version's artifacts must never change).
    #[arg(long)]
    artifacts_uri: String,
    /// The component's version (MAJOR.MINOR.PATCH).
    #[arg(long)]
    version: String,
    /// The component's name.
    #[arg(long, default_value = "verge.Device")]
    name: String,
    /// The verge-device binary for an architecture: ARCH=PATH, ARCH one of
    /// amd64, aarch64, arm (repeatable; default: this binary, for this machine).
    #[arg(long = "binary", value_parser = arch_binary)]
    binaries: Vec<(Arch, PathBuf)>,
    /// The ONNX Runtime library for an architecture's devices: ARCH=PATH
    /// (repeatable). Models that name no backend run on it there, and on
    /// tract on an architecture without one.
    #[arg(long = "onnxruntime", value_parser = arch_binary)]
    onnxruntime: Vec<(Arch, PathBuf)>,
    /// The TensorFlow Lite C library (libtensorflowlite_c) for an
    /// architecture's devices: ARCH=PATH (repeatable). TFLite models run on it.
    #[arg(long = "tensorflowlite", value_parser = arch_binary)]
    tensorflowlite: Vec<(Arch, PathBuf)>,
    /// The folder to write recipe.json and artifacts/ into (new, or empty).
    #[arg(long, default_value = "greengrass")]
    out: PathBuf,
    /// Run the daemon as root (RequiresPrivilege): needed to read the core
    /// device's own certificate and key.
    #[arg(long)]
    privileged: bool,
    /// In the IPC policy, name the device's topics with {iot:thingName}
    /// (classic nucleus v2.6.0+ with interpolateComponentConfiguration; nucleus
    /// lite after v2.6.0) rather than a wildcard for the thing name.
    #[arg(long)]
    thing_name_in_policy: bool,
}

fn arch_binary(s: &str) -> Result<(Arch, PathBuf), String> {
    let (arch, path) = pair(s)?;
    Ok((arch.parse()?, PathBuf::from(path)))
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The configuration file (TOML, or JSON when it ends in .json).
    #[arg(long)]
    config: PathBuf,
    /// The device's name (fills {thing} in topics and the client id).
    #[arg(long)]
    thing_name: Option<String>,
    /// Where state, the outbox and precompiled components are kept.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// What relative component, model and certificate paths are relative to
    /// (default: the configuration file's folder).
    #[arg(long)]
    artifacts_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The component (.wasm) to run.
    component: PathBuf,
    /// A model the component may load by name: NAME=PATH (.onnx or .tflite; repeatable).
    #[arg(long = "model", value_parser = pair)]
    models: Vec<(String, String)>,
    /// The engine for every model: tract or compact (built in), onnxruntime
    /// or tensorflowlite (libraries). Default: tract for ONNX files,
    /// tensorflowlite for TFLite files.
    #[arg(long, value_enum)]
    backend: Option<Backend>,
    /// Intra-op threads per model (0: the backend's default).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Run models on an accelerator through ONNX Runtime's execution providers.
    #[arg(long)]
    gpu: bool,
    /// Execution providers to try for --gpu, in order.
    #[arg(long = "provider", value_enum)]
    providers: Vec<Provider>,
    /// The providers' device: OpenVINO's device type (CPU, GPU, GPU.1, NPU,
    /// AUTO:GPU,CPU, HETERO:GPU,CPU), CUDA's or TensorRT's device id (0, 1).
    #[arg(long)]
    device: Option<String>,
    /// Where providers keep their compiled models (OpenVINO blobs, TensorRT
    /// engines), DIR/<provider>/<model>-<sha256 prefix>/; default: nowhere.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Writes ONNX Runtime's profile (each node's time and provider) to PREFIX_<time>.json.
    #[arg(long, value_name = "PREFIX")]
    onnxruntime_profile: Option<PathBuf>,
    /// The libonnxruntime to load (default: ORT_DYLIB_PATH, then the usual places).
    #[arg(long)]
    onnxruntime_lib: Option<PathBuf>,
    /// The libtensorflowlite_c to load (default: $VERGE_TENSORFLOWLITE_LIB, beside
    /// this binary, then the usual places).
    #[arg(long)]
    tensorflowlite_lib: Option<PathBuf>,
    /// TensorFlow Lite models: do not use the XNNPack delegate.
    #[arg(long)]
    no_xnnpack: bool,
    /// Run a model on tract when ONNX Runtime or a provider is missing or refuses it.
    #[arg(long)]
    fallback_to_tract: bool,
    /// Batch calls across inputs: run up to MAX inputs at once, their model
    /// runs joined along the leading dimension (waiting up to WAIT_US, 500 by
    /// default, for company): MAX[:WAIT_US].
    #[arg(long, value_name = "MAX[:WAIT_US]", value_parser = batch_arg)]
    batch: Option<verge_device::nn::BatchSettings>,
    /// A file whose bytes are the request body (repeatable: one outcome per input).
    #[arg(long = "input", required = true)]
    inputs: Vec<PathBuf>,
    /// The request's content type.
    #[arg(long, default_value = "")]
    content_type: String,
    /// A request attribute K=V (repeatable).
    #[arg(long = "attr", value_parser = pair)]
    attrs: Vec<(String, String)>,
    /// A deployment setting K=V the component reads through wasi:config (repeatable).
    #[arg(long = "config", value_parser = pair)]
    config: Vec<(String, String)>,
    /// Wall-clock budget per call, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    deadline_ms: u64,
    /// Linear memories and tables per call, in MiB.
    #[arg(long, default_value_t = 256)]
    memory_mb: usize,
    /// wasi:nn tensors a call may hold in the host, in MiB (default: --memory-mb).
    #[arg(long)]
    tensor_mb: Option<usize>,
    /// Host resources a call may hold at once (tensors, contexts, buckets, streams).
    #[arg(long, default_value_t = verge_device::runtime::DEFAULT_MAX_RESOURCES)]
    max_resources: usize,
    /// Outcome a call may return, in MiB (default: a quarter of --memory-mb).
    #[arg(long)]
    output_mb: Option<usize>,
    /// `json`: one JSON line per input; `table`: a table for people.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum Format {
    Json,
    Table,
}

fn pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got '{s}'"))
}

/// `MAX[:WAIT_US]` for `--batch`.
fn batch_arg(s: &str) -> Result<verge_device::nn::BatchSettings, String> {
    let (max, wait) = s.split_once(':').unwrap_or((s, "500"));
    let settings = verge_device::nn::BatchSettings {
        max: max
            .parse()
            .map_err(|_| format!("expected MAX[:WAIT_US], got '{s}'"))?,
        wait_us: wait
            .parse()
            .map_err(|_| format!("expected MAX[:WAIT_US], got '{s}'"))?,
    };
    if settings.max < 2 || settings.max > verge_device::nn::MAX_BATCH {
        return Err(format!("MAX is from 2 to {}", verge_device::nn::MAX_BATCH));
    }
    Ok(settings)
}

fn main() -> ExitCode {
    // A mistake on the command line is exit 1, like every refusal to start
    // (2 means a component failed on some input).
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    let result = match cli.command {
        Command::Run(args) => run(*args),
        Command::Serve(args) => return serve(args),
        Command::Recipe(args) => write_recipe(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("verge-device: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn write_recipe(args: RecipeArgs) -> Result<ExitCode> {
    let written = recipe::write(&recipe::Options {
        config: Config::read(&args.config)?,
        config_dir: verge_device::config::config_dir(&args.config).to_path_buf(),
        name_by_key: false,
        artifacts_uri: args.artifacts_uri.clone(),
        version: args.version,
        name: args.name,
        binaries: args.binaries,
        onnxruntime: args.onnxruntime,
        tensorflowlite: args.tensorflowlite,
        out: args.out,
        privileged: args.privileged,
        thing_name_in_policy: args.thing_name_in_policy,
    })?;
    for w in &written.warnings {
        eprintln!("verge-device: warning: {w}");
    }
    println!(
        "wrote {} ({} bytes; {} manifest(s), {} artifacts each) and {}/",
        written.recipe.display(),
        written.recipe_bytes,
        written.manifests,
        written.artifacts_per_manifest,
        written.artifacts.display()
    );
    println!("upload the artifacts, then create the component version:");
    println!(
        "  aws s3 cp --recursive {} {}/",
        written.artifacts.display(),
        args.artifacts_uri.trim_end_matches('/')
    );
    println!(
        "  aws greengrassv2 create-component-version --inline-recipe fileb://{}",
        written.recipe.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Exit 0 after a clean shutdown, 1 on a fatal error (logged as JSON).
fn serve(args: ServeArgs) -> ExitCode {
    let overrides = Overrides {
        thing_name: args.thing_name,
        state_dir: args.state_dir,
        artifacts_dir: args.artifacts_dir,
    };
    let fatal = |e: &dyn std::fmt::Display| {
        log::error("fatal", json!({ "error": e.to_string() }));
        ExitCode::from(1)
    };
    let config = match Config::load(&args.config, &overrides) {
        Ok(c) => c,
        Err(e) => return fatal(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("verge-io")
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fatal(&e),
    };
    let result = runtime.block_on(daemon::serve(
        config,
        verge_device::nucleus::Env::from_process(),
    ));
    // A load still running (an engine stuck on a model) must not hold the exit.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fatal(&e),
    }
}

/// Exit 0 when every input got an outcome, 2 when some got an error.
fn run(args: RunArgs) -> Result<ExitCode> {
    let engine = EngineSpec {
        backend: args.backend.unwrap_or_default(),
        named: args.backend.is_some(),
        tensorflowlite: verge_device::nn::TfliteSpec {
            library: args.tensorflowlite_lib.clone(),
            xnnpack: !args.no_xnnpack,
        },
        threads: args.threads,
        target: if args.gpu { Target::Gpu } else { Target::Cpu },
        providers: args.providers.clone(),
        library: args.onnxruntime_lib.clone(),
        fallback_to_tract: args.fallback_to_tract,
        device: args.device.clone(),
        cache_dir: args.cache_dir.clone(),
        profile: args.onnxruntime_profile.clone(),
        batch: args.batch.map(verge_device::nn::BatchSettings::policy),
    };
    engine.validate().map_err(|e| anyhow::anyhow!(e))?;
    let models: Vec<ModelSpec> = args
        .models
        .into_iter()
        .map(|(name, path)| ModelSpec {
            name,
            path: PathBuf::from(path),
            engine: engine.clone(),
        })
        .collect();
    let graphs = Graphs::load(&models)?;
    for loaded in graphs.loaded() {
        if let Some(why) = &loaded.fallback {
            eprintln!("verge-device: model '{}' runs on tract: {why}", loaded.name);
        }
    }
    let runtime = Runtime::new(graphs)?;
    let bytes = std::fs::read(&args.component)
        .with_context(|| format!("reading component {}", args.component.display()))?;
    let component = Component::new(runtime.engine(), &bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a valid component: {e:#}",
            args.component.display()
        )
    })?;
    let prepared = runtime.prepare(&component)?;
    let deployment = Deployment::new(
        Placement::Local,
        Limits::new(
            Duration::from_millis(args.deadline_ms),
            args.memory_mb << 20,
            Limits::default().max_body_bytes,
        )
        .overridden(args.tensor_mb, Some(args.max_resources), args.output_mb),
        &args.config,
    );
    let mut failed = false;
    let mut rows = Vec::new();
    let call = |input: &PathBuf| -> Result<(Result<_, _>, f64)> {
        let body = match std::fs::read(input) {
            Ok(b) => b,
            Err(e) => bail!("reading input {}: {e}", input.display()),
        };
        let request = Request {
            content_type: args.content_type.clone(),
            body,
            attributes: args.attrs.clone(),
            truncated: false,
        };
        let started = Instant::now();
        let result = runtime.call(&prepared, &deployment, &request);
        Ok((result, started.elapsed().as_secs_f64() * 1e3))
    };
    // With --batch, up to MAX inputs at once (their model runs batch); the
    // answers still come in the inputs' order.
    let at_once = args.batch.map_or(1, |b| b.max.max(1));
    let mut results = Vec::with_capacity(args.inputs.len());
    for chunk in args.inputs.chunks(at_once) {
        if chunk.len() == 1 {
            results.push((&chunk[0], call(&chunk[0])?));
            continue;
        }
        let done: Vec<_> = std::thread::scope(|s| {
            let calls: Vec<_> = chunk.iter().map(|i| s.spawn(|| call(i))).collect();
            calls
                .into_iter()
                .map(|c| c.join().expect("a call thread panicked"))
                .collect()
        });
        for (input, r) in chunk.iter().zip(done) {
            results.push((input, r?));
        }
    }
    for (input, (result, ms)) in results {
        let mut line = match &result {
            Ok(o) => report::outcome(o),
            Err(e) => {
                failed = true;
                report::error(e)
            }
        };
        line["input"] = json!(input.display().to_string());
        line["ms"] = json!((ms * 1000.0).round() / 1000.0);
        match args.format {
            Format::Json => println!("{line}"),
            Format::Table => rows.push(line),
        }
    }
    if args.format == Format::Table {
        print!("{}", report::table(&rows));
    }
    for m in runtime.graphs().loaded() {
        let stats = runtime.graphs().get(&m.name).and_then(|g| g.batch_stats());
        if let Some(b) = stats {
            eprintln!(
                "verge-device: model '{}': {} calls in {} runs ({} rows; {} batches retried call by call)",
                m.name, b.calls, b.batches, b.rows, b.retried
            );
        }
    }
    Ok(if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
