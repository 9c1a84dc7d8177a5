//! The device host against the probe component: outcomes, every way a call
//! can fail, and the host still serving after each.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use verge_device::nn::{Graphs, LoadError, ModelSpec};
use verge_device::runtime::{
    CallError, Deployment, GuestError, Limits, Outcome, Placement, Prepared, Request, Runtime,
};
use wasmtime::component::Component;

struct Fixture {
    runtime: Runtime,
    probe: Prepared,
}

/// One runtime for all tests: loading Magika and compiling the probe once.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let graphs = Graphs::load(&[ModelSpec::tract("magika", verge_testkit::magika())]).unwrap();
        let runtime = Runtime::new(graphs).unwrap();
        let component =
            Component::from_file(runtime.engine(), verge_testkit::wasm("probe")).unwrap();
        let probe = runtime.prepare(&component).unwrap();
        Fixture { runtime, probe }
    })
}

fn deployment(deadline_ms: u64, memory_mb: usize) -> Deployment {
    Deployment::new(
        Placement::Device,
        Limits::new(Duration::from_millis(deadline_ms), memory_mb << 20, 1 << 20),
        &[("greeting".into(), "hello".into())],
    )
}

fn call(body: &str) -> Result<Outcome, CallError> {
    call_with(&deployment(5_000, 64), body)
}

fn call_with(d: &Deployment, body: &str) -> Result<Outcome, CallError> {
    let f = fixture();
    let request = Request {
        content_type: "text/plain".into(),
        body: body.as_bytes().to_vec(),
        attributes: vec![("x-user".into(), "ada".into())],
        truncated: false,
    };
    f.runtime.call(&f.probe, d, &request)
}

fn json(o: Outcome) -> Value {
    match o {
        Outcome::Respond(r) => serde_json::from_slice(&r.body).unwrap(),
        other => panic!("expected a response, got {other:?}"),
    }
}

/// After any failure the same runtime still answers.
fn still_serving() {
    let v = json(call("echo").unwrap());
    assert_eq!(v["length"], 4);
}

#[test]
fn echo_sees_the_request() {
    let v = json(call("echo").unwrap());
    assert_eq!(v["content_type"], "text/plain");
    assert_eq!(v["attributes"][0], "x-user=ada");
    assert_eq!(v["truncated"], false);
}

#[test]
fn host_interface_reports_placement_and_limits() {
    let v = json(call("host").unwrap());
    assert_eq!(v["placement"], "Placement::Device");
    assert_eq!(v["deadline_ms"], 5000);
    assert_eq!(v["memory_bytes"], 64 << 20);
    assert_eq!(v["max_body_bytes"], 1 << 20);
    assert!(v["remaining_ms"].as_u64().unwrap() <= 5000);
}

#[test]
fn other_outcomes_and_component_errors() {
    assert!(matches!(call("defer").unwrap(), Outcome::Defer(r) if r.contains("defers")));
    match call("annotate").unwrap() {
        Outcome::Annotate(h) => assert_eq!(h[0], ("x-probe".into(), "annotated".into())),
        o => panic!("{o:?}"),
    }
    let e = call("invalid").unwrap_err();
    assert!(matches!(
        &e,
        CallError::Component(GuestError::InvalidInput(_))
    ));
    assert!(e.is_caller_error());
    assert_eq!(e.kind(), "invalid-input");
}

#[test]
fn a_trap_is_an_error_not_a_crash() {
    let e = call("trap").unwrap_err();
    assert!(matches!(e, CallError::Trap(_)), "{e:?}");
    assert!(!e.is_caller_error());
    still_serving();
}

#[test]
fn an_endless_component_is_stopped_at_its_deadline() {
    let started = Instant::now();
    let e = call_with(&deployment(200, 64), "loop").unwrap_err();
    assert!(
        matches!(e, CallError::Deadline(d) if d == Duration::from_millis(200)),
        "{e:?}"
    );
    // Bounded, not a timing assertion: it did stop.
    assert!(started.elapsed() < Duration::from_secs(60));
    still_serving();
}

#[test]
fn memory_is_bounded_per_instance() {
    let e = call_with(&deployment(20_000, 32), "alloc").unwrap_err();
    assert!(matches!(e, CallError::Memory(b) if b == 32 << 20), "{e:?}");
    still_serving();
}

#[test]
fn oversize_bodies_are_refused_before_the_component_runs() {
    let big = "x".repeat((1 << 20) + 1);
    let e = call(&big).unwrap_err();
    assert!(
        matches!(&e, CallError::Refused(m) if m.contains("1048577")),
        "{e:?}"
    );
    assert!(e.is_caller_error());
}

#[test]
fn deployment_settings_reach_the_component() {
    assert_eq!(json(call("config:greeting").unwrap())["value"], "hello");
    assert_eq!(json(call("config:absent").unwrap())["value"], Value::Null);
}

#[test]
fn state_lives_for_one_instance_in_one_shot_runs() {
    assert_eq!(json(call("count").unwrap())["hits"], 1);
    assert_eq!(json(call("count").unwrap())["hits"], 1);
}

#[test]
fn wasi_nn_runs_a_named_graph() {
    let v = json(call("nn:magika:bytes:1,2048:i32").unwrap());
    assert_eq!(v["target_label"], serde_json::json!([1, 214]));
}

fn model_error(body: &str) -> String {
    match call(body).unwrap_err() {
        CallError::Component(GuestError::Model(m)) => m,
        e => panic!("expected a model error, got {e:?}"),
    }
}

#[test]
fn wasi_nn_errors_say_what_was_expected() {
    let m = model_error("nn:nosuch:bytes:1,2048:i32");
    assert!(m.contains("NotFound") && m.contains("nosuch"), "{m}");
    let m = model_error("nn:magika:input:1,2048:i32");
    assert!(
        m.contains("no input named 'input'") && m.contains("'bytes' i32["),
        "{m}"
    );
    // The component sees wasi:nn's real codes, not wasmtime-wasi-nn's runtime-error.
    let m = model_error("nn:magika:bytes:1,100:i32");
    assert!(
        m.starts_with("ErrorCode::InvalidArgument: input 'bytes' i32[")
            && m.ends_with("cannot take i32[1, 100]"),
        "{m}"
    );
    let m = model_error("nn:magika:bytes:1,2048:f32");
    assert!(
        m.contains("InvalidArgument") && m.ends_with("cannot take fp32[1, 2048]"),
        "{m}"
    );
    still_serving();
}

#[test]
fn calls_run_in_parallel_on_shared_graphs() {
    let handles: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                json(call("nn:magika:bytes:1,2048:i32").unwrap())["target_label"].clone()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), serde_json::json!([1, 214]));
    }
}

#[test]
fn corrupt_and_missing_models_are_clear_load_errors() {
    let dir = std::env::temp_dir().join(format!("verge-corrupt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let corrupt = dir.join("corrupt.onnx");
    std::fs::write(&corrupt, b"\x08\x07garbage that is not onnx").unwrap();
    let e = Graphs::load(&[ModelSpec::tract("bad", corrupt.clone())])
        .err()
        .unwrap();
    assert!(matches!(e, LoadError::Model { .. }), "{e:?}");
    assert!(e.to_string().contains("model 'bad'"), "{e}");
    assert!(e.to_string().contains("invalid-encoding"), "{e}");
    // A truncated copy of a real model.
    let real = std::fs::read(verge_testkit::magika()).unwrap();
    std::fs::write(&corrupt, &real[..real.len() / 3]).unwrap();
    assert!(Graphs::load(&[ModelSpec::tract("bad", corrupt)]).is_err());
    let e = Graphs::load(&[ModelSpec::tract("gone", dir.join("gone.onnx"))])
        .err()
        .unwrap();
    assert!(matches!(e, LoadError::Read { .. }), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn components_with_unknown_imports_are_refused_at_prepare() {
    let f = fixture();
    // A component importing an interface no verge host provides.
    let wat = r#"(component
        (import "example:nope/thing" (instance (export "f" (func))))
    )"#;
    let component = Component::new(f.runtime.engine(), wat::parse_str(wat).unwrap()).unwrap();
    let e = f.runtime.prepare(&component).err().unwrap();
    assert!(
        matches!(&e, CallError::Instantiate(m) if m.contains("example:nope/thing")),
        "{e}"
    );
}

#[test]
fn runtime_is_shareable() {
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    assert_send_sync(&fixture().runtime);
}

/// Tensors live in the host, outside the store's memory limit: what one call
/// may hold there is bounded by the same figure, and going over ends that call
/// (not the host).
#[test]
fn host_side_tensors_count_against_the_call() {
    // 3,000 tensors of 1 MiB under a 64 MiB bound: refused at the 65th.
    let d = deployment(10_000, 64);
    match call_with(&d, "nn-hoard:3000:1048576") {
        Err(CallError::Quota(m)) => {
            assert!(m.contains("a call may hold 67108864"), "{m}");
        }
        other => panic!("expected a quota error, got {other:?}"),
    }
    // Within the bound the same command works, and so does the next call.
    assert_eq!(
        json(call_with(&d, "nn-hoard:60:1048576").unwrap())["tensors"],
        60
    );
    // Many small handles: bounded by count.
    match call_with(&d, "nn-hoard:5000:1") {
        Err(CallError::Quota(m)) => assert!(m.contains("holds 4096 host resources"), "{m}"),
        other => panic!("expected a quota error, got {other:?}"),
    }
    // Keyvalue buckets are host resources too: the component sees the refusal.
    match call_with(&d, "kv-open:5000") {
        Err(CallError::Component(GuestError::Internal(m))) => {
            assert!(m.contains("holds 4096 host resources"), "{m}")
        }
        other => panic!("expected the component's error, got {other:?}"),
    }
    still_serving();
}

/// A route's own host-side bounds: tensor bytes and resources below the
/// defaults derived from its memory bound.
#[test]
fn host_side_bounds_are_set_per_deployment() {
    let mut d = deployment(10_000, 64);
    d.limits.tensor_bytes = 4 << 20;
    d.limits.max_resources = 100;
    match call_with(&d, "nn-hoard:5:1048576") {
        Err(CallError::Quota(m)) => assert!(m.contains("a call may hold 4194304"), "{m}"),
        other => panic!("expected a quota error, got {other:?}"),
    }
    match call_with(&d, "nn-hoard:200:1") {
        Err(CallError::Quota(m)) => assert!(m.contains("holds 100 host resources"), "{m}"),
        other => panic!("expected a quota error, got {other:?}"),
    }
    assert_eq!(
        json(call_with(&d, "nn-hoard:3:1048576").unwrap())["tensors"],
        3
    );
    assert_eq!(json(call_with(&d, "kv-open:50").unwrap())["buckets"], 50);
    // The outcome a call returns is bounded too (default: a quarter of memory).
    d.limits.max_output_bytes = 1000;
    match call_with(&d, "big:2000") {
        Err(CallError::Quota(m)) => assert!(m.contains("a call may return 1000"), "{m}"),
        other => panic!("expected a quota error, got {other:?}"),
    }
    assert!(call_with(&d, "big:900").is_ok());
}

/// State has a budget too: a one-shot run keeps at most the default 16 MiB
/// per component; the refused write is an error the component sees.
#[test]
fn state_writes_over_the_budget_are_refused() {
    let d = deployment(10_000, 64);
    match call_with(&d, "kv-fill:300:1048576") {
        Err(CallError::Component(GuestError::Internal(m))) => {
            assert!(m.starts_with("set fill-15:"), "{m}");
            assert!(m.contains("state quota: this write would make"), "{m}");
            assert!(m.contains("a component may keep 16777216"), "{m}");
        }
        other => panic!("expected the component's error, got {other:?}"),
    }
    assert_eq!(
        json(call_with(&d, "kv-fill:10:1048576").unwrap())["written"],
        10
    );
    still_serving();
}
