//! `verge-edge`: pack a verge component for a CloudFront trigger.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use verge_edge::cloudformation::{self, Function};
use verge_edge::package::{self, OnError, PackError, PackOptions};
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
    /// A model the component loads by name: NAME=PATH (repeatable).
    #[arg(long = "model", value_parser = pair)]
    models: Vec<(String, String)>,
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
    /// The wasi:nn provider component [default: $VERGE_NN_PROVIDER, else
    /// nn_provider.wasm beside this program or in the cargo target folder it was built in].
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

fn default_provider() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VERGE_NN_PROVIDER") {
        return Some(p.into());
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [
        dir.join("nn_provider.wasm"),
        dir.join("../wasm32-wasip2/component/nn_provider.wasm"),
    ]
    .into_iter()
    .find(|p| p.exists())
}

fn pack(args: PackArgs) -> Result<()> {
    let provider_path = args
        .provider
        .or_else(default_provider)
        .context("no wasi:nn provider: pass --provider nn_provider.wasm")?;
    let provider = std::fs::read(&provider_path)
        .with_context(|| format!("reading the provider {}", provider_path.display()))?;
    let opts = PackOptions {
        component: args.component.clone(),
        provider,
        models: args
            .models
            .into_iter()
            .map(|(n, p)| (n, PathBuf::from(p)))
            .collect(),
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
        "packed {} for {}: function.zip {} bytes ({:.1} % of the {} byte limit), sha256 {zip_sha}",
        args.component.display(),
        args.trigger.event_type(),
        packed.zip.len(),
        packed.zip.len() as f64 * 100.0 / limit as f64,
        limit
    );
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}
