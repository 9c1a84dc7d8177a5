//! `verge-device serve` as applications on the device use it: the local API,
//! its answers to bad requests and failing components, durable state, the
//! precompile cache and a clean shutdown. (The MQTT side is in `uplink.rs`.)

use std::time::Duration;

use verge_testkit::scratch;
use verge_testkit::serve::{Daemon, config, config_full, config_with, raw};

#[test]
fn answers_outcomes_and_refuses_bad_requests_while_serving_on() {
    let dir = scratch("api");
    let d = Daemon::start(&config(&dir, ""));
    assert_eq!(d.get("/healthz").status, 200);
    assert_eq!(d.get("/readyz").status, 200);

    let ok = d.post("local", "text/plain", b"echo");
    assert_eq!(ok.status, 200, "{}", ok.text());
    let body = ok.json()["respond"]["body"].clone();
    assert_eq!(body["content_type"], "text/plain");
    assert!(
        body["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "x-user=ada"),
        "{body}"
    );
    let host = d.post("local", "", b"host").json();
    assert_eq!(host["respond"]["body"]["placement"], "Placement::Device");
    assert_eq!(host["respond"]["body"]["deadline_ms"], 1000);
    let setting = d.post("local", "", b"config:greeting").json();
    assert_eq!(setting["respond"]["body"]["value"], "hello");

    // The real component, end to end.
    let rust = d.post("file-type", "", include_bytes!("serve.rs"));
    assert_eq!(rust.status, 200, "{}", rust.text());
    assert_eq!(rust.json()["respond"]["body"]["label"], "rust");

    // Caller mistakes: 4xx with a message.
    let unknown = d.post("nope", "", b"echo");
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"]["kind"], "unknown-route");
    assert!(unknown.text().contains("local"), "{}", unknown.text());
    // Answered before its body was read, so the connection says it closes
    // (a keep-alive client would otherwise lose its next request on it).
    assert!(
        unknown
            .headers
            .contains(&("connection".into(), "close".into())),
        "{:?}",
        unknown.headers
    );
    assert_eq!(d.get("/v1/infer/local").status, 405);
    assert_eq!(d.post("..", "", b"").status, 404);
    assert_eq!(
        verge_testkit::serve::http(d.addr, "POST", "/metrics", &[], b"").status,
        405
    );
    assert_eq!(d.get("/nowhere").status, 404);
    let big = d.post("local", "", &vec![b'x'; 65537]);
    assert_eq!(big.status, 413, "{}", big.text());
    let bad_json = d.post("local", "application/json", b"{\"echo\": ");
    assert_eq!(bad_json.status, 400);
    assert_eq!(bad_json.json()["error"]["kind"], "bad-json");
    let invalid = d.post("local", "", b"invalid");
    assert_eq!(invalid.status, 422);
    assert_eq!(invalid.json()["error"]["kind"], "invalid-input");
    // Not HTTP at all, and a request line without a version.
    assert_eq!(raw(d.addr, b"\x16\x03\x01garbage\r\n\r\n").status, 400);
    assert_eq!(raw(d.addr, b"POST /v1/infer/local\r\n\r\n").status, 400);
    // A body shorter than its declared length: the connection ends, the daemon goes on.
    let _ = std::net::TcpStream::connect(d.addr).map(|mut s| {
        use std::io::Write;
        let _ = s.write_all(b"POST /v1/infer/local HTTP/1.1\r\ncontent-length: 100\r\n\r\nech");
    });

    let again = d.post("local", "", b"echo");
    assert_eq!(again.status, 200);
    assert!(d.metric("verge_requests_total{route=\"local\"}") >= 5.0);
    assert_eq!(
        d.metric("verge_errors_total{route=\"-\",kind=\"unknown-route\"}"),
        2.0
    );
    assert_eq!(
        d.metric("verge_errors_total{route=\"local\",kind=\"too-large\"}"),
        1.0
    );
    assert_eq!(d.metric("verge_components_loaded"), 2.0);
    // Every log line is a JSON object with a timestamp, a level and a message.
    for line in d.lines.lock().unwrap().iter() {
        assert!(
            line["ts"].is_string() && line["level"].is_string() && line["msg"].is_string(),
            "{line}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn failing_components_get_5xx_and_the_daemon_keeps_serving() {
    let dir = scratch("faults");
    let d = Daemon::start(&config(&dir, ""));
    let trap = d.post("local", "", b"trap");
    assert_eq!(trap.status, 500, "{}", trap.text());
    assert_eq!(trap.json()["error"]["kind"], "trap");
    let alloc = d.post("local", "", b"alloc");
    assert_eq!(alloc.status, 500);
    assert_eq!(alloc.json()["error"]["kind"], "memory");

    // An endless call does not hold up others: the daemon answers, another
    // route runs, and a call behind it on its own route (one turn) gets its
    // answer by its own deadline (1 s): a 503, or a 200 if the turn came
    // free in time, never an answer after the endless call's full run.
    let addr = d.addr;
    let endless = std::thread::spawn(move || {
        verge_testkit::serve::http(addr, "POST", "/v1/infer/local", &[], b"loop")
    });
    verge_testkit::serve::wait_until("the endless call running", Duration::from_secs(10), || {
        d.metric("verge_requests_in_flight") >= 1.0
    });
    assert_eq!(d.get("/healthz").status, 200);
    let other = d.post("file-type", "", include_bytes!("serve.rs"));
    assert_eq!(other.status, 200, "{}", other.text());
    let t = std::time::Instant::now();
    let behind = d.post("local", "", b"echo");
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "answered after {took:?}: {}",
        behind.text()
    );
    if behind.status != 200 {
        assert_eq!(behind.status, 503, "{}", behind.text());
        assert_eq!(behind.json()["error"]["kind"], "busy");
    }
    let endless = endless.join().unwrap();
    assert_eq!(endless.status, 504, "{}", endless.text());
    assert_eq!(endless.json()["error"]["kind"], "deadline");

    assert_eq!(d.post("local", "", b"echo").status, 200);
    assert_eq!(
        d.metric("verge_errors_total{route=\"local\",kind=\"trap\"}"),
        1.0
    );
    assert_eq!(
        d.metric("verge_errors_total{route=\"local\",kind=\"deadline\"}"),
        1.0
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn state_survives_a_restart_and_components_come_from_the_cache() {
    let dir = scratch("state");
    let cfg = config(&dir, "");
    let mut d = Daemon::start(&cfg);
    let count =
        |d: &Daemon| d.post("local", "", b"count").json()["respond"]["body"]["hits"].clone();
    assert_eq!(count(&d), 1);
    assert_eq!(count(&d), 2);
    assert!(
        d.all("component loaded")
            .iter()
            .all(|l| l["source"] == "compiled")
    );
    assert!(d.terminate().success());

    let d = Daemon::start(&cfg);
    assert_eq!(count(&d), 3);
    let loaded = d.all("component loaded");
    assert_eq!(loaded.len(), 2);
    assert!(loaded.iter().all(|l| l["source"] == "cache"), "{loaded:?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_second_daemon_on_the_same_state_dir_is_refused_naming_the_first() {
    let dir = scratch("lock");
    let cfg = config(&dir, "");
    let mut first = Daemon::start(&cfg);
    let mut second = Daemon::spawn(&cfg);
    assert_eq!(second.wait(Duration::from_secs(60)).code(), Some(1));
    let fatal = second.find("fatal").expect("a fatal log line");
    let error = fatal["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("pid {}", first.pid()))
            && error.contains("one daemon per state_dir"),
        "{fatal}"
    );
    // The first goes on serving; once it has stopped, the folder is free.
    assert_eq!(first.post("local", "", b"count").status, 200);
    assert!(first.terminate().success());
    let mut again = Daemon::start(&cfg);
    assert!(again.terminate().success());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_corrupt_state_database_is_moved_aside_and_the_daemon_starts() {
    let dir = scratch("corrupt-state");
    let cfg = config(&dir, "");
    let mut d = Daemon::start(&cfg);
    let count =
        |d: &Daemon| d.post("local", "", b"count").json()["respond"]["body"]["hits"].clone();
    assert_eq!(count(&d), 1);
    assert!(d.terminate().success());
    // What a power cut on a bad card can leave: the file is no database.
    let state = dir.join("state");
    for f in std::fs::read_dir(&state).unwrap().flatten() {
        let name = f.file_name().to_string_lossy().to_string();
        if name.starts_with("state.db-") {
            std::fs::remove_file(f.path()).unwrap();
        }
    }
    std::fs::write(state.join("state.db"), vec![0xa5; 8192]).unwrap();

    let d = Daemon::start(&cfg);
    assert_eq!(d.get("/readyz").status, 200);
    assert_eq!(count(&d), 1, "a fresh database");
    assert_eq!(d.metric("verge_databases_moved_aside_total"), 1.0);
    let moved = d.all("database corrupt: moved aside, starting a fresh one");
    assert_eq!(moved.len(), 1, "{moved:?}");
    let kept = std::path::PathBuf::from(moved[0]["moved_to"].as_str().unwrap());
    assert_eq!(
        std::fs::read(&kept).unwrap(),
        vec![0xa5; 8192],
        "kept for recovery"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sigterm_lets_the_request_in_flight_finish() {
    let dir = scratch("sigterm");
    let mut d = Daemon::start(&config(&dir, ""));
    let addr = d.addr;
    let slow = std::thread::spawn(move || {
        verge_testkit::serve::http(addr, "POST", "/v1/infer/local", &[], b"loop")
    });
    verge_testkit::serve::wait_until("the call to start", Duration::from_secs(10), || {
        verge_testkit::serve::http(addr, "GET", "/metrics", &[], b"")
            .text()
            .contains("verge_requests_in_flight 1")
    });
    let status = d.terminate();
    assert!(status.success(), "{status}");
    // The request got its answer (the component's deadline), not a reset.
    assert_eq!(slow.join().unwrap().status, 504);
    assert!(d.find("stopped").is_some());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_fatal_configuration_error_exits_non_zero_with_a_json_line() {
    let dir = scratch("fatal");
    let cfg = config(&dir, "");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let probe_sha = verge_testkit::sha256(&verge_testkit::wasm("probe"));
    std::fs::write(&cfg, text.replace(&probe_sha, &"0".repeat(64))).unwrap();
    let mut d = Daemon::spawn(&cfg);
    let status = d.wait(Duration::from_secs(120));
    assert_eq!(status.code(), Some(1));
    let fatal = d.find("fatal").expect("a fatal log line");
    assert_eq!(fatal["level"], "error");
    assert!(
        fatal["error"].as_str().unwrap().contains("sha256"),
        "{fatal}"
    );

    std::fs::write(&cfg, "routes = 3").unwrap();
    let mut d = Daemon::spawn(&cfg);
    assert_eq!(d.wait(Duration::from_secs(30)).code(), Some(1));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn models_run_on_onnxruntime_or_fall_back_to_tract_when_allowed() {
    let rust = include_bytes!("serve.rs");
    let label = |d: &Daemon| {
        let r = d.post("file-type", "", rust);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["respond"]["body"]["label"].clone()
    };
    // ONNX Runtime from the configured library.
    let dir = scratch("onnxruntime");
    let library = verge_testkit::onnxruntime_lib();
    let ort = format!("[onnxruntime]\nlibrary = \"{}\"", library.display());
    let d = Daemon::start(&config_with(
        &dir,
        "backend = \"onnxruntime\"\nthreads = 1",
        &ort,
    ));
    assert_eq!(label(&d), "rust");
    assert_eq!(
        d.metric(r#"verge_model_backend{model="magika",backend="onnxruntime",providers="cpu"}"#),
        1.0
    );
    assert_eq!(d.metric("verge_model_fallbacks"), 0.0);
    drop(d);

    // No library there: with a fallback, tract serves, and logs and metrics say so.
    let missing = "[onnxruntime]\nlibrary = \"/nonexistent/libonnxruntime.so\"";
    let engine = "backend = \"onnxruntime\"\nfallback = \"tract\"";
    let d = Daemon::start(&config_with(&dir, engine, missing));
    assert_eq!(label(&d), "rust");
    let warning = d.find("model fell back to tract").expect("a warning");
    assert_eq!(warning["level"], "warn");
    assert!(
        warning["reason"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/libonnxruntime.so"),
        "{warning}"
    );
    assert_eq!(
        d.metric(r#"verge_model_backend{model="magika",backend="tract""#),
        1.0
    );
    assert_eq!(d.metric("verge_model_fallbacks"), 1.0);
    drop(d);

    // Without one, the daemon does not start, and says why.
    let mut d = Daemon::spawn(&config_with(&dir, "backend = \"onnxruntime\"", missing));
    assert_eq!(d.wait(Duration::from_secs(120)).code(), Some(1));
    let fatal = d.find("fatal").unwrap();
    assert!(
        fatal["error"]
            .as_str()
            .unwrap()
            .contains("no ONNX Runtime library"),
        "{fatal}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn component_state_is_held_to_its_budget_and_refusals_are_counted() {
    let dir = scratch("state-quota");
    let d = Daemon::start(&config(
        &dir,
        "[state]\nmax_bytes_per_component = 65536\nmax_keys_per_component = 100\n",
    ));
    // 10 values of 4 KiB fit in 64 KiB; 40 do not.
    let fits = d.post("local", "", b"kv-fill:10:4096");
    assert_eq!(fits.status, 200, "{}", fits.text());
    let over = d.post("local", "", b"kv-fill:40:4096");
    assert_eq!(over.status, 500, "{}", over.text());
    let message = over.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("state quota: this write would make")
            && message.contains("may keep 65536"),
        "{message}"
    );
    assert_eq!(d.metric("verge_state_quota_refusals_total"), 1.0);
    // The daemon serves on, and what was written within the budget is there.
    assert_eq!(d.post("local", "", b"echo").status, 200);
}

/// `n` calls that never return on route `slow` at once: each one's status,
/// when it was answered, and its `retry-after`.
fn hang(d: &Daemon, n: usize) -> Vec<std::thread::JoinHandle<(u16, Duration, Option<String>)>> {
    let addr = d.addr;
    (0..n)
        .map(|_| {
            std::thread::spawn(move || {
                let t = std::time::Instant::now();
                let r = verge_testkit::serve::http(addr, "POST", "/v1/infer/slow", &[], b"loop");
                let retry = r
                    .headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
                    .map(|(_, v)| v.clone());
                (r.status, t.elapsed(), retry)
            })
        })
        .collect()
}

#[test]
fn a_hanging_route_leaves_workers_for_the_others_and_answers_by_its_deadline() {
    let dir = scratch("fair");
    // Two workers; `slow` may use one of them (its default concurrency).
    let d = Daemon::start(&config(
        &dir,
        "[routes.slow]\ncomponent = \"probe\"\ndeadline_ms = 1500\n",
    ));
    let deadline = Duration::from_millis(1500);
    let slack = Duration::from_millis(700);
    let hung = hang(&d, 4);
    verge_testkit::serve::wait_until("four slow calls in flight", Duration::from_secs(10), || {
        d.metric("verge_requests_in_flight") >= 4.0
    });
    // Answered while the slow calls are still outstanding, not after them.
    let rust = d.post("file-type", "", include_bytes!("serve.rs"));
    assert_eq!(rust.status, 200, "{}", rust.text());
    assert!(
        d.metric("verge_requests_in_flight") >= 3.0,
        "file-type was answered only after the slow route let go of the workers"
    );
    // One call runs to its deadline (504); the three waiting for the route's
    // one turn get 503 by the same deadline, not after the calls before them.
    let mut answers: Vec<_> = hung.into_iter().map(|h| h.join().unwrap()).collect();
    answers.sort_by_key(|a| a.0);
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert_eq!(statuses, [503, 503, 503, 504], "{answers:?}");
    for (status, took, _) in &answers {
        assert!(*took < deadline + slack, "{status} after {took:?}");
    }
    // Now the route's pace is known (1.5 s a call): with its one turn taken,
    // a call cannot make its deadline, and is told so at once.
    let running = hang(&d, 1);
    verge_testkit::serve::wait_until("the slow call running", Duration::from_secs(10), || {
        d.metric("verge_requests_in_flight") >= 1.0
    });
    let refused: Vec<_> = hang(&d, 2).into_iter().map(|h| h.join().unwrap()).collect();
    for (status, took, retry) in &refused {
        assert_eq!(*status, 503, "{refused:?}");
        assert!(
            *took < Duration::from_millis(500),
            "at once, not after {took:?}"
        );
        assert!(retry.is_some(), "a retry-after: {refused:?}");
    }
    let (status, took, _) = running.into_iter().next().unwrap().join().unwrap();
    assert_eq!(status, 504);
    assert!(took < deadline + slack, "{status} after {took:?}");
    let busy = d.metric("verge_errors_total{route=\"slow\",kind=\"busy\"}");
    assert!(busy >= 4.0, "busy answers counted: {busy}");
    assert_eq!(d.post("slow", "", b"echo").status, 200);
}

#[test]
fn with_a_token_the_api_answers_only_callers_who_send_it() {
    let dir = scratch("token");
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("api.token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let d = Daemon::start(&verge_testkit::serve::config_full(
        &dir,
        &format!("token_file = \"{}\"", token.display()),
        "",
        "",
    ));
    // Liveness stays open (it says nothing); everything else wants the token.
    assert_eq!(d.get("/healthz").status, 200);
    for (path, method) in [
        ("/v1/infer/local", "POST"),
        ("/metrics", "GET"),
        ("/readyz", "GET"),
    ] {
        let none = verge_testkit::serve::http(d.addr, method, path, &[], b"echo");
        assert_eq!(none.status, 401, "{path}: {}", none.text());
        assert_eq!(none.json()["error"]["kind"], "unauthorised");
        let wrong = verge_testkit::serve::http(
            d.addr,
            method,
            path,
            &[("authorization", "Bearer s3cret-tokem")],
            b"echo",
        );
        assert_eq!(wrong.status, 401, "{path}");
    }
    let ok = verge_testkit::serve::http(
        d.addr,
        "POST",
        "/v1/infer/local",
        &[("authorization", "Bearer s3cret-token")],
        b"echo",
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
}

#[test]
fn an_empty_token_file_stops_the_start() {
    let dir = scratch("token-empty");
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("api.token");
    std::fs::write(&token, "  \n").unwrap();
    let mut d = Daemon::spawn(&verge_testkit::serve::config_full(
        &dir,
        &format!("token_file = \"{}\"", token.display()),
        "",
        "",
    ));
    assert_eq!(d.wait(Duration::from_secs(30)).code(), Some(1));
    assert!(
        d.find("fatal")
            .is_some_and(|l| l.to_string().contains("the file is empty"))
    );
}

/// One request over the daemon's Unix socket.
fn over_socket(path: &std::path::Path, request: &str) -> verge_testkit::serve::Reply {
    let s = std::os::unix::net::UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    verge_testkit::serve::exchange(s, request.as_bytes())
}

#[test]
fn the_api_can_listen_on_a_unix_socket_that_permissions_guard() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let dir = scratch("unix");
    std::fs::create_dir_all(dir.join("state")).unwrap();
    // A relative path is in the state folder. A stale socket file from a
    // daemon that died is replaced.
    let socket = dir.join("state").join("api.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let config = verge_testkit::serve::config_full(
        &dir,
        "listen = \"unix:api.sock\"\nsocket_mode = \"600\"",
        "",
        "",
    );
    let mut d = Daemon::start(&config);
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(
        d.find("ready").unwrap()["addr"]
            .as_str()
            .unwrap()
            .ends_with("state/api.sock")
    );
    let echo = over_socket(
        &socket,
        "POST /v1/infer/local HTTP/1.1\r\nhost: verge\r\nconnection: close\r\ncontent-length: 4\r\n\r\necho",
    );
    assert_eq!(echo.status, 200, "{}", echo.text());
    assert_eq!(
        over_socket(
            &socket,
            "GET /readyz HTTP/1.1\r\nhost: verge\r\nconnection: close\r\n\r\n"
        )
        .status,
        200
    );
    // A second daemon (with a state folder of its own: one daemon per
    // state_dir) on the same socket is refused: the first answers there.
    let other = scratch("unix-second");
    let second_config = verge_testkit::serve::config_full(
        &other,
        &format!("listen = \"unix:{}\"", socket.display()),
        "",
        "",
    );
    let mut second = Daemon::spawn(&second_config);
    assert_eq!(second.wait(Duration::from_secs(60)).code(), Some(1));
    assert!(
        second
            .find("fatal")
            .is_some_and(|l| l.to_string().contains("another process answers")),
        "{:?}",
        second.lines.lock().unwrap()
    );
    assert_eq!(d.terminate().code(), Some(0));
    assert!(!socket.exists(), "the socket is removed at exit");
    // A file that is not a socket is never removed to make room.
    std::fs::write(&socket, "keep me").unwrap();
    let mut refused = Daemon::spawn(&config);
    assert_eq!(refused.wait(Duration::from_secs(60)).code(), Some(1));
    assert_eq!(std::fs::read_to_string(&socket).unwrap(), "keep me");
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&other).ok();
}

/// A field of `/proc/PID/status` in bytes (VmRSS, VmHWM).
fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The hostile probe on `serve`, two calls at a time: every host resource it
/// goes after ends the call with its error, the daemon's peak RSS stays
/// within what the routes were granted (two calls' memory and tensor
/// bounds) plus a stated overhead, the state on disk within its budget plus
/// SQLite's, and the daemon serves on.
#[test]
fn hostile_calls_stay_within_what_the_deployment_granted() {
    let dir = scratch("hostile");
    let d = Daemon::start(&config(
        &dir,
        "[routes.hostile]\ncomponent = \"probe\"\nmemory_mb = 64\ndeadline_ms = 5000\nconcurrency = 2\n\n\
         [state]\nmax_bytes_per_component = 4194304\n",
    ));
    assert_eq!(d.post("hostile", "", b"echo").status, 200);
    assert_eq!(
        d.post("file-type", "", include_bytes!("serve.rs")).status,
        200
    );
    let settled = proc_status_bytes(d.pid(), "VmRSS");
    let addr = d.addr;
    for (command, kind, message) in verge_testkit::HOSTILE_64_MIB {
        let calls: Vec<_> = (0..2)
            .map(|_| {
                std::thread::spawn(move || {
                    verge_testkit::serve::http(
                        addr,
                        "POST",
                        "/v1/infer/hostile",
                        &[],
                        command.as_bytes(),
                    )
                })
            })
            .collect();
        for c in calls {
            let r = c.join().unwrap();
            assert_eq!(r.status, 500, "{command}: {}", r.text());
            assert_eq!(r.json()["error"]["kind"], kind, "{command}: {}", r.text());
            assert!(r.text().contains(message), "{command}: {}", r.text());
        }
        // Two calls, each 64 MiB of linear memory and 64 MiB of tensors, plus
        // 64 MiB for the allocator's slack and the answers.
        let peak = proc_status_bytes(d.pid(), "VmHWM");
        let bound = settled + 2 * (128 << 20) + (64 << 20);
        eprintln!(
            "serve {command}: peak RSS {} MiB (settled {} MiB, bound {} MiB)",
            peak >> 20,
            settled >> 20,
            bound >> 20
        );
        assert!(
            peak <= bound,
            "after {command}: peak RSS {} MiB over {} MiB",
            peak >> 20,
            bound >> 20
        );
    }
    // The state on disk: the 4 MiB budget, plus the WAL SQLite keeps until
    // a checkpoint (4 MiB) and its pages.
    let disk: u64 = ["state.db", "state.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join("state").join(f)).ok())
        .map(|m| m.len())
        .sum();
    eprintln!("serve: state on disk {} KiB", disk >> 10);
    assert!(disk <= 10 << 20, "state on disk: {} MiB", disk >> 20);
    assert_eq!(d.metric("verge_state_quota_refusals_total"), 2.0);
    assert_eq!(
        d.post("file-type", "", include_bytes!("serve.rs")).status,
        200
    );
    assert_eq!(d.post("hostile", "", b"echo").status, 200);
}

/// A model an engine never finishes loading (ONNX Runtime on an Einsum whose
/// equation the fuzzer mangled: it spins in session creation) does not leave
/// the daemon unready for ever: past `load_timeout_s` it exits 1, saying so,
/// and Greengrass sees a broken component.
#[test]
fn a_model_that_never_finishes_loading_ends_the_start() {
    let dir = scratch("stuck-load");
    let stuck = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/findings/onnx_ort-einsum-equation-timeout"
    );
    let library = verge_testkit::onnxruntime_lib();
    let path = config(
        &dir,
        &format!(
            "[models.stuck]\npath = \"{stuck}\"\nsha256 = \"{}\"\nbackend = \"onnxruntime\"\n\n\
             [onnxruntime]\nlibrary = \"{}\"\n",
            verge_testkit::sha256(std::path::Path::new(stuck)),
            library.display()
        ),
    );
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("load_timeout_s = 3\n{text}")).unwrap();
    let started = std::time::Instant::now();
    let mut d = Daemon::spawn(&path);
    assert_eq!(d.wait(Duration::from_secs(120)).code(), Some(1));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert!(
        d.find("fatal")
            .is_some_and(|l| l.to_string().contains("load_timeout_s")),
        "{:?}",
        d.lines.lock().unwrap()
    );
}

#[test]
fn batched_calls_each_get_their_own_answer_even_beside_a_bad_call_and_a_hung_one() {
    let dir = scratch("batch");
    // Eight workers: file-type's calls (seven at once) reach the model together.
    let cfg = config_full(
        &dir,
        "workers = 8",
        "batch = { max = 8, wait_us = 2000 }",
        "",
    );
    let d = Daemon::start(&cfg);

    // Distinct inputs of known types, answered one at a time first.
    let root = verge_testkit::paths::workspace();
    let files: Vec<Vec<u8>> = [
        "host-greengrass/src/lib.rs",
        "dev",
        "Cargo.toml",
        "wit/verge.wit",
        "models/fetch.py",
        "host-greengrass/src/api.rs",
        "host-greengrass/verge.example.toml",
        "shims/lambda-edge/package.json",
        "components/probe/src/lib.rs",
        "bench/soak.py",
        "models/manifest.toml",
        ".gitignore",
    ]
    .iter()
    .map(|f| std::fs::read(root.join(f)).unwrap_or_else(|e| panic!("{f}: {e}")))
    .collect();
    let answer = |r: &verge_testkit::serve::Reply| {
        assert_eq!(r.status, 200, "{}", r.text());
        let body = &r.json()["respond"]["body"];
        (
            body["label"].as_str().unwrap().to_string(),
            body["score"].as_f64().unwrap(),
        )
    };
    let alone: Vec<_> = files
        .iter()
        .map(|f| answer(&d.post("file-type", "", f)))
        .collect();

    // The same inputs all at once, beside a call whose tensor is wrong for
    // the model and one that never returns.
    let addr = d.addr;
    let bad = std::thread::spawn(move || {
        verge_testkit::serve::http(
            addr,
            "POST",
            "/v1/infer/local",
            &[],
            b"nn:magika:bytes:1,7:f32",
        )
    });
    let hung = std::thread::spawn(move || {
        verge_testkit::serve::http(addr, "POST", "/v1/infer/local", &[], b"loop")
    });
    let together: Vec<_> = files
        .iter()
        .cloned()
        .map(|f| {
            std::thread::spawn(move || {
                verge_testkit::serve::http(addr, "POST", "/v1/infer/file-type", &[], &f)
            })
        })
        .collect();
    for (i, t) in together.into_iter().enumerate() {
        let (label, score) = answer(&t.join().unwrap());
        assert_eq!(label, alone[i].0, "input {i}");
        assert!(
            (score - alone[i].1).abs() <= 1e-5,
            "input {i}: {score} vs {}",
            alone[i].1
        );
    }
    let bad = bad.join().unwrap();
    assert!(bad.status >= 400, "{}", bad.text());
    assert!(bad.text().contains("bytes"), "{}", bad.text());
    assert_eq!(hung.join().unwrap().status, 504);

    // Seen in the metrics: every call went through the batcher, some together.
    let calls = d.metric("verge_batch_size_sum{model=\"magika\"}");
    let runs = d.metric("verge_batch_size_count{model=\"magika\"}");
    let alone_runs = d.metric("verge_batch_size_bucket{model=\"magika\",le=\"1\"}");
    assert_eq!(calls, 2.0 * files.len() as f64);
    assert!(
        runs < calls && alone_runs < runs,
        "{runs} runs for {calls} calls"
    );
    std::fs::remove_dir_all(&dir).ok();
}
