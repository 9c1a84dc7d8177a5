//! `verge`: one application manifest, both edges.
//!
//! * `verge build APP.toml --out dist/`: checks everything, then writes the
//!   device deployment (`dist/device/`) and the CloudFront stack (`dist/edge/`);
//! * `verge check APP.toml --input FILE…`: each input through the device host
//!   and every edge package, side by side.
//!
//! A binary of its own: it is the one tool that needs both hosts (the device's
//! recipe and runtime, the edge's packer), and neither host should carry the other.

mod build;
mod check;
mod edge_run;
mod manifest;
mod new;
mod summary;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use verge_device::nn::{Backend, EngineSpec, Target};
use verge_device::recipe::Arch;

use crate::manifest::App;

#[derive(Parser)]
#[command(
    version,
    about = "One verge application, built for the device and the delivery edge from one manifest"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check the manifest in full, then write dist/device/ (daemon
    /// configuration, Greengrass recipe, artifacts, deployment document) and
    /// dist/edge/ (one package per function, one CloudFormation template).
    Build(BuildArgs),
    /// Run inputs through the device host and through every edge package the
    /// manifest builds; print the outcomes side by side (exit 1 on a difference).
    Check(CheckArgs),
    /// Start a component project in Rust, JavaScript or Python, outside this
    /// repository: wit/, the language's SDK, a hello component, build.sh
    /// (installs the toolchain, builds NAME.wasm) and test.sh (runs it on the
    /// device host).
    New(NewArgs),
}

#[derive(clap::Args)]
struct NewArgs {
    /// The component's name (lower-case letters, digits, '-').
    name: String,
    #[arg(long, value_enum)]
    lang: new::Lang,
    /// The project's folder [default: ./NAME].
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct Common {
    /// The application manifest (verge.app.toml).
    manifest: PathBuf,
    /// The onnxruntime-node package for the edge's onnxruntime engine [default:
    /// $VERGE_ONNXRUNTIME_NODE, else node_modules/onnxruntime-node here].
    #[arg(long)]
    onnxruntime_node: Option<PathBuf>,
}

#[derive(clap::Args)]
struct BuildArgs {
    #[command(flatten)]
    common: Common,
    /// Where to write device/ and edge/ (a new or empty folder).
    #[arg(long)]
    out: PathBuf,
    /// The thing group the deployment document targets:
    /// arn:aws:iot:REGION:ACCOUNT:thinggroup/NAME (without it, no deployment.json).
    #[arg(long, value_parser = build::thing_group_arn)]
    thing_group: Option<String>,
    /// verge-device for a platform: ARCH=PATH [default: beside this program for
    /// this machine's; the cargo target's <triple>/dist or /release for others].
    #[arg(long = "device-binary", value_parser = arch_binary)]
    device_binaries: Vec<(Arch, PathBuf)>,
    /// The ONNX Runtime library for a platform's devices: ARCH=PATH [default
    /// for this machine's: ORT_DYLIB_PATH, then the usual install prefixes].
    /// Models that name no backend run on it there, on tract elsewhere.
    #[arg(long = "device-onnxruntime", value_parser = arch_binary)]
    device_onnxruntime: Vec<(Arch, PathBuf)>,
    /// The TensorFlow Lite C library (libtensorflowlite_c) for a platform's
    /// devices, shipped where a model is a TFLite file: ARCH=PATH [default for
    /// this machine's: $VERGE_TENSORFLOWLITE_LIB, then the usual install prefixes].
    #[arg(long = "device-tensorflowlite", value_parser = arch_binary)]
    device_tensorflowlite: Vec<(Arch, PathBuf)>,
    /// Calls per edge function for its warm duration (0: do not measure).
    #[arg(long, default_value_t = 20)]
    measure: usize,
}

#[derive(clap::Args)]
struct CheckArgs {
    #[command(flatten)]
    common: Common,
    /// Inputs (request bodies): --input A B C, or --input A --input B.
    #[arg(long = "input", required = true, num_args = 1..)]
    inputs: Vec<PathBuf>,
    /// Only this component (repeatable; default: every one).
    #[arg(long = "component")]
    components: Vec<String>,
    /// Largest difference between two numbers that still agree.
    #[arg(long, default_value_t = 1e-4)]
    tolerance: f64,
    /// The device host's engine for the models: tract, compact or onnxruntime.
    #[arg(long, value_enum, default_value_t = Backend::Tract)]
    backend: Backend,
    /// The libonnxruntime for --backend onnxruntime (default: ORT_DYLIB_PATH, then the usual places).
    #[arg(long)]
    onnxruntime_lib: Option<PathBuf>,
}

fn arch_binary(s: &str) -> Result<(Arch, PathBuf), String> {
    let (arch, path) = s
        .split_once('=')
        .ok_or_else(|| format!("expected ARCH=PATH, got '{s}'"))?;
    Ok((arch.parse()?, PathBuf::from(path)))
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Build(args) => run_build(args),
        Command::Check(args) => run_check(args),
        Command::New(args) => run_new(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("verge: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run_new(args: NewArgs) -> Result<ExitCode> {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    // test.sh runs the verge-device beside this program unless VERGE_DEVICE says otherwise.
    let device = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.join("verge-device")))
        .filter(|d| d.is_file());
    new::write(&args.name, args.lang, &dir, device.as_deref())?;
    println!(
        "wrote {}/: cd there, then ./build.sh (or ./test.sh)",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The manifest and its plan, or every problem printed.
fn planned(common: &Common, opts: &build::Options) -> Result<Option<(App, build::Plan)>> {
    let app = App::load(&common.manifest)?;
    match build::plan(&app, opts) {
        Ok(plan) => Ok(Some((app, plan))),
        Err(problems) => {
            eprintln!(
                "verge: {} has {} problem(s); nothing was written:",
                common.manifest.display(),
                problems.len()
            );
            for p in problems {
                eprintln!("  - {p}");
            }
            Ok(None)
        }
    }
}

fn run_build(args: BuildArgs) -> Result<ExitCode> {
    let opts = build::Options {
        thing_group: args.thing_group.clone(),
        device_binaries: args.device_binaries.clone(),
        device_onnxruntime: args.device_onnxruntime.clone(),
        device_tensorflowlite: args.device_tensorflowlite.clone(),
        onnxruntime_node: args.common.onnxruntime_node.clone(),
        check_only: false,
    };
    let Some((app, plan)) = planned(&args.common, &opts)? else {
        return Ok(ExitCode::from(1));
    };
    let written = build::write(&app, &plan, &opts, &args.out)?;
    print!("{}", summary::table(&app, &plan, &written, args.measure));
    summary::next_steps(&plan, &written, &args.out);
    Ok(ExitCode::SUCCESS)
}

fn run_check(args: CheckArgs) -> Result<ExitCode> {
    let opts = build::Options {
        thing_group: None,
        device_binaries: Vec::new(),
        device_onnxruntime: Vec::new(),
        device_tensorflowlite: Vec::new(),
        onnxruntime_node: args.common.onnxruntime_node.clone(),
        check_only: true,
    };
    let Some((app, plan)) = planned(&args.common, &opts)? else {
        return Ok(ExitCode::from(1));
    };
    let engine = EngineSpec {
        backend: args.backend,
        threads: 0,
        target: Target::Cpu,
        providers: Vec::new(),
        library: args.onnxruntime_lib,
        ..EngineSpec::default()
    };
    engine.validate().map_err(|e| anyhow::anyhow!(e))?;
    let same = check::check(
        &app,
        &plan,
        &check::Options {
            inputs: args.inputs,
            components: args.components,
            tolerance: args.tolerance,
            engine,
        },
    )?;
    Ok(if same {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
