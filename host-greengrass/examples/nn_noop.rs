//! The fixed cost of `wasi:nn`: a no-op `compute` (the behaviour suite's
//! `add` model on [1, 4]) on each engine, natively through the engine API and
//! through the device host from a component (the probe's `nn-repeat:`
//! command, timed inside the component: tensors made, compute, outputs read).
//!
//!   nn_noop MODELS_DIR [--calls N]
//!
//! MODELS_DIR is where components/nn/suite/models.py wrote the suite's models;
//! the probe comes from $VERGE_WASM_DIR, ONNX Runtime from $VERGE_ONNXRUNTIME_LIB.

use std::path::PathBuf;
use std::time::Instant;

use verge_device::nn::{ElementType, EngineSpec, Graphs, ModelSpec, Tensor};
use verge_device::runtime::{Deployment, Limits, Outcome, Placement, Request, Runtime};
use wasmtime::component::Component;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: nn_noop MODELS_DIR [--calls N]"));
    let calls: u32 = match (args.next().as_deref(), args.next()) {
        (Some("--calls"), Some(n)) => n.parse()?,
        _ => 20_000,
    };
    let t = |v: f32| Tensor::new(vec![1, 4], ElementType::F32, v.to_le_bytes().repeat(4));
    let inputs = vec![("a".to_string(), t(1.0)), ("b".to_string(), t(2.0))];
    for (engine, spec) in [
        ("tract", EngineSpec::default()),
        ("onnxruntime", verge_testkit::onnxruntime(1)),
    ] {
        let graphs = Graphs::load(&[ModelSpec {
            name: "add".into(),
            path: dir.join("add.onnx"),
            engine: spec,
        }])?;
        let mut ctx = graphs.get("add").unwrap().context();
        let per_call = |f: &mut dyn FnMut()| {
            for _ in 0..calls / 10 {
                f();
            }
            let started = Instant::now();
            for _ in 0..calls {
                f();
            }
            started.elapsed().as_secs_f64() * 1e6 / f64::from(calls)
        };
        let native = per_call(&mut || {
            ctx.compute_named(inputs.clone()).unwrap();
        });

        let runtime = Runtime::new(graphs)?;
        let probe = runtime.prepare(&Component::from_file(
            runtime.engine(),
            verge_testkit::wasm("probe"),
        )?)?;
        let deployment = Deployment::new(Placement::Local, Limits::default(), &[]);
        let request = Request {
            content_type: String::new(),
            body: Vec::new(),
            attributes: vec![(
                "probe".into(),
                format!("nn-repeat:{calls}:add:a:1,4:f32+b:1,4:f32"),
            )],
            truncated: false,
        };
        let guest = match runtime.call(&probe, &deployment, &request)? {
            Outcome::Respond(r) => {
                serde_json::from_slice::<serde_json::Value>(&r.body)?["ns_per_compute"]
                    .as_f64()
                    .unwrap_or(f64::NAN)
            }
            other => anyhow::bail!("{engine}: {other:?}"),
        };
        println!(
            "{engine}: a no-op compute natively {native:.2} µs; from a component through the device host {:.2} µs",
            guest / 1000.0
        );
    }
    Ok(())
}
