//! The local HTTP API, for applications on the device (loopback by default).
//!
//! * `POST /v1/infer/{route}`: the body is the payload, `Content-Type` its
//!   content type, other headers become request attributes; the answer is the
//!   outcome as JSON (as `verge-device run` prints it), plus where the result
//!   went in the outbox when the route sends to the cloud, and to which local
//!   pub/sub topic of the Greengrass nucleus when it has one;
//! * `GET /healthz` (the process answers), `GET /readyz` (every component and
//!   model loaded), `GET /metrics` (Prometheus text).
//!
//! Caller mistakes get a 4xx, component failures a 5xx, both with a JSON
//! `{"error": {"kind", "message"}}`. Calls run on a fixed pool of `workers`
//! threads ([`Pool`]), so inference never stalls the async runtime.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Method, Request as HttpRequest, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::metrics::Metrics;
use crate::nucleus::Nucleus;
use crate::outbox::{self, Outbox};
use crate::pool::{Pool, PoolError};
use crate::report;
use crate::runtime::{CallError, Deployment, Prepared, Request, Runtime};

/// `[api]`: where and how the local API listens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Loopback TCP by default: the API is for applications on the device.
    /// `unix:PATH` listens on a Unix domain socket instead (a relative PATH
    /// is in `state_dir`), which file permissions guard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<Listen>,
    /// The Unix socket's permissions, in octal: who may connect (default
    /// "660": the daemon's user and group).
    #[serde(default = "default_socket_mode")]
    pub socket_mode: String,
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Calls run at once; more wait. Defaults to the number of cores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// How long a shutdown waits for in-flight requests.
    #[serde(default = "default_drain")]
    pub shutdown_grace_s: u64,
    /// A file holding a token callers must send as `Authorization: Bearer <token>`
    /// (every path but `/healthz`); none: no authentication (keep the API on loopback).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

fn default_listen() -> Listen {
    Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], 8470)))
}
fn default_socket_mode() -> String {
    "660".into()
}

/// Where the API listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Listen {
    Tcp(SocketAddr),
    /// A Unix domain socket at this path.
    Unix(PathBuf),
}

impl TryFrom<String> for Listen {
    type Error = String;
    fn try_from(s: String) -> Result<Listen, String> {
        match s.strip_prefix("unix:") {
            Some("") => Err("listen = \"unix:\" needs a path".into()),
            Some(path) => Ok(Listen::Unix(path.into())),
            None => s.parse().map(Listen::Tcp).map_err(|_| {
                format!(
                    "listen = {s:?}: expected an address and port (127.0.0.1:8470) or unix:PATH"
                )
            }),
        }
    }
}

impl From<Listen> for String {
    fn from(l: Listen) -> String {
        l.to_string()
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "{a}"),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl Settings {
    /// `socket_mode` as permission bits, if it is octal ones (checked when
    /// the configuration loads, so a loaded one always is).
    fn socket_mode_bits(&self) -> Option<u32> {
        u32::from_str_radix(&self.socket_mode, 8)
            .ok()
            .filter(|m| *m <= 0o777)
    }

    /// Where the API listens: `listen`, else loopback TCP port 8470.
    pub fn listen(&self) -> Listen {
        self.listen.clone().unwrap_or_else(default_listen)
    }

    pub fn socket_mode(&self) -> u32 {
        self.socket_mode_bits().unwrap_or(0o600)
    }

    /// The section's own checks.
    pub fn check(&self) -> Result<(), String> {
        if self.socket_mode_bits().is_none() {
            return Err(format!(
                "api.socket_mode {:?}: expected permission bits in octal, like \"660\"",
                self.socket_mode
            ));
        }
        if self.workers.is_some_and(|w| w == 0 || w > MAX_WORKERS) {
            return Err(format!("api.workers is from 1 to {MAX_WORKERS}"));
        }
        if self.max_body_bytes == 0 {
            return Err("api.max_body_bytes must be positive".into());
        }
        Ok(())
    }
}
fn default_max_body() -> usize {
    16 << 20
}
/// Greengrass's classic nucleus sends SIGKILL 5 s after SIGTERM (not
/// configurable): the grace, and the exit after it, stay inside that.
fn default_drain() -> u64 {
    3
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: None,
            socket_mode: default_socket_mode(),
            max_body_bytes: default_max_body(),
            workers: None,
            shutdown_grace_s: default_drain(),
            token_file: None,
        }
    }
}

/// The most worker threads, and calls of one route at once.
pub const MAX_WORKERS: usize = 1024;

/// One configured route, ready to call.
pub struct Route {
    pub component: String,
    pub prepared: Prepared,
    pub deployment: Deployment,
    /// The MQTT topic its outcomes go to, if any.
    pub cloud_topic: Option<String>,
    /// The nucleus's local pub/sub topic its outcomes go to, if any.
    pub local_topic: Option<String>,
    /// Its calls at once (`concurrency`): a call takes a turn before a worker.
    pub turns: Turns,
}

/// A route's turns: at most `concurrency` of its calls hold a worker at
/// once, the rest wait in order. Waiting counts toward a call's deadline,
/// and a call that cannot be answered in time is told so: at once when the
/// calls already waiting ahead of it, at the route's recent pace, would
/// take it past its deadline, else when the deadline comes.
pub struct Turns {
    turns: Arc<tokio::sync::Semaphore>,
    concurrency: usize,
    /// Calls waiting for a turn now.
    waiting: AtomicUsize,
    /// How long a call has taken lately (µs; a moving average), 0 until one has run.
    pace_us: AtomicU64,
}

/// Why a call got no turn in time.
enum NoTurn {
    /// Refused on arrival: the calls ahead would take it past its deadline.
    Ahead {
        ahead: usize,
        wait: Duration,
    },
    /// Its deadline came while it waited.
    Waited(Duration),
    Closed,
}

impl Turns {
    pub fn new(concurrency: usize) -> Turns {
        Turns {
            turns: Arc::new(tokio::sync::Semaphore::new(concurrency.max(1))),
            concurrency: concurrency.max(1),
            waiting: AtomicUsize::new(0),
            pace_us: AtomicU64::new(0),
        }
    }

    /// Waits for a turn until `until`.
    async fn take(
        &self,
        arrived: Instant,
        until: Instant,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, NoTurn> {
        let ahead = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Countdown(&self.waiting);
        let pace = Duration::from_micros(self.pace_us.load(Ordering::Relaxed));
        // With no turn free: the calls running now end, then whole rounds of
        // the calls waiting ahead, before this one's turn.
        let wait = pace * ((ahead / self.concurrency) as u32 + 1);
        if self.turns.available_permits() == 0 && !pace.is_zero() && arrived + wait >= until {
            return Err(NoTurn::Ahead { ahead, wait });
        }
        let turn = self.turns.clone().acquire_owned();
        match tokio::time::timeout_at(until.into(), turn).await {
            Ok(Ok(turn)) => Ok(turn),
            Ok(Err(_)) => Err(NoTurn::Closed),
            Err(_) => Err(NoTurn::Waited(arrived.elapsed())),
        }
    }

    /// A call of this route took `took` on its worker.
    fn ran(&self, took: Duration) {
        let took = took.as_micros().max(1) as u64;
        let old = self.pace_us.load(Ordering::Relaxed);
        let new = if old == 0 { took } else { (3 * old + took) / 4 };
        self.pace_us.store(new, Ordering::Relaxed);
    }
}

/// Decrements its counter when dropped.
struct Countdown<'a>(&'a AtomicUsize);

impl Drop for Countdown<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What exists once loading has finished.
pub struct Loaded {
    pub runtime: Runtime,
    pub routes: BTreeMap<String, Route>,
}

/// Everything a request handler needs.
pub struct Api {
    pub metrics: Arc<Metrics>,
    pub outbox: Option<Arc<Outbox>>,
    /// The Greengrass nucleus, for routes with a local topic.
    nucleus: Option<Arc<Nucleus>>,
    loaded: OnceLock<Arc<Loaded>>,
    workers: Pool,
    max_body: usize,
    thing: Option<String>,
    /// Callers must send `Authorization: Bearer <token>` (all but `/healthz`).
    token: Option<String>,
    stopping: AtomicBool,
}

type Answer = Response<Full<Bytes>>;

/// Headers that describe the HTTP exchange, not the request.
pub const HOP_BY_HOP: [&str; 7] = [
    "host",
    "content-length",
    "content-type",
    "connection",
    "transfer-encoding",
    "expect",
    "keep-alive",
];

fn json_answer(status: StatusCode, body: &Value) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error_answer(status: StatusCode, kind: &str, message: impl Into<String>) -> Answer {
    json_answer(
        status,
        &json!({ "error": { "kind": kind, "message": message.into() } }),
    )
}

/// A 503 for a route too busy to answer in time, with when to try again.
fn busy(mut answer: Answer, after: Duration) -> Answer {
    let secs = after.as_secs_f64().ceil().max(1.0) as u64;
    answer
        .headers_mut()
        .insert(hyper::header::RETRY_AFTER, HeaderValue::from(secs));
    answer
}

/// An answer given before the request's body was read: the connection
/// cannot carry another request (the unread body is in the way), so the
/// answer says it closes instead of the client finding out on its next one.
fn early(mut answer: Answer) -> Answer {
    answer
        .headers_mut()
        .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    answer
}

fn method_not_allowed(allow: &'static str) -> Answer {
    let mut r = error_answer(
        StatusCode::METHOD_NOT_ALLOWED,
        "method",
        format!("this path answers {allow} only"),
    );
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

/// The HTTP status for a call error: the caller's fault is a 4xx.
pub fn status(e: &CallError) -> StatusCode {
    match e {
        CallError::Refused(_) => StatusCode::PAYLOAD_TOO_LARGE,
        e if e.is_caller_error() => StatusCode::UNPROCESSABLE_ENTITY,
        CallError::Deadline(_) => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An HTTP request as the component's `request`: `Content-Type` is its
/// content type, every other header not about the exchange an attribute (in
/// order, repeats kept). A header that is not visible ASCII, or a body
/// declared JSON that is not, is the caller's mistake: `(kind, message)`.
pub fn to_request(headers: &HeaderMap, body: Vec<u8>) -> Result<Request, (&'static str, String)> {
    let mut content_type = String::new();
    let mut attributes = Vec::new();
    for (name, value) in headers {
        let Ok(value) = value.to_str() else {
            return Err((
                "bad-header",
                format!("header '{name}' is not visible ASCII text"),
            ));
        };
        if name == CONTENT_TYPE {
            content_type = value.to_string();
        } else if !HOP_BY_HOP.contains(&name.as_str()) {
            attributes.push((name.as_str().to_string(), value.to_string()));
        }
    }
    if is_json(&content_type)
        && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body)
    {
        return Err((
            "bad-json",
            format!("the body is declared {content_type} but is not JSON: {e}"),
        ));
    }
    Ok(Request {
        content_type,
        body,
        attributes,
        truncated: false,
    })
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

impl Api {
    pub fn new(
        metrics: Arc<Metrics>,
        outbox: Option<Arc<Outbox>>,
        nucleus: Option<Arc<Nucleus>>,
        workers: Pool,
        max_body: usize,
        thing: Option<String>,
        token: Option<String>,
    ) -> Api {
        Api {
            metrics,
            outbox,
            nucleus,
            loaded: OnceLock::new(),
            workers,
            max_body,
            thing,
            token,
            stopping: AtomicBool::new(false),
        }
    }

    /// Whether the request carries the token (always, when there is none).
    fn authorised(&self, req: &HttpRequest<Incoming>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let sent = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Compared in constant time, so the answer's timing does not leak a prefix.
        sent.len() == token.len()
            && sent
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// Marks loading done: from now on `/readyz` says ready.
    pub fn set_loaded(&self, loaded: Arc<Loaded>) {
        let _ = self.loaded.set(loaded);
    }

    pub fn loaded(&self) -> Option<&Arc<Loaded>> {
        self.loaded.get()
    }

    /// Shutting down: not ready any more (requests in flight still finish).
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    pub async fn handle(self: Arc<Self>, req: HttpRequest<Incoming>) -> Result<Answer, Infallible> {
        let path = req.uri().path().to_string();
        if path != "/healthz" && !self.authorised(&req) {
            self.metrics.error("-", "unauthorised");
            let mut answer = error_answer(
                StatusCode::UNAUTHORIZED,
                "unauthorised",
                "this API needs `Authorization: Bearer <token>` (the daemon's [api] token_file)",
            );
            answer
                .headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
            return Ok(early(answer));
        }
        let answer = match path.as_str() {
            "/healthz" | "/readyz" | "/metrics" if req.method() != Method::GET => {
                early(method_not_allowed("GET"))
            }
            "/healthz" => json_answer(StatusCode::OK, &json!({ "status": "ok" })),
            "/readyz" => {
                if self.loaded.get().is_some() && !self.stopping.load(Ordering::Relaxed) {
                    json_answer(StatusCode::OK, &json!({ "status": "ready" }))
                } else {
                    error_answer(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not-ready",
                        "loading or stopping",
                    )
                }
            }
            "/metrics" => {
                let batches = self
                    .loaded
                    .get()
                    .map(|l| l.runtime.graphs().batch_stats())
                    .unwrap_or_default();
                let text = self
                    .metrics
                    .render(self.outbox.as_ref().map(|o| o.stats()), &batches);
                let mut r = Response::new(Full::new(Bytes::from(text)));
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                r
            }
            p => match p.strip_prefix("/v1/infer/") {
                Some(_) if req.method() != Method::POST => early(method_not_allowed("POST")),
                Some(route) => {
                    let route = route.to_string();
                    self.infer(&route, req).await
                }
                None => early(error_answer(
                    StatusCode::NOT_FOUND,
                    "not-found",
                    format!("no such path '{p}': try POST /v1/infer/{{route}}"),
                )),
            },
        };
        Ok(answer)
    }

    async fn infer(self: Arc<Self>, route: &str, req: HttpRequest<Incoming>) -> Answer {
        let fail = |status: StatusCode, kind: &'static str, message: String| {
            self.metrics.error(route, kind);
            error_answer(status, kind, message)
        };
        let Some(loaded) = self.loaded.get().cloned() else {
            return early(fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "not-ready",
                "components and models are still loading".into(),
            ));
        };
        if !loaded.routes.contains_key(route) {
            let known: Vec<&str> = loaded.routes.keys().map(String::as_str).collect();
            return early(fail(
                StatusCode::NOT_FOUND,
                "unknown-route",
                format!("no route '{route}' (routes: {})", known.join(", ")),
            ));
        }
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body as u64) {
            return early(fail(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                format!(
                    "body of {} bytes is over the {} byte limit",
                    declared.unwrap_or(0),
                    self.max_body
                ),
            ));
        }
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, self.max_body).collect().await {
            Ok(b) => b.to_bytes().to_vec(),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                return fail(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too-large",
                    format!("body is over the {} byte limit", self.max_body),
                );
            }
            Err(e) => {
                return fail(
                    StatusCode::BAD_REQUEST,
                    "bad-body",
                    format!("reading the body: {e}"),
                );
            }
        };
        let request = match to_request(&parts.headers, body) {
            Ok(request) => request,
            Err((kind, message)) => return fail(StatusCode::BAD_REQUEST, kind, message),
        };
        let started = Instant::now();
        let deadline = loaded.routes[route].deployment.limits.deadline;
        let until = started + deadline;
        let in_flight = InFlight::new(&self.metrics);
        let api = self.clone();
        let name = route.to_string();
        // Wait for this route's turn first: a route whose calls hang does not
        // take every worker from the others.
        let turns = &loaded.routes[route].turns;
        let too_busy = |message: String, after: Duration| {
            busy(
                fail(StatusCode::SERVICE_UNAVAILABLE, "busy", message),
                after,
            )
        };
        let turn = match turns.take(started, until).await {
            Ok(turn) => turn,
            Err(NoTurn::Closed) => {
                return fail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "stopping",
                    "the route is closed".into(),
                );
            }
            Err(NoTurn::Ahead { ahead, wait }) => {
                return too_busy(
                    format!(
                        "route '{route}' cannot answer within its {} ms deadline: its turns \
                         are taken and {ahead} more calls wait ahead of this one (about {} ms)",
                        deadline.as_millis(),
                        wait.as_millis()
                    ),
                    wait,
                );
            }
            Err(NoTurn::Waited(waited)) => {
                return too_busy(
                    format!(
                        "route '{route}' had no free turn within its {} ms deadline \
                         (waited {} ms)",
                        deadline.as_millis(),
                        waited.as_millis()
                    ),
                    deadline,
                );
            }
        };
        let loaded_for_call = loaded.clone();
        let done = self
            .workers
            .run_by(until, move || {
                let t = Instant::now();
                let r = api.call(&loaded_for_call, &name, &request, until);
                (r, t.elapsed())
            })
            .await;
        drop(turn);
        drop(in_flight);
        self.metrics.request(route, started.elapsed());
        let done = done.map(|(r, took)| {
            turns.ran(took);
            r
        });
        match done {
            Ok(Ok((status, body))) => json_answer(status, &body),
            Ok(Err(e)) => {
                self.metrics.error(route, e.kind());
                let status = status(&e);
                // The component's failures are the operator's business; the
                // caller's mistakes are counted, not logged.
                if status.is_server_error() {
                    crate::log::warn(
                        "call failed",
                        json!({ "route": route, "kind": e.kind(), "error": e.to_string() }),
                    );
                }
                json_answer(status, &report::error(&e))
            }
            Err(e @ PoolError::Stopped) => {
                fail(StatusCode::SERVICE_UNAVAILABLE, "stopping", e.to_string())
            }
            Err(PoolError::Late) => too_busy(
                format!(
                    "route '{route}': no worker was free within its {} ms deadline \
                     (the workers are busy with other routes)",
                    deadline.as_millis()
                ),
                deadline,
            ),
            Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, "host", e.to_string()),
        }
    }

    /// Runs one call and, for a cloud route, commits its outcome to the
    /// outbox before answering: 200, or 507 when the outcome could not be
    /// committed (a full outbox under reject-new, a full disk, a store
    /// error), with the outcome still in the body. A route with a local
    /// topic also queues it for the nucleus's local pub/sub (best effort).
    fn call(
        &self,
        loaded: &Loaded,
        name: &str,
        request: &Request,
        until: Instant,
    ) -> Result<(StatusCode, Value), CallError> {
        let route = &loaded.routes[name];
        let outcome =
            loaded
                .runtime
                .call_until(&route.prepared, &route.deployment, request, until)?;
        let mut body = report::outcome(&outcome);
        let mut status = StatusCode::OK;
        let cloud = route.cloud_topic.as_ref().zip(self.outbox.as_ref());
        let local = route.local_topic.as_ref().zip(self.nucleus.as_ref());
        if cloud.is_none() && local.is_none() {
            return Ok((status, body));
        }
        let id = match outbox::new_id() {
            Ok(id) => id,
            Err(e) => {
                self.metrics.error(name, "outbox");
                let key = if cloud.is_some() { "outbox" } else { "local" };
                body[key] = json!({ "error": e.to_string() });
                return Ok((StatusCode::INSUFFICIENT_STORAGE, body));
            }
        };
        // The message carries the same outcome JSON as the answer.
        let message = json!({
            "id": id,
            "thing": self.thing,
            "route": name,
            "component": route.component,
            "ts": crate::log::timestamp(SystemTime::now()),
            "outcome": body,
        })
        .to_string()
        .into_bytes();
        if let Some((topic, nucleus)) = local {
            // Queued, not yet published: local pub/sub is best effort.
            body["local"] = match nucleus.publish_local(topic, message.clone()) {
                Ok(()) => json!({ "id": id, "topic": topic }),
                Err(why) => {
                    crate::log::warn(
                        "outcome not queued for local pub/sub",
                        json!({ "route": name, "topic": topic, "error": why }),
                    );
                    json!({ "error": why })
                }
            };
        }
        if let Some((topic, outbox)) = cloud {
            body["outbox"] = match outbox.push(&id, topic, &message) {
                Ok(_) => json!({ "id": id, "topic": topic }),
                Err(e) => {
                    self.metrics.error(name, "outbox");
                    crate::log::warn(
                        "outcome not committed to the outbox",
                        json!({ "route": name, "error": e.to_string() }),
                    );
                    status = StatusCode::INSUFFICIENT_STORAGE;
                    json!({ "error": e.to_string() })
                }
            };
        }
        Ok((status, body))
    }
}

/// Counts a call in flight until dropped (also when the caller goes away
/// and the handler is dropped mid-wait).
struct InFlight<'a>(&'a Metrics);

impl<'a> InFlight<'a> {
    fn new(m: &'a Metrics) -> Self {
        m.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(m)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the API accepts connections on.
pub enum Listener {
    Tcp(tokio::net::TcpListener),
    /// A Unix domain socket, and its path (removed when serving ends).
    Unix(tokio::net::UnixListener, std::path::PathBuf),
}

impl Listener {
    /// Binds `listen`; a Unix socket gets `mode` as its permissions. A stale
    /// socket left by a daemon that died is replaced; a socket another
    /// process answers on, or a file that is not a socket, is refused.
    pub async fn bind(listen: &Listen, mode: u32) -> std::io::Result<Listener> {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        match listen {
            Listen::Tcp(addr) => Ok(Listener::Tcp(tokio::net::TcpListener::bind(addr).await?)),
            Listen::Unix(path) => {
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    let in_use = || std::os::unix::net::UnixStream::connect(path).is_ok();
                    if !meta.file_type().is_socket() {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::AlreadyExists,
                            "the path exists and is not a socket (not removing it)",
                        ));
                    } else if in_use() {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::AddrInUse,
                            "another process answers on this socket",
                        ));
                    }
                    std::fs::remove_file(path)?;
                }
                let listener = tokio::net::UnixListener::bind(path)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
                Ok(Listener::Unix(listener, path.clone()))
            }
        }
    }

    /// What to tell callers: `127.0.0.1:8470` or `unix:/path`.
    pub fn address(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map_or_else(|e| format!("tcp ({e})"), |a| a.to_string()),
            Listener::Unix(_, path) => format!("unix:{}", path.display()),
        }
    }
}

/// Serves one connection until it closes or the shutdown ends it.
fn connection<S>(
    api: &Arc<Api>,
    stream: S,
    graceful: &hyper_util::server::graceful::GracefulShutdown,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper::server::conn::http1;
    use hyper_util::rt::{TokioIo, TokioTimer};
    let api = api.clone();
    let service = hyper::service::service_fn(move |req| api.clone().handle(req));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        // A client that shuts its side after sending still gets its answer.
        .half_close(true)
        .serve_connection(TokioIo::new(stream), service);
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        let _ = conn.await;
    });
}

/// Serves connections from `listener` until `stop` turns true, then waits up
/// to `grace` for requests in flight.
pub async fn serve(
    api: Arc<Api>,
    listener: Listener,
    mut stop: tokio::sync::watch::Receiver<bool>,
    grace: Duration,
) {
    use hyper_util::server::graceful::GracefulShutdown;

    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            a = async {
                match &listener {
                    Listener::Tcp(l) => l.accept().await.map(|(s, _)| connection(&api, s, &graceful)),
                    Listener::Unix(l, _) => l.accept().await.map(|(s, _)| connection(&api, s, &graceful)),
                }
            } => a,
            _ = crate::uplink::stopped(&mut stop) => break,
        };
        if let Err(e) = accepted {
            // Out of descriptors and the like: wait, keep serving.
            crate::log::warn("accepting a connection", json!({ "error": e.to_string() }));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    if let Listener::Unix(_, path) = &listener {
        let _ = std::fs::remove_file(path);
    }
    drop(listener);
    api.set_stopping();
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => {
            crate::log::warn("shutdown grace period over, requests still in flight", json!({}));
        }
    }
}
