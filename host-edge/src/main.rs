//! `verge-edge`: pack a verge component for a CloudFront trigger.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use verge_edge::cloudformation::{self, Function};
use verge_edge::package::{
    self, Engine, ModelSource, OnError, OnnxruntimeNode, PackError, PackOptions,
};
use verge_edge::quota::Trigger;
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
    /// Compose, transpile and pack a component; write function.zip and template.json.
    Pack(PackArgs),
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
    /// The CloudFront event that runs the function.
    #[arg(long, value_enum)]
    trigger: Trigger,
    /// Ask CloudFront to pass request bodies (request triggers only).
    #[arg(long)]
    include_body: bool,
    /// Function memory in MB (viewer triggers: 128).
    #[arg(long = "memory", default_value_t = 128)]
    memory_mb: u32,
    /// Function timeout in seconds (viewer triggers: at most 5, origin: 30).
    #[arg(long = "timeout", default_value_t = 5)]
    timeout_s: u32,
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
    #[arg(long)]
    out: PathBuf,
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
    let Command::Pack(args) = Cli::parse().command;
    match pack(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("verge-edge: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn default_provider(file: &str) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("VERGE_NN_PROVIDER_DIR") {
        return Some(Path::new(&dir).join(file));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [
        dir.join(file),
        dir.join("../wasm32-wasip2/component").join(file),
    ]
    .into_iter()
    .find(|p| p.exists())
}

fn onnxruntime_node(explicit: Option<PathBuf>) -> Result<OnnxruntimeNode> {
    let dir = explicit
        .or_else(|| std::env::var_os("VERGE_ONNXRUNTIME_NODE").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("node_modules/onnxruntime-node"));
    OnnxruntimeNode::at(&dir).with_context(|| {
        format!(
            "the onnxruntime engine packs onnxruntime-node's binding, not found at {} (install it with `ONNXRUNTIME_NODE_INSTALL=skip npm install onnxruntime-node`, pass --onnxruntime-node DIR, or choose --engine tract)",
            dir.display()
        )
    })
}

fn pack(args: PackArgs) -> Result<()> {
    let engine = args
        .engine
        .unwrap_or_else(|| Engine::default_for(args.trigger));
    let file = engine.provider_file();
    let provider_path = args
        .provider
        .or_else(|| default_provider(file))
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
            onnxruntime_node(args.onnxruntime_node).map_err(|e| format!("{e:#}"))
        }
        Engine::Tract | Engine::Compact => {
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
        trigger: args.trigger,
        include_body: args.include_body,
        memory_mb: args.memory_mb,
        timeout_s: args.timeout_s,
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
        name: &name,
        trigger: args.trigger,
        include_body: args.include_body,
        memory_mb: args.memory_mb,
        timeout_s: args.timeout_s,
        zip_sha256: &zip_sha,
    });
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    write(&args.out.join("function.zip"), &packed.zip)?;
    let mut text = serde_json::to_vec_pretty(&template)?;
    text.push(b'\n');
    write(&args.out.join("template.json"), &text)?;
    let mut text = serde_json::to_vec_pretty(&packed.manifest)?;
    text.push(b'\n');
    write(&args.out.join("verge.json"), &text)?;
    let limit = args.trigger.limits().zip_bytes;
    println!(
        "packed {} for {} on {}: function.zip {} bytes ({:.1} % of the {} byte limit), sha256 {zip_sha}",
        args.component.display(),
        args.trigger.event_type(),
        packed.manifest["engine"]["name"].as_str().unwrap_or("?"),
        packed.zip.len(),
        packed.zip.len() as f64 * 100.0 / limit as f64,
        limit
    );
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}
