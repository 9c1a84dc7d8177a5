//! `probe`: the request body names what to do, so the hosts' tests can
//! check every edge with one component.
//!
//! * `echo`: respond with the request as JSON (attributes, content type, length);
//! * `host`: respond with what the host says of itself (placement, limits);
//! * `trap`: panic (a trap);
//! * `loop`: never return;
//! * `alloc`: allocate until memory runs out;
//! * `invalid`: answer `invalid-input`;
//! * `defer`: defer with a reason;
//! * `annotate`: annotate with two headers;
//! * `nn:GRAPH:INPUT:DIMS:TYPE[+INPUT:DIMS:TYPE…]`: run GRAPH with a zero
//!   tensor as each INPUT (dims comma-separated, type f32|i32|i64|u8) and
//!   respond with the output shapes;
//! * `nn-case`: run the `wasi:nn` behaviour-suite case in the body (JSON, as
//!   in `components/nn/suite/cases.json`) and check it with the suite's own
//!   checker: respond `{"ok":true}` or `{"ok":false,"why":"…"}`;
//! * `nn-repeat:N:GRAPH:INPUTS`: the same, N times on one context, and
//!   respond with the nanoseconds per compute (tensors made and outputs read);
//! * `nn-hoard:N:BYTES`: create N `wasi:nn` tensors of BYTES bytes each and
//!   keep them all (host memory outside linear memory), then respond with N;
//! * `kv-fill:N:BYTES`: write N values of BYTES bytes into the keyvalue store
//!   (keys `fill-0`…), and respond with N; the first refused write is an
//!   `internal` error naming it;
//! * `kv-open:N`: open N keyvalue buckets and keep them all (host resources),
//!   then respond with N;
//! * `count`: increment `hits` in the keyvalue store and respond with it;
//! * `kv-set:KEY=VALUE`, `kv-get:KEY`: write a value, or respond with
//!   `{"key":…,"value":…}` (`null` when absent);
//! * `config:KEY`: respond with the deployment setting KEY;
//! * `big:N`: respond with N bytes of text (to test response quotas);
//! * `prep:N`: run file-type's Magika preprocessing N times on the body and
//!   respond with the nanoseconds per run (the command then goes in the
//!   `probe` attribute, since the body is the payload).

#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({
    path: "../../wit",
    world: "verge:inference/component",
    generate_all,
});

use exports::verge::inference::handler::Guest;
use verge::inference::host;
use verge::inference::types::{Error, Outcome, Request, Response};
use wasi::nn::tensor::TensorType;
use wasi::nn::{graph, tensor};

struct Probe;

/// A string as JSON (Rust's `Debug` of a `str` is JSON for printable ASCII,
/// which is what the tests store).
fn json_string(s: &str) -> String {
    format!("{s:?}")
}

fn respond(body: String) -> Outcome {
    Outcome::Respond(Response {
        status: 200,
        content_type: "application/json".into(),
        body: body.into_bytes(),
        headers: vec![("x-probe".into(), "1".into())],
    })
}

/// A zero tensor from `INPUT:DIMS:TYPE`.
fn zeros(spec: &str) -> (String, tensor::Tensor) {
    let mut parts = spec.splitn(3, ':');
    let (input_name, dims, ty) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("f32"),
    );
    let dims: Vec<u32> = dims
        .split(',')
        .filter_map(|d| d.trim().parse().ok())
        .collect();
    let (ty, size) = match ty {
        "i32" => (tensor::TensorType::I32, 4),
        "i64" => (tensor::TensorType::I64, 8),
        "u8" => (tensor::TensorType::U8, 1),
        _ => (tensor::TensorType::Fp32, 4),
    };
    let count: u32 = dims.iter().product();
    let t = tensor::Tensor::new(&dims, ty, &vec![0u8; count as usize * size]);
    (input_name.to_string(), t)
}

/// One behaviour-suite case through this host's `wasi:nn`.
fn nn_case(body: &[u8]) -> Result<Outcome, Error> {
    use verge_nn_suite::{Load, Outcome as Got};
    let text = std::str::from_utf8(body).map_err(|e| Error::InvalidInput(e.to_string()))?;
    let cases = verge_nn_suite::parse(text).map_err(Error::InvalidInput)?;
    let [case] = cases.as_slice() else {
        return Err(Error::InvalidInput("nn-case takes one case".into()));
    };
    let err = |e: wasi::nn::errors::Error| Got::Error {
        code: verge_nn_suite::code_name(&format!("{:?}", e.code())),
        data: e.data(),
    };
    let run = || -> Result<Got, Got> {
        let g = match case.load {
            Load::ByName => graph::load_by_name(&case.model),
            Load::Bytes => graph::load(
                &[case.model.as_bytes().to_vec()],
                graph::GraphEncoding::Onnx,
                graph::ExecutionTarget::Cpu,
            ),
        }
        .map_err(err)?;
        let ctx = g.init_execution_context().map_err(err)?;
        let inputs = case
            .inputs
            .iter()
            .map(|(n, t)| {
                (
                    n.clone(),
                    tensor::Tensor::new(&t.dims, tensor_type(t.ty), &t.data),
                )
            })
            .collect();
        let out = ctx.compute(inputs).map_err(err)?;
        Ok(Got::Outputs(
            out.into_iter()
                .map(|(n, t)| {
                    let ty = element_type(t.ty());
                    (n, verge_nn::Tensor::new(t.dimensions(), ty, t.data()))
                })
                .collect(),
        ))
    };
    let got = run().unwrap_or_else(|e| e);
    Ok(respond(match verge_nn_suite::check(case, &got) {
        Ok(()) => "{\"ok\":true}".to_string(),
        Err(why) => format!("{{\"ok\":false,\"why\":{why:?}}}"),
    }))
}

verge_nn::tensor_type_conversions!(TensorType);

fn nn(spec: &str) -> Result<Outcome, Error> {
    let (name, inputs) = spec.split_once(':').unwrap_or((spec, ""));
    let err = |e: wasi::nn::errors::Error| Error::Model(format!("{:?}: {}", e.code(), e.data()));
    let g = graph::load_by_name(name).map_err(err)?;
    let ctx = g.init_execution_context().map_err(err)?;
    let out = ctx
        .compute(inputs.split('+').map(zeros).collect())
        .map_err(err)?;
    let shapes: Vec<String> = out
        .iter()
        .map(|(n, t)| format!("\"{n}\":{:?}", t.dimensions()))
        .collect();
    Ok(respond(format!("{{{}}}", shapes.join(","))))
}

/// `nn-repeat:N:GRAPH:INPUTS`: N computes on one context, each with fresh
/// tensors and every output's data read back, as a component does per request.
fn nn_repeat(spec: &str) -> Result<Outcome, Error> {
    let (n, spec) = spec.split_once(':').unwrap_or(("", spec));
    let n: u32 = n
        .parse()
        .map_err(|_| Error::InvalidInput(format!("nn-repeat:N needs a number, got {n:?}")))?;
    let (name, inputs) = spec.split_once(':').unwrap_or((spec, ""));
    let err = |e: wasi::nn::errors::Error| Error::Model(format!("{:?}: {}", e.code(), e.data()));
    let ctx = graph::load_by_name(name)
        .and_then(|g| g.init_execution_context())
        .map_err(err)?;
    let started = std::time::Instant::now();
    for _ in 0..n {
        let out = ctx
            .compute(inputs.split('+').map(zeros).collect())
            .map_err(err)?;
        for (_, t) in out {
            std::hint::black_box(t.data());
        }
    }
    let ns = started.elapsed().as_nanos() as f64 / f64::from(n.max(1));
    Ok(respond(format!("{{\"ns_per_compute\":{ns}}}")))
}

impl Guest for Probe {
    fn handle(req: Request) -> Result<Outcome, Error> {
        let body = match req.attributes.iter().find(|(k, _)| k == "probe") {
            Some((_, command)) => command.clone(),
            None => String::from_utf8_lossy(&req.body).trim().to_string(),
        };
        if body == "nn-case" {
            return nn_case(&req.body);
        }
        match body.as_str() {
            "echo" => Ok(respond(format!(
                "{{\"content_type\":{:?},\"length\":{},\"truncated\":{},\"attributes\":{:?}}}",
                req.content_type,
                req.body.len(),
                req.truncated,
                req.attributes
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
            ))),
            "host" => {
                let l = host::get_limits();
                Ok(respond(format!(
                    "{{\"placement\":\"{:?}\",\"max_body_bytes\":{},\"deadline_ms\":{},\"memory_bytes\":{},\"remaining_ms\":{}}}",
                    host::get_placement(),
                    l.max_body_bytes,
                    l.deadline_ms,
                    l.memory_bytes,
                    host::remaining_ms()
                )))
            }
            "trap" => panic!("the probe was asked to trap"),
            "loop" => {
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "invalid" => Err(Error::InvalidInput("the probe was asked to refuse".into())),
            "defer" => Ok(Outcome::Defer("the probe defers".into())),
            "annotate" => Ok(Outcome::Annotate(vec![
                ("x-probe".into(), "annotated".into()),
                ("x-probe-length".into(), req.body.len().to_string()),
            ])),
            "count" => {
                let bucket = wasi::keyvalue::store::open("")
                    .map_err(|e| Error::Internal(format!("open: {e:?}")))?;
                let n = wasi::keyvalue::atomics::increment(&bucket, "hits", 1)
                    .map_err(|e| Error::Internal(format!("increment: {e:?}")))?;
                Ok(respond(format!("{{\"hits\":{n}}}")))
            }
            other => {
                if let Some(spec) = other.strip_prefix("nn:") {
                    nn(spec)
                } else if let Some(spec) = other.strip_prefix("nn-repeat:") {
                    nn_repeat(spec)
                } else if let Some(spec) = other.strip_prefix("kv-fill:") {
                    let (n, bytes) = spec.split_once(':').unwrap_or((spec, "1048576"));
                    let (Ok(n), Ok(bytes)) = (n.parse::<usize>(), bytes.parse::<usize>()) else {
                        return Err(Error::InvalidInput(format!(
                            "kv-fill:N:BYTES, got {spec:?}"
                        )));
                    };
                    let bucket = wasi::keyvalue::store::open("")
                        .map_err(|e| Error::Internal(format!("open: {e:?}")))?;
                    let value = vec![7u8; bytes];
                    for i in 0..n {
                        bucket
                            .set(&format!("fill-{i}"), &value)
                            .map_err(|e| Error::Internal(format!("set fill-{i}: {e:?}")))?;
                    }
                    Ok(respond(format!("{{\"written\":{n}}}")))
                } else if let Some(spec) = other.strip_prefix("kv-set:") {
                    let (key, value) = spec.split_once('=').ok_or_else(|| {
                        Error::InvalidInput(format!("kv-set:KEY=VALUE, got {spec:?}"))
                    })?;
                    let bucket = wasi::keyvalue::store::open("")
                        .map_err(|e| Error::Internal(format!("open: {e:?}")))?;
                    bucket
                        .set(key, value.as_bytes())
                        .map_err(|e| Error::Internal(format!("set {key}: {e:?}")))?;
                    Ok(respond(format!("{{\"set\":{}}}", json_string(key))))
                } else if let Some(key) = other.strip_prefix("kv-get:") {
                    let bucket = wasi::keyvalue::store::open("")
                        .map_err(|e| Error::Internal(format!("open: {e:?}")))?;
                    let value = bucket
                        .get(key)
                        .map_err(|e| Error::Internal(format!("get {key}: {e:?}")))?;
                    let value =
                        value.map_or("null".into(), |v| json_string(&String::from_utf8_lossy(&v)));
                    Ok(respond(format!(
                        "{{\"key\":{},\"value\":{value}}}",
                        json_string(key)
                    )))
                } else if let Some(n) = other.strip_prefix("kv-open:") {
                    let n: usize = n.parse().map_err(|_| {
                        Error::InvalidInput(format!("kv-open:N needs a number, got {n:?}"))
                    })?;
                    let buckets = (0..n)
                        .map(|i| {
                            wasi::keyvalue::store::open("")
                                .map_err(|e| Error::Internal(format!("open {i}: {e:?}")))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(respond(format!("{{\"buckets\":{}}}", buckets.len())))
                } else if let Some(spec) = other.strip_prefix("nn-hoard:") {
                    let (n, bytes) = spec.split_once(':').unwrap_or((spec, "1048576"));
                    let (Ok(n), Ok(bytes)) = (n.parse::<usize>(), bytes.parse::<usize>()) else {
                        return Err(Error::InvalidInput(format!(
                            "nn-hoard:N:BYTES, got {spec:?}"
                        )));
                    };
                    let data = vec![0u8; bytes];
                    let hoard: Vec<tensor::Tensor> = (0..n)
                        .map(|_| {
                            tensor::Tensor::new(&[bytes as u32], tensor::TensorType::U8, &data)
                        })
                        .collect();
                    Ok(respond(format!("{{\"tensors\":{}}}", hoard.len())))
                } else if let Some(n) = other.strip_prefix("prep:") {
                    let n: u32 = n.parse().map_err(|_| {
                        Error::InvalidInput(format!("prep:N needs a number, got {n:?}"))
                    })?;
                    let started = std::time::Instant::now();
                    for _ in 0..n {
                        std::hint::black_box(magika::prepare(std::hint::black_box(&req.body)));
                    }
                    let ns = started.elapsed().as_nanos() as f64 / f64::from(n.max(1));
                    Ok(respond(format!("{{\"ns_per_call\":{ns}}}")))
                } else if let Some(n) = other.strip_prefix("big:") {
                    let n: usize = n.parse().map_err(|_| {
                        Error::InvalidInput(format!("big:N needs a number, got {n:?}"))
                    })?;
                    Ok(Outcome::Respond(Response {
                        status: 200,
                        content_type: "text/plain".into(),
                        body: vec![b'x'; n],
                        headers: vec![],
                    }))
                } else if let Some(key) = other.strip_prefix("config:") {
                    let v = wasi::config::store::get(key)
                        .map_err(|e| Error::Internal(format!("config: {e:?}")))?;
                    let v = v.map_or("null".to_string(), |v| format!("{v:?}"));
                    Ok(respond(format!("{{\"value\":{v}}}")))
                } else {
                    Err(Error::InvalidInput(format!(
                        "unknown probe command {other:?}"
                    )))
                }
            }
        }
    }
}

export!(Probe);
