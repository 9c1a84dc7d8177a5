//! `verge-edge`: pack a verge component for a CloudFront trigger.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use verge_edge::cloudformation::{self, Function};
use verge_edge::fit;
use verge_edge::package::{
    self, Engine, ModelSource, OnError, OnnxruntimeNode, PackError, PackOptions,
};
use verge_edge::quota::{Runtime, Trigger};
use verge_edge::sha256;

#[derive(Parser)]
#[command(
    version,
    about = "Turns a verge component into a Lambda@Edge deployment"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compose, transpile and pack a component; write function.zip and template.json
    /// (with --dry-run: how it fits each trigger on each engine, nothing written).
    Pack(PackArgs),
    /// One CloudFormation template for several packs on one cache behaviour
    /// (the cascade: e.g. a viewer-request and an origin-request function), at
    /// most one per CloudFront event; one role, one distribution.
    Stack(StackArgs),
}

#[derive(clap::Args)]
struct StackArgs {
    /// A `verge-edge pack --out` folder (function.zip, verge.json); repeatable.
    #[arg(long = "package", required = true)]
    packages: Vec<PathBuf>,
    /// Where to write template.json and each package's zip as <trigger>.zip
    /// (the default of its S3 key parameter).
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct PackArgs {
    /// The component (.wasm), the very file a device runs.
    #[arg(long)]
    component: PathBuf,
    /// A model the component loads by name: NAME=PATH, or NAME=https://…#sha256=HEX
    /// for a model the function fetches once per container (repeatable).
    #[arg(long = "model", value_parser = model)]
    models: Vec<(String, ModelSource)>,
    /// The wasi:nn engine [default: onnxruntime for origin triggers, compact for viewer ones].
    #[arg(long, value_enum)]
    engine: Option<Engine>,
    /// The onnxruntime-node package whose binding is packed [default:
    /// $VERGE_ONNXRUNTIME_NODE, else node_modules/onnxruntime-node here].
    #[arg(long)]
    onnxruntime_node: Option<PathBuf>,
    /// Intra-op threads for the onnxruntime engine [default: one per 1,769 MB of
    /// memory, what Lambda gives a vCPU for].
    #[arg(long, default_value_t = 0)]
    threads: u32,
    /// The CloudFront event that runs the function (with --dry-run: marks its row).
    #[arg(long, value_enum, required_unless_present = "dry_run")]
    trigger: Option<Trigger>,
    /// Ask CloudFront to pass request bodies (request triggers only).
    #[arg(long)]
    include_body: bool,
    /// Function memory in MB (viewer triggers: 128).
    #[arg(long = "memory", default_value_t = 128)]
    memory_mb: u32,
    /// Function timeout in seconds (viewer triggers: at most 5, origin: 30).
    #[arg(long = "timeout", default_value_t = 5)]
    timeout_s: u32,
    /// The Lambda runtime the template creates the function on: nodejs22.x
    /// (what Lambda@Edge runs) or nodejs24.x; nodejs20.x is refused.
    #[arg(long, default_value_t = Runtime::default())]
    runtime: Runtime,
    /// When the component fails or traps: pass the request on, or answer 503.
    #[arg(long, value_enum, default_value_t = OnError::Pass)]
    on_error: OnError,
    /// A deployment setting K=V baked into the package (Lambda@Edge has no environment).
    #[arg(long = "config", value_parser = pair)]
    config: Vec<(String, String)>,
    /// The engine's wasi:nn provider component [default: $VERGE_NN_PROVIDER_DIR/<file>,
    /// else the file (nn_provider_compact.wasm for compact, nn_provider.wasm for tract,
    /// nn_provider_host.wasm for onnxruntime) beside this program or in the cargo
    /// target folder it was built in].
    #[arg(long)]
    provider: Option<PathBuf>,
    /// Where to write function.zip, template.json and verge.json.
    #[arg(long, required_unless_present = "dry_run")]
    out: Option<PathBuf>,
    /// Write nothing: build the package in memory, exactly as pack would, for
    /// each of the four triggers on each engine, and print whether it fits and
    /// why not (exit 0 when at least one does). A flag of pack rather than a
    /// subcommand of its own: it takes the pack command line you were about to
    /// run, so it answers for those settings (--memory, --timeout, --include-body
    /// are judged as given, never adjusted per trigger) and shows the
    /// alternatives; --trigger and --out are not needed, and --trigger (with
    /// --engine) only marks the row that pack would build.
    #[arg(long)]
    dry_run: bool,
    /// With --dry-run: the rows as JSON (sizes in bytes) instead of a table.
    #[arg(long, requires = "dry_run")]
    json: bool,
}

fn pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got '{s}'"))
}

fn model(s: &str) -> Result<(String, ModelSource), String> {
    let (name, source) = pair(s)?;
    Ok((name, ModelSource::parse(&source)?))
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Pack(args) if args.dry_run => dry_run(args),
        Command::Pack(args) => pack(args).map(|()| true),
        Command::Stack(args) => stack(args).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("verge-edge: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn pack(args: PackArgs) -> Result<()> {
    let trigger = args.trigger.context("--trigger is needed")?;
    let out = args.out.clone().context("--out is needed")?;
    let engine = args
        .engine
        .unwrap_or_else(|| package::default_engine(trigger));
    let file = package::provider_file(engine)?;
    let provider_path = args
        .provider
        .or_else(|| package::find_provider(file))
        .with_context(|| {
            format!(
                "no wasi:nn provider for {}: pass --provider {file}",
                engine.as_str()
            )
        })?;
    let provider = std::fs::read(&provider_path)
        .with_context(|| format!("reading the provider {}", provider_path.display()))?;
    // Looked up now, needed only if the component does inference.
    let onnxruntime_node = match engine {
        Engine::Onnxruntime => {
            OnnxruntimeNode::find(args.onnxruntime_node).map_err(|e| format!("{e:#}"))
        }
        Engine::Tract | Engine::Compact | Engine::Tensorflowlite => {
            Err(format!("the {} engine packs no binding", engine.as_str()))
        }
    };
    let opts = PackOptions {
        component: args.component.clone(),
        provider,
        engine,
        onnxruntime_node,
        threads: args.threads,
        models: args.models,
        trigger,
        include_body: args.include_body,
        memory_mb: args.memory_mb,
        timeout_s: args.timeout_s,
        runtime: args.runtime,
        on_error: args.on_error,
        config: args.config,
    };
    let packed = match package::pack(&opts) {
        Ok(p) => p,
        Err(PackError::Misfit(m)) => anyhow::bail!("refused: {m}"),
        Err(e) => return Err(e.into()),
    };
    let zip_sha = sha256(&packed.zip);
    let name = args
        .component
        .file_stem()
        .map_or("component".into(), |s| s.to_string_lossy().to_string());
    let template = cloudformation::template(&Function {
        name,
        trigger,
        include_body: args.include_body,
        memory_mb: args.memory_mb,
        timeout_s: args.timeout_s,
        runtime: args.runtime,
        zip_sha256: zip_sha.clone(),
        code_key: "function.zip".into(),
        source: out.display().to_string(),
        path: None,
    });
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    write(&out.join("function.zip"), &packed.zip)?;
    write_json(&out.join("template.json"), &template)?;
    write_json(&out.join("verge.json"), &packed.manifest)?;
    let limit = trigger.limits().zip_bytes;
    println!(
        "packed {} for {} on {}: function.zip {} bytes ({:.1} % of the {} byte limit), sha256 {zip_sha}",
        args.component.display(),
        trigger.event_type(),
        packed.manifest["engine"]["name"].as_str().unwrap_or("?"),
        packed.zip.len(),
        packed.zip.len() as f64 * 100.0 / limit as f64,
        limit
    );
    Ok(())
}

/// `pack --dry-run`: every trigger × engine, built in memory; true when one fits.
fn dry_run(args: PackArgs) -> Result<bool> {
    // Inputs every row needs: one error, not twelve.
    std::fs::metadata(&args.component)
        .with_context(|| format!("the component {}", args.component.display()))?;
    for (name, source) in &args.models {
        if let ModelSource::File(path) = source {
            std::fs::metadata(path)
                .with_context(|| format!("model '{name}': {}", path.display()))?;
        }
    }
    let chosen = args.engine.or(args.trigger.map(package::default_engine));
    if args.provider.is_some() && chosen.is_none() {
        anyhow::bail!("--provider is one engine's provider: name the engine with --engine");
    }
    let providers: Vec<(Engine, Result<Vec<u8>, String>)> = Engine::EDGE
        .iter()
        .map(|&engine| {
            let file = package::provider_file(engine).expect("the edge's engines have providers");
            let path = match &args.provider {
                Some(p) if chosen == Some(engine) => Some(p.clone()),
                _ => package::find_provider(file),
            };
            let bytes = match path {
                None => Err(format!(
                    "no {file} in $VERGE_NN_PROVIDER_DIR, beside verge-edge or in its cargo target's wasm32-wasip2/component (pass --provider with --engine {})",
                    engine.as_str()
                )),
                Some(path) => std::fs::read(&path)
                    .map_err(|e| format!("reading the provider {}: {e}", path.display())),
            };
            (engine, bytes)
        })
        .collect();
    let base = PackOptions {
        component: args.component.clone(),
        provider: Vec::new(),
        engine: Engine::Compact,
        // Shorter than pack's message: it is in a table cell, once per trigger.
        onnxruntime_node: OnnxruntimeNode::find(args.onnxruntime_node).map_err(|e| {
            format!(
                "onnxruntime-node: {} (see --onnxruntime-node, $VERGE_ONNXRUNTIME_NODE)",
                e.root_cause()
            )
        }),
        threads: args.threads,
        models: args.models.clone(),
        trigger: Trigger::ViewerRequest,
        include_body: args.include_body,
        memory_mb: args.memory_mb,
        timeout_s: args.timeout_s,
        runtime: args.runtime,
        on_error: args.on_error,
        config: args.config,
    };
    let fits = fit::dry_run(&base, &providers);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&fit::json(&fits))?);
    } else {
        let models: Vec<&str> = args.models.iter().map(|(n, _)| n.as_str()).collect();
        println!(
            "dry run: {}{} with --memory {} --timeout {}{}, on each trigger and engine (nothing written)",
            args.component.display(),
            if models.is_empty() {
                String::new()
            } else {
                format!(" and model {}", models.join(", "))
            },
            args.memory_mb,
            args.timeout_s,
            if args.include_body {
                " --include-body"
            } else {
                ""
            },
        );
        let marked = args.trigger.zip(chosen);
        print!("{}", fit::table(&fits, marked));
    }
    Ok(fits.iter().any(|f| f.verdict.fits()))
}

/// `stack`: one template for several packs; each zip copied beside it as <trigger>.zip.
fn stack(args: StackArgs) -> Result<()> {
    let mut functions = Vec::new();
    for dir in &args.packages {
        let mut f = Function::from_package(dir)?;
        f.code_key = format!("{}.zip", f.trigger.event_type());
        functions.push(f);
    }
    // Refuses two packages for one event before anything is written.
    let template = cloudformation::stack(&functions)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    for (dir, f) in args.packages.iter().zip(&functions) {
        let to = args.out.join(&f.code_key);
        std::fs::copy(dir.join("function.zip"), &to)
            .with_context(|| format!("copying {} to {}", dir.display(), to.display()))?;
    }
    let path = args.out.join("template.json");
    write_json(&path, &template)?;
    println!(
        "{}: {} function(s) on one cache behaviour",
        path.display(),
        functions.len()
    );
    functions.sort_by_key(|f| Trigger::ALL.iter().position(|t| *t == f.trigger));
    for f in &functions {
        println!(
            "  {:<16} {:<16} {:<20} sha256 {}",
            f.trigger.event_type(),
            f.name,
            f.code_key,
            f.zip_sha256
        );
    }
    println!(
        "upload the zips to an S3 bucket in us-east-1 (keys default to their names), then create the stack there with CodeBucket and OriginDomainName"
    );
    Ok(())
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let mut text = serde_json::to_vec_pretty(value)?;
    text.push(b'\n');
    write(path, &text)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}
