//! The `wasi:nn` behaviour suite (components/nn/suite) on every engine and
//! host this crate reaches: tract, ONNX Runtime and compact natively, the device host
//! (the probe component through `Runtime`) on each of them, and the tract
//! and compact provider components under wasmtime, called through their
//! exports (the compact one also against ONNX's node tests and the
//! scikit-learn models). The packed
//! Lambda@Edge shim runs the same table in shims/lambda-edge/test.
//!
//! The models are written by components/nn/suite/models.py into
//! `$VERGE_NN_SUITE_MODELS` (`./dev test` does it).

use std::path::PathBuf;

use verge_device::nn::{EngineSpec, Graphs, ModelSpec};
use verge_nn::{NnError, Tensor};
use verge_nn_suite::{Case, Coverage, Load, Outcome, Report};
use wasmtime::component::{Component, Linker, ResourceAny};
use wasmtime::{Engine, Store};

fn models_dir() -> PathBuf {
    std::env::var_os("VERGE_NN_SUITE_MODELS")
        .map(PathBuf::from)
        .expect("VERGE_NN_SUITE_MODELS must name the folder components/nn/suite/models.py wrote")
}

fn spec(name: &str, engine: &EngineSpec) -> ModelSpec {
    ModelSpec {
        name: name.into(),
        path: models_dir().join(format!("{name}.onnx")),
        engine: engine.clone(),
    }
}

/// Each suite model on `engine`: the graphs that load, and the load error of each that does not.
fn load(engine: &EngineSpec) -> (Graphs, Vec<(String, NnError)>) {
    verge_testkit::load_each(
        verge_nn_suite::models()
            .iter()
            .map(|name| spec(name, engine))
            .collect(),
    )
}

#[test]
fn every_engine_natively() {
    for (engine, spec) in verge_testkit::engines() {
        let (graphs, refused) = load(&spec);
        let mut report = Report::new(&format!("{engine}, natively"));
        for case in verge_nn_suite::cases() {
            // graph.load with bytes is a host's glue; natively there is none.
            if case.load == Load::Bytes {
                continue;
            }
            let got = verge_nn_suite::run_natively(&case, graphs.by_name(&case.model), &refused);
            report.record(&case, &got);
        }
        report.finish();
    }
}

#[test]
fn the_device_host_on_every_engine() {
    for (engine, spec) in verge_testkit::engines() {
        let (graphs, refused) = load(&spec);
        verge_testkit::suite_on_device_host(
            &format!("the device host on {engine} (probe component)"),
            graphs,
            &refused,
            &verge_nn_suite::cases(),
        );
    }
}

mod provider {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "verge:inference/nn-provider",
    });
}

use provider::exports::wasi::nn::tensor::TensorType;
verge_nn::tensor_type_conversions!(TensorType);

/// What the provider's store holds: the WASI its standard library imports, and the models.
struct Models {
    wasi: wasmtime_wasi::WasiCtx,
    table: wasmtime::component::ResourceTable,
    dir: PathBuf,
}

impl wasmtime_wasi::WasiView for Models {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        wasmtime_wasi::WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl provider::verge::inference::models::Host for Models {
    fn read(&mut self, name: String) -> Option<Vec<u8>> {
        std::fs::read(self.dir.join(format!("{name}.onnx"))).ok()
    }
}

struct HasModels;
impl wasmtime::component::HasData for HasModels {
    type Data<'a> = &'a mut Models;
}

/// A provider component (what the edge composes into a component) under
/// wasmtime, its models read from `dir`: each case through its `wasi:nn`
/// exports, in one instance, so models stay loaded across cases as in a
/// warm Lambda container. `record` gets each case and what came back.
fn through_provider(
    file: &str,
    dir: PathBuf,
    cases: &[Case],
    mut record: impl FnMut(&Case, &Outcome),
) -> wasmtime::Result<()> {
    let engine = Engine::default();
    let component = Component::from_file(&engine, verge_testkit::wasm(file))?;
    let mut linker = Linker::<Models>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    provider::verge::inference::models::add_to_linker::<Models, HasModels>(&mut linker, |m| m)?;
    let models = Models {
        wasi: wasmtime_wasi::WasiCtx::builder().build(),
        table: wasmtime::component::ResourceTable::new(),
        dir,
    };
    let mut store = Store::new(&engine, models);
    let nn = provider::NnProvider::instantiate(&mut store, &component, &linker)?;
    let (graph, tensor, inference, errors) = (
        nn.wasi_nn_graph(),
        nn.wasi_nn_tensor().tensor(),
        nn.wasi_nn_inference().graph_execution_context(),
        nn.wasi_nn_errors().error(),
    );
    for case in cases {
        let error = |store: &mut Store<Models>, e: ResourceAny| -> wasmtime::Result<Outcome> {
            let code = errors.call_code(&mut *store, e)?;
            let data = errors.call_data(&mut *store, e)?;
            e.resource_drop(&mut *store)?;
            Ok(Outcome::Error {
                code: verge_nn_suite::code_name(&format!("{code:?}")),
                data,
            })
        };
        let loaded = match case.load {
            Load::ByName => graph.call_load_by_name(&mut store, &case.model)?,
            Load::Bytes => graph.call_load(
                &mut store,
                &[b"onnx".to_vec()],
                provider::exports::wasi::nn::graph::GraphEncoding::Onnx,
                provider::exports::wasi::nn::graph::ExecutionTarget::Cpu,
            )?,
        };
        let g = match loaded {
            Ok(g) => g,
            Err(e) => {
                let got = error(&mut store, e)?;
                record(case, &got);
                continue;
            }
        };
        let ctx = match graph.graph().call_init_execution_context(&mut store, g)? {
            Ok(c) => c,
            Err(e) => {
                let got = error(&mut store, e)?;
                record(case, &got);
                continue;
            }
        };
        let mut inputs = Vec::new();
        for (name, t) in &case.inputs {
            let r = tensor.call_constructor(&mut store, &t.dims, tensor_type(t.ty), &t.data)?;
            inputs.push((name.clone(), r));
        }
        let got = match inference.call_compute(&mut store, ctx, &inputs)? {
            Ok(outputs) => {
                let mut v = Vec::new();
                for (name, r) in outputs {
                    let dims = tensor.call_dimensions(&mut store, r)?;
                    let ty = element_type(tensor.call_ty(&mut store, r)?);
                    let data = tensor.call_data(&mut store, r)?;
                    r.resource_drop(&mut store)?;
                    v.push((name, Tensor::new(dims, ty, data)));
                }
                Outcome::Outputs(v)
            }
            Err(e) => error(&mut store, e)?,
        };
        ctx.resource_drop(&mut store)?;
        g.resource_drop(&mut store)?;
        record(case, &got);
    }
    Ok(())
}

#[test]
fn the_provider_components_under_wasmtime() -> wasmtime::Result<()> {
    for (file, engine) in [("nn_provider", "tract"), ("nn_provider_compact", "compact")] {
        let mut report = Report::new(&format!("the {engine} provider component under wasmtime"));
        through_provider(file, models_dir(), &verge_nn_suite::cases(), |c, got| {
            report.record(c, got)
        })?;
        report.finish();
    }
    Ok(())
}

/// A folder of cases.json and models/ that ./dev test writes.
fn cases_dir(var: &str) -> (PathBuf, Vec<Case>) {
    let dir = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        panic!("{var} must name the folder of cases.json and models/ (./dev test writes it)")
    });
    let text = std::fs::read_to_string(dir.join("cases.json")).expect("cases.json");
    (
        dir.join("models"),
        verge_nn_suite::parse(&text).expect("cases.json parses"),
    )
}

/// The compact engine in Wasm against the independent references its
/// native tests use (components/nn/compact/tests/references.rs): ONNX's
/// node tests (every model it loads must pass) and the scikit-learn models.
#[test]
fn the_compact_provider_against_references() -> wasmtime::Result<()> {
    let (dir, cases) = cases_dir("VERGE_ONNX_NODE_CASES");
    let mut coverage = Coverage::new("onnx node tests on the compact provider component (Wasm)");
    through_provider("nn_provider_compact", dir, &cases, |c, got| {
        coverage.record(c, got)
    })?;
    assert!(coverage.passed >= 100, "{} passed", coverage.passed);
    coverage.finish();
    let (dir, cases) = cases_dir("VERGE_SKLEARN_CASES");
    let mut report = Report::new("scikit-learn models on the compact provider component (Wasm)");
    through_provider("nn_provider_compact", dir, &cases, |c, got| {
        report.record(c, got)
    })?;
    assert!(report.passed >= 20, "{} passed", report.passed);
    report.finish();
    Ok(())
}
