//! One model's compute time through verge's `wasi:nn`, on the engine its file
//! asks for (TensorFlow Lite for a `.tflite`, tract for ONNX): the checks and
//! the copies in and out included, on zero inputs of the model's shapes.
//! Prints the median of N calls in milliseconds, after one warm-up call.
//!
//!   model_time MODEL [--reps N]
//!
//! The benchmark (bench/face_detect.py) sets it beside the same library
//! called directly.

use std::time::Instant;

use verge_device::nn::{Graphs, ModelSpec};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = args.next().expect("usage: model_time MODEL [--reps N]");
    let reps: usize = match (args.next().as_deref(), args.next()) {
        (Some("--reps"), Some(n)) => n.parse()?,
        _ => 100,
    };
    let graphs = Graphs::load(&[ModelSpec::tract("m", &model)])?;
    let graph = graphs.get("m").unwrap();
    let inputs = verge_testkit::zero_inputs(graph);
    let mut ctx = graph.context();
    let mut times = Vec::with_capacity(reps);
    for _ in 0..=reps {
        let t = Instant::now();
        ctx.compute_named(inputs.clone())?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.remove(0);
    times.sort_by(f64::total_cmp);
    println!("{:.4}", times[times.len() / 2]);
    Ok(())
}
