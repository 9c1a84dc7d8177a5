//! A runtime with one component prepared, called in-process; the probe
//! component's commands.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use verge_device::nn::{EngineSpec, Graphs, ModelSpec};
use verge_device::runtime::{
    CallError, Deployment, Limits, Outcome, Placement, Prepared, Request, Runtime,
};
use wasmtime::component::Component;

/// A runtime with one model loaded and one component prepared.
pub struct Host {
    pub runtime: Runtime,
    pub prepared: Prepared,
    deadline: Duration,
}

impl Host {
    /// Loads `model` as the graph `graph`, prepares the component at `wasm`;
    /// each call gets `deadline`.
    pub fn new(graph: &str, model: PathBuf, wasm: PathBuf, deadline: Duration) -> Host {
        Self::with_engine(graph, model, wasm, deadline, EngineSpec::default())
    }

    /// [`Host::new`] with the model on the given engine.
    pub fn with_engine(
        graph: &str,
        model: PathBuf,
        wasm: PathBuf,
        deadline: Duration,
        engine: EngineSpec,
    ) -> Host {
        let spec = ModelSpec {
            name: graph.into(),
            path: model,
            engine,
        };
        let graphs = Graphs::load(&[spec]).unwrap_or_else(|e| panic!("{e}"));
        Self::with_graphs(graphs, wasm, deadline)
    }

    /// [`Host::new`] with `graphs` already loaded.
    pub fn with_graphs(graphs: Graphs, wasm: PathBuf, deadline: Duration) -> Host {
        let runtime = Runtime::new(graphs).unwrap();
        let component = Component::from_file(runtime.engine(), wasm).unwrap();
        let prepared = runtime.prepare(&component).unwrap();
        Host {
            runtime,
            prepared,
            deadline,
        }
    }

    /// Calls the component, placed locally, with a body, its content type and
    /// the deployment's settings.
    pub fn call(
        &self,
        content_type: &str,
        body: &[u8],
        settings: &[(&str, &str)],
    ) -> Result<Outcome, CallError> {
        let settings: Vec<(String, String)> = settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let limits = Limits {
            deadline: self.deadline,
            ..Limits::default()
        };
        let deployment = Deployment::new(Placement::Local, limits, &settings);
        let request = Request {
            content_type: content_type.into(),
            body: body.to_vec(),
            attributes: vec![],
            truncated: false,
        };
        self.runtime.call(&self.prepared, &deployment, &request)
    }
}

/// One wasi:nn behaviour-suite case (its JSON) through the probe component's
/// `nn-case` command: `Ok` when the probe's own check passed, else why not.
pub fn probe_nn_case(
    runtime: &Runtime,
    probe: &Prepared,
    deployment: &Deployment,
    case_json: &str,
) -> Result<(), String> {
    let request = Request {
        content_type: "application/json".into(),
        body: case_json.as_bytes().to_vec(),
        attributes: vec![("probe".into(), "nn-case".into())],
        truncated: false,
    };
    match runtime.call(probe, deployment, &request) {
        Ok(Outcome::Respond(r)) => {
            let v: Value = serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
            match v["ok"].as_bool() {
                Some(true) => Ok(()),
                _ => Err(v["why"].to_string()),
            }
        }
        other => Err(format!("{other:?}")),
    }
}

/// The hostile probe's attacks under a 64 MiB bound: the command, the error
/// kind it must end with, and a phrase of the message.
pub const HOSTILE_64_MIB: [(&str, &str, &str); 6] = [
    // 3 GiB of tensors in the host.
    ("nn-hoard:3000:1048576", "quota", "a call may hold 67108864"),
    // 20,000 tiny tensors: the resource bound.
    ("nn-hoard:20000:1", "quota", "holds 4096 host resources"),
    // 10,000 keyvalue buckets: the same bound, seen by the component.
    ("kv-open:10000", "internal", "holds 4096 host resources"),
    // Linear memory without end.
    ("alloc", "memory", "67108864"),
    // 300 MiB of state: over the component's state budget.
    ("kv-fill:300:1048576", "internal", "state quota"),
    // A 20 MB answer: over the outcome bound (a quarter of the memory bound).
    ("big:20000000", "quota", "a call may return 16777216"),
];

/// Zeros for each input of `graph`, in the dimensions it declares (a
/// symbolic one set to 1): what benchmarks and smoke tests feed a model.
pub fn zero_inputs(graph: &verge_nn::Graph) -> Vec<(String, verge_nn::Tensor)> {
    graph
        .signature()
        .inputs
        .iter()
        .map(|p| {
            let dims: Vec<u32> = p
                .dims
                .iter()
                .flatten()
                .map(|d| match d {
                    verge_nn::Dim::Fixed(n) => *n as u32,
                    _ => 1,
                })
                .collect();
            let ty = p.datum.carried().expect("a type wasi:nn carries");
            let count: usize = dims.iter().map(|&d| d as usize).product();
            (
                p.name.clone(),
                verge_nn::Tensor::new(dims, ty, vec![0; count * ty.size()]),
            )
        })
        .collect()
}

/// Each model loaded on its own: the graphs that load, together, and the
/// load error of each that does not (a host that refuses to start with it).
pub fn load_each(
    specs: Vec<ModelSpec>,
) -> (
    verge_device::nn::Graphs,
    Vec<(String, verge_device::nn::NnError)>,
) {
    let mut good = Vec::new();
    let mut refused = Vec::new();
    for spec in specs {
        match Graphs::load(std::slice::from_ref(&spec)) {
            Ok(_) => good.push(spec),
            Err(verge_device::nn::LoadError::Model { error, .. }) => {
                refused.push((spec.name, error))
            }
            Err(e) => panic!("{}: {e}", spec.name),
        }
    }
    (Graphs::load(&good).unwrap(), refused)
}

/// A behaviour-suite table through the device host: `graphs` deployed, the
/// probe component running each case (`nn-case`), a model refused at start
/// answering with its refusal. Panics, listing the failures, unless all pass.
pub fn suite_on_device_host(
    title: &str,
    graphs: Graphs,
    refused: &[(String, verge_device::nn::NnError)],
    cases: &[verge_nn_suite::Case],
) {
    let deadline = Duration::from_secs(10);
    let host = Host::with_graphs(graphs, crate::wasm("probe"), deadline);
    let limits = Limits {
        deadline,
        ..Limits::default()
    };
    let deployment = Deployment::new(Placement::Device, limits, &[]);
    let mut report = verge_nn_suite::Report::new(title);
    for case in cases {
        if let Some(got) = verge_nn_suite::refusal(case, refused) {
            report.record(case, &got);
            continue;
        }
        match probe_nn_case(&host.runtime, &host.prepared, &deployment, &case.json) {
            Ok(()) => report.passed += 1,
            Err(why) => report.failed.push(format!("{}: {why}", case.name)),
        }
    }
    report.finish();
}
