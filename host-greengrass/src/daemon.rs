//! `verge-device serve`: the daemon, put together.
//!
//! Start-up: open the state and outbox databases, bind the API (so `/healthz`
//! answers at once), then load models and components on a blocking thread
//! (`/readyz` turns ready when all are loaded), then start the uplink.
//! A failure in any of these is fatal: the daemon logs it and exits non-zero,
//! so Greengrass marks the component broken. SIGTERM or SIGINT stops it
//! cleanly: no new connections, requests in flight finish, then exit 0.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch;

use crate::api::{self, Api, Loaded, Route};
use crate::cache::{ComponentCache, Source};
use crate::config::{self, Config};
use crate::log;
use crate::metrics::Metrics;
use crate::nn::Graphs;
use crate::nucleus::{ComponentState, Nucleus};
use crate::outbox::Outbox;
use crate::runtime::{Deployment, Placement, Runtime};
use crate::state::{SqliteStore, StateStore};
use crate::uplink::{self, AnyConnector};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("state directory {}: {error}", path.display())]
    StateDir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Outbox(#[from] crate::outbox::OutboxError),
    #[error(transparent)]
    Uplink(#[from] uplink::UplinkError),
    #[error("listening on {addr}: {error}")]
    Listen { addr: String, error: std::io::Error },
    #[error(transparent)]
    Model(#[from] crate::nn::LoadError),
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    #[error("{0}")]
    Load(String),
    #[error("starting {workers} worker threads: {error}")]
    Pool {
        workers: usize,
        error: std::io::Error,
    },
    #[error("greengrass: {0}")]
    Nucleus(String),
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
    #[error("state directory {}: {why}", path.display())]
    Locked { path: PathBuf, why: String },
    #[error("API token {}: {why}", path.display())]
    Token {
        path: std::path::PathBuf,
        why: String,
    },
}

/// The file in the state folder whose lock a serving daemon holds.
pub const LOCK_FILE: &str = "verge.lock";

/// Takes the state folder's advisory lock (`File::try_lock`: `flock` on
/// Linux, released by the kernel when the process ends, however it ends)
/// and writes this process's id in the file; a folder another process
/// holds is refused, naming its pid.
fn lock_state_dir(dir: &std::path::Path) -> Result<std::fs::File, DaemonError> {
    use std::io::{Read, Seek, Write};
    let path = dir.join(LOCK_FILE);
    let fail = |why: String| DaemonError::Locked {
        path: dir.to_path_buf(),
        why,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| fail(format!("opening {LOCK_FILE}: {e}")))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(fail(format!("locking {LOCK_FILE}: {e}")));
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let pid = if holder.is_empty() { "unknown" } else { holder };
            return Err(fail(format!(
                "another verge-device (pid {pid}) serves from it; one daemon per state_dir"
            )));
        }
    }
    // The pid only names the holder in a second daemon's error: on a full
    // disk the lock still holds, and the daemon still starts.
    let pid = std::process::id().to_string();
    let written = file
        .set_len(0)
        .and_then(|_| file.rewind())
        .and_then(|_| file.write_all(pid.as_bytes()))
        .and_then(|_| file.flush());
    if let Err(e) = written {
        log::warn(
            "could not write the pid into the state folder's lock file",
            json!({ "path": path, "error": e.to_string() }),
        );
    }
    Ok(file)
}

/// The bearer token in `path`: its content, trimmed; refused when empty.
fn read_token(path: &std::path::Path) -> Result<String, DaemonError> {
    let fail = |why: String| DaemonError::Token {
        path: path.to_path_buf(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(fail("the file is empty".into()));
    }
    Ok(token.to_string())
}

pub use crate::VERSION;

/// Runs the daemon until a termination signal; `Err` is a fatal error.
/// `nucleus`: the Greengrass nucleus the process runs under, if any (its
/// variables read once, by the caller).
pub async fn serve(
    config: Config,
    nucleus: Option<crate::nucleus::Env>,
) -> Result<(), DaemonError> {
    let started = Instant::now();
    log::info(
        "starting",
        json!({
            "version": VERSION,
            "thing": config.thing_name,
            "routes": config.routes.keys().collect::<Vec<_>>(),
            "state_dir": config.state_dir(),
        }),
    );
    let dir = config.state_dir().to_path_buf();
    std::fs::create_dir_all(dir.join("cache")).map_err(|error| DaemonError::StateDir {
        path: dir.clone(),
        error,
    })?;
    // One daemon per state folder, for the process's life: a second one
    // would drain the same outbox (duplicates, order lost).
    let _lock = lock_state_dir(&dir)?;
    let store: Arc<dyn StateStore> = Arc::new(SqliteStore::open(&dir.join("state.db"))?);
    let metrics = Arc::new(Metrics::new(config.routes.keys()));
    // Under a Greengrass nucleus, its IPC connection: made once, now (the SDK
    // allows no second attempt; a failure exits 1 and the nucleus restarts us).
    let nucleus = if let Some(env) = nucleus {
        let m = metrics.clone();
        let n = tokio::task::spawn_blocking(move || Nucleus::connect(&env, m))
            .await
            .map_err(|e| DaemonError::Nucleus(e.to_string()))?
            .map_err(DaemonError::Nucleus)?;
        log::info("connected to the Greengrass nucleus", json!({}));
        Some(n)
    } else {
        None
    };
    let local = config.routes.iter().find(|r| r.1.local.is_some());
    if let (Some((route, _)), None) = (local, &nucleus) {
        return Err(DaemonError::Nucleus(format!(
            "route '{route}' publishes to local pub/sub, which needs a Greengrass nucleus ({} and {} are not set)",
            crate::nucleus::SOCKET_ENV,
            crate::nucleus::TOKEN_ENV
        )));
    }
    // The uplink's settings checked (its TLS files read) now, not at the
    // first connection; an outbox only when something goes to the cloud.
    let connector = AnyConnector::make(
        &config.uplink_sections(nucleus.as_ref()),
        config.sends_to_cloud(),
    )?;
    if let (Some(_), Some(why)) = (&nucleus, config.uplink.ignored_mqtt(config.mqtt.is_some())) {
        log::warn(why, json!({}));
    }
    let outbox = match &connector {
        Some(c) => Some(Arc::new(Outbox::open(
            &dir.join("outbox.db"),
            config.outbox.max_bytes,
            (c.max_message() as u64).min(config.outbox.max_bytes),
            config.outbox.policy,
        )?)),
        None => None,
    };

    if let Some(c) = &connector {
        let _ = metrics.uplink.set(c.kind());
    }
    // Every component's state within its budget, and leaving the disk the
    // outbox may still need; refusals counted in /metrics.
    let mut quota =
        crate::state::QuotaStore::new(store, config.state, metrics.state_quota_refusals.clone());
    if let Some(o) = &outbox {
        let free = crate::state::quota::free_bytes(&dir).ok();
        if free.is_some_and(|free| free < o.disk_reserve()) {
            log::warn(
                "less disk free than the outbox may need: state writes are refused until there is more",
                json!({ "state_dir": dir, "free_bytes": free, "outbox_reserve_bytes": o.disk_reserve() }),
            );
        }
        let o = o.clone();
        quota = quota.with_disk_reserve(crate::state::quota::DiskReserve::new(&dir, move || {
            o.disk_reserve()
        }));
    }
    let store: Arc<dyn StateStore> = Arc::new(quota);
    // By default a worker per core; with a batched model, enough for a full
    // batch to reach it together and one more for the other routes (a call
    // waiting in a batch holds its worker, but not a core).
    let batch = config
        .models
        .values()
        .filter_map(|m| m.batch.map(|b| b.max + 1))
        .max()
        .unwrap_or(0);
    let workers = config.api.workers.unwrap_or_else(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        cores.max(batch).min(crate::api::MAX_WORKERS)
    });
    let pool = crate::pool::Pool::new(workers, "verge-call")
        .map_err(|error| DaemonError::Pool { workers, error })?;
    let token = config
        .api
        .token_file
        .as_deref()
        .map(read_token)
        .transpose()?;
    let api = Arc::new(Api::new(
        metrics.clone(),
        outbox.clone(),
        nucleus.clone(),
        pool,
        config.api.max_body_bytes,
        config.thing_name.clone(),
        token,
    ));
    let listen = config.api.listen();
    let listener = api::Listener::bind(&listen, config.api.socket_mode())
        .await
        .map_err(|error| DaemonError::Listen {
            addr: listen.to_string(),
            error,
        })?;
    let local = listener.address();
    log::info("listening", json!({ "addr": local }));

    let (stop_tx, stop_rx) = watch::channel(false);
    let grace = Duration::from_secs(config.api.shutdown_grace_s);
    let server = tokio::spawn(api::serve(api.clone(), listener, stop_rx.clone(), grace));
    let mut signals = Signals::new()?;

    // Load while the API already answers /healthz.
    let load_config = config.clone();
    let load_store = store.clone();
    let loading = tokio::task::spawn_blocking(move || load(&load_config, load_store, workers));
    let limit = Duration::from_secs(config.load_timeout_s);
    let loaded = tokio::select! {
        r = loading => r.map_err(|e| DaemonError::Load(format!("loading task failed: {e}")))?,
        // An engine that never finishes loading a model (ONNX Runtime on a
        // malformed Einsum does not) would leave the daemon unready for ever,
        // with nothing for Greengrass to see: give up and exit 1 instead.
        _ = tokio::time::sleep(limit) => Err(DaemonError::Load(format!(
            "models and components still loading after {} s (load_timeout_s): an engine stuck on a model?",
            config.load_timeout_s
        ))),
        sig = signals.next() => {
            log::info("stopping before ready", json!({ "signal": sig }));
            let _ = stop_tx.send(true);
            let _ = server.await;
            return Ok(());
        }
    };
    let loaded = match loaded {
        Ok(l) => l,
        Err(e) => {
            report_state(&nucleus, ComponentState::Errored).await;
            let _ = stop_tx.send(true);
            let _ = server.await;
            return Err(e);
        }
    };
    let components = loaded
        .routes
        .values()
        .map(|r| r.component.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    metrics
        .components_loaded
        .store(components as u64, Ordering::Relaxed);
    metrics.set_models(loaded.runtime.graphs().loaded());
    api.set_loaded(Arc::new(loaded));
    trim_allocator();
    let trimmer = tokio::spawn(trim_when_idle(metrics.clone()));
    log::info(
        "ready",
        json!({ "ms": started.elapsed().as_millis() as u64, "components": components, "addr": local }),
    );
    // Said before the outbox drains, so the nucleus hears it first.
    report_state(&nucleus, ComponentState::Running).await;

    let sender = match (connector, &outbox) {
        (Some(connector), Some(outbox)) => {
            let options = connector.sender_options(&config.health);
            let (m, o, thing) = (metrics.clone(), outbox.clone(), config.thing_name.clone());
            let health = move || {
                json!({
                    "thing": thing,
                    "version": VERSION,
                    "uptime_s": m.uptime().as_secs(),
                    "components_loaded": m.components_loaded.load(Ordering::Relaxed),
                    "outbox_depth": o.stats().depth.load(Ordering::Relaxed),
                    "outbox_bytes": o.stats().bytes.load(Ordering::Relaxed),
                    "ts": log::timestamp(std::time::SystemTime::now()),
                })
            };
            Some(tokio::spawn(uplink::run_sender(
                connector,
                outbox.clone(),
                metrics.clone(),
                options,
                health,
                stop_rx.clone(),
            )))
        }
        _ => None,
    };

    let sig = signals.next().await;
    log::info("stopping", json!({ "signal": sig }));
    let _ = stop_tx.send(true);
    let _ = server.await;
    trimmer.abort();
    if let Some(s) = sender {
        let _ = s.await;
    }
    log::info(
        "stopped",
        json!({ "outbox_depth": outbox.map(|o| o.stats().depth.load(Ordering::Relaxed)) }),
    );
    Ok(())
}

/// Tells the nucleus (if any) the component's state, and waits for its answer.
async fn report_state(nucleus: &Option<Arc<Nucleus>>, state: ComponentState) {
    let Some(n) = nucleus.clone() else { return };
    let answer = tokio::task::spawn_blocking(move || n.update_state(state)).await;
    match answer {
        Ok(Ok(())) => log::info(
            "component state reported",
            json!({ "state": format!("{state:?}") }),
        ),
        Ok(Err(e)) => log::warn(
            "reporting the component state failed",
            json!({ "state": format!("{state:?}"), "error": e.to_string() }),
        ),
        Err(e) => log::warn(
            "reporting the component state failed",
            json!({ "error": e.to_string() }),
        ),
    }
}

/// Gives memory freed while loading (model parsing, compilation) or by a
/// burst of requests back to the system: glibc keeps it otherwise, and the
/// idle daemon would sit at 45 MB after start-up and ~80 MB after a burst
/// instead of ~36 MB (figures in the issue 4 notes). Operators who prefer a
/// flat footprint under load to throughput can set glibc's own tunables
/// (MALLOC_ARENA_MAX=2, MALLOC_MMAP_THRESHOLD_=1048576: ~60 MB under load,
/// ~15% slower).
fn trim_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// After a burst of requests, once none are in flight, gives the memory they
/// freed back to the system (checked every 15 s).
async fn trim_when_idle(metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(Duration::from_secs(15));
    let mut trimmed_at = metrics.total_requests();
    loop {
        tick.tick().await;
        let now = metrics.total_requests();
        if now != trimmed_at && metrics.in_flight.load(Ordering::Relaxed) == 0 {
            trimmed_at = now;
            let _ = tokio::task::spawn_blocking(trim_allocator).await;
        }
    }
}

/// Checks, loads and compiles everything the configuration names.
fn load(
    config: &Config,
    store: Arc<dyn StateStore>,
    workers: usize,
) -> Result<Loaded, DaemonError> {
    let t = Instant::now();
    // Each model file is read once: checked against its digest, then loaded.
    let mut models = Vec::new();
    for spec in config.model_specs() {
        let m = &config.models[&spec.name];
        let bytes = config::verify(&format!("model '{}'", spec.name), &m.path, &m.sha256)?;
        models.push((spec, bytes));
    }
    let graphs = Graphs::load_bytes(models)?;
    let models_ms = t.elapsed().as_millis() as u64;
    let runtime = Runtime::new(graphs).map_err(|e| DaemonError::Load(format!("engine: {e:#}")))?;
    let cache = ComponentCache::new(runtime.engine(), &config.state_dir().join("cache")).map_err(
        |error| DaemonError::StateDir {
            path: config.state_dir().join("cache"),
            error,
        },
    )?;
    let mut prepared = BTreeMap::new();
    for (name, artifact) in &config.components {
        // Only components some route uses are compiled.
        if !config.routes.values().any(|r| &r.component == name) {
            continue;
        }
        let t = Instant::now();
        let bytes = config::verify(
            &format!("component '{name}'"),
            &artifact.path,
            &artifact.sha256,
        )?;
        let (component, source) = cache.load(runtime.engine(), name, &artifact.sha256, &bytes)?;
        let p = runtime
            .prepare(&component)
            .map_err(|e| DaemonError::Load(format!("component '{name}': {e}")))?;
        log::info(
            "component loaded",
            json!({
                "component": name,
                "sha256": artifact.sha256,
                "source": match source { Source::Cache => "cache", Source::Compiled => "compiled" },
                "ms": t.elapsed().as_millis() as u64,
            }),
        );
        prepared.insert(name.clone(), p);
    }
    let mut routes = BTreeMap::new();
    for (name, r) in &config.routes {
        let settings: Vec<(String, String)> = r
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let deployment = Deployment::new(
            Placement::Device,
            r.limits(config.api.max_body_bytes),
            &settings,
        )
        // One namespace per component: routes sharing a component share its state.
        .with_state(store.clone(), &r.component);
        routes.insert(
            name.clone(),
            Route {
                component: r.component.clone(),
                prepared: prepared[&r.component].clone(),
                deployment,
                cloud_topic: r.cloud.as_ref().map(|c| c.topic.clone()),
                local_topic: r.local.as_ref().map(|c| c.topic.clone()),
                turns: api::Turns::new(r.concurrency.unwrap_or(workers.saturating_sub(1))),
            },
        );
    }
    for m in runtime.graphs().loaded() {
        match &m.fallback {
            Some(why) => log::warn(
                "model fell back to tract",
                json!({ "model": m.name, "configured": "onnxruntime", "reason": why }),
            ),
            None => log::info(
                "model loaded",
                json!({ "model": m.name, "backend": m.backend.to_string(), "providers": m.providers }),
            ),
        }
    }
    log::info(
        "models loaded",
        json!({ "models": config.models.keys().collect::<Vec<_>>(), "ms": models_ms }),
    );
    Ok(Loaded { runtime, routes })
}

/// SIGTERM (Greengrass stopping the component) and SIGINT (a person).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals, DaemonError> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(DaemonError::Signal)?,
            int: signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
