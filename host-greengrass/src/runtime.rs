//! Running components: one engine per host, one store per call.
//!
//! Every call gets a fresh store with a memory bound and a deadline (epoch
//! interruption), so a trap, an endless loop or a runaway allocation ends that
//! call with an error and leaves the host as it was.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTableError;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};

pub use crate::limits::{DEFAULT_MAX_RESOURCES, Limits, too_many_resources};
use crate::nn::{self, Graphs};
use crate::state::wit::{KeyValueView, StateCtx};
use crate::state::{self, MemoryStore, QuotaStore, StateQuota, StateStore};

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        inline: "
            package verge:device-host;
            world guest {
                import verge:inference/host@0.1.0;
                export verge:inference/handler@0.1.0;
            }
        ",
        world: "verge:device-host/guest",
    });
}

pub use bindings::verge::inference::host::{Limits as GuestLimits, Placement};
pub use bindings::verge::inference::types::{Error as GuestError, Outcome, Request, Response};

/// How often the deadline clock ticks.
const TICK: Duration = Duration::from_millis(5);

/// Bytes of host memory one table element takes (a function reference).
const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

/// Holds a store's linear memories and tables, however many the component
/// declares, to one budget together (wasmtime's own `StoreLimits` bounds each
/// memory on its own, and tables not at all).
struct CallLimiter {
    left: usize,
    bound: usize,
}

/// A memory or table grew past the call's memory bound.
#[derive(Debug, thiserror::Error)]
#[error("linear memory and tables over the call's bound of {0} bytes")]
struct OverMemory(usize);

impl CallLimiter {
    fn new(bound: usize) -> Self {
        CallLimiter { left: bound, bound }
    }

    fn grow(&mut self, bytes: usize) -> wasmtime::Result<bool> {
        if bytes > self.left {
            return Err(OverMemory(self.bound).into());
        }
        self.left -= bytes;
        Ok(true)
    }
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(desired.saturating_sub(current))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(
            desired
                .saturating_sub(current)
                .saturating_mul(TABLE_ELEMENT_BYTES),
        )
    }

    // Counts, each far above what a real component has; the bytes above are
    // what bounds them.
    fn instances(&self) -> usize {
        1000
    }
    fn tables(&self) -> usize {
        1000
    }
    fn memories(&self) -> usize {
        100
    }
}

/// Why a call produced no outcome.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The component answered with its own error.
    #[error("{}", describe_guest_error(.0))]
    Component(GuestError),
    /// The request was refused before the component ran.
    #[error("request refused: {0}")]
    Refused(String),
    #[error("component stopped at its {0:?} deadline")]
    Deadline(Duration),
    #[error("component exceeded its memory bound of {0} bytes")]
    Memory(usize),
    /// Over what a call may hold in the host (wasi:nn tensors and resources).
    #[error("component exceeded a host quota: {0}")]
    Quota(String),
    #[error("component trapped: {0}")]
    Trap(String),
    #[error("component could not be instantiated: {0}")]
    Instantiate(String),
}

fn describe_guest_error(e: &GuestError) -> String {
    match e {
        GuestError::InvalidInput(m) => format!("invalid input: {m}"),
        GuestError::Model(m) => format!("model error: {m}"),
        GuestError::Internal(m) => format!("internal error: {m}"),
    }
}

impl CallError {
    /// A short machine-readable kind.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Component(GuestError::InvalidInput(_)) => "invalid-input",
            CallError::Component(GuestError::Model(_)) => "model",
            CallError::Component(GuestError::Internal(_)) => "internal",
            CallError::Refused(_) => "refused",
            CallError::Deadline(_) => "deadline",
            CallError::Memory(_) => "memory",
            CallError::Quota(_) => "quota",
            CallError::Trap(_) => "trap",
            CallError::Instantiate(_) => "instantiate",
        }
    }

    /// Whether the caller (rather than the component or host) is at fault.
    pub fn is_caller_error(&self) -> bool {
        matches!(
            self,
            CallError::Component(GuestError::InvalidInput(_)) | CallError::Refused(_)
        )
    }
}

/// What one store holds. Components get no preopened directory, no
/// environment, no network: only what this struct provides.
pub struct StoreData {
    wasi: WasiCtx,
    table: ResourceTable,
    graphs: Graphs,
    nn_budget: nn::wit::NnBudget,
    keyvalue: StateCtx,
    config: Arc<WasiConfigVariables>,
    limits: CallLimiter,
    placement: Placement,
    call: Limits,
    /// When the call's time is up.
    until: Instant,
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::verge::inference::host::Host for StoreData {
    fn get_placement(&mut self) -> Placement {
        self.placement
    }

    fn get_limits(&mut self) -> GuestLimits {
        GuestLimits {
            max_body_bytes: self.call.max_body_bytes as u64,
            deadline_ms: self.call.deadline.as_millis() as u64,
            memory_bytes: self.call.memory_bytes as u64,
        }
    }

    fn remaining_ms(&mut self) -> u64 {
        self.until
            .saturating_duration_since(Instant::now())
            .as_millis() as u64
    }
}

impl bindings::verge::inference::types::Host for StoreData {}

struct HasSelf;
impl wasmtime::component::HasData for HasSelf {
    type Data<'a> = &'a mut StoreData;
}

/// The engine, the linker and the shared graphs. Cheap to share behind an `Arc`.
pub struct Runtime {
    engine: Engine,
    linker: Linker<StoreData>,
    graphs: Graphs,
    ticking: Arc<AtomicBool>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticking.store(false, Ordering::Relaxed);
    }
}

impl Runtime {
    pub fn new(graphs: Graphs) -> wasmtime::Result<Runtime> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        nn::wit::add_to_linker(&mut linker, |s: &mut StoreData| nn::wit::NnView {
            table: &mut s.table,
            graphs: &s.graphs,
            budget: &mut s.nn_budget,
        })?;
        state::wit::add_to_linker(&mut linker, |s: &mut StoreData| KeyValueView {
            table: &mut s.table,
            ctx: &s.keyvalue,
        })?;
        wasmtime_wasi_config::add_to_linker(&mut linker, |s: &mut StoreData| {
            WasiConfig::new(&s.config)
        })?;
        bindings::verge::inference::host::add_to_linker::<StoreData, HasSelf>(&mut linker, |s| s)?;
        bindings::verge::inference::types::add_to_linker::<StoreData, HasSelf>(&mut linker, |s| s)?;

        // The deadline clock: a thread that advances the engine's epoch
        // until the runtime is dropped.
        let ticking = Arc::new(AtomicBool::new(true));
        let (flag, ticker) = (ticking.clone(), engine.weak());
        std::thread::Builder::new()
            .name("verge-epoch".into())
            .spawn(move || {
                while flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    match ticker.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| wasmtime::format_err!("starting the epoch thread: {e}"))?;
        Ok(Runtime {
            engine,
            linker,
            graphs,
            ticking,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn graphs(&self) -> &Graphs {
        &self.graphs
    }

    /// Compiles a component and resolves its imports once, so that each
    /// call only instantiates.
    pub fn prepare(&self, component: &Component) -> Result<Prepared, CallError> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| CallError::Instantiate(format!("{e:#}")))?;
        let pre = bindings::GuestPre::new(pre.clone())
            .map_err(|e| CallError::Instantiate(format!("{e:#}")))?;
        Ok(Prepared { pre })
    }

    /// Runs one request through a prepared component in a fresh store,
    /// within the deployment's deadline.
    pub fn call(
        &self,
        prepared: &Prepared,
        deployment: &Deployment,
        request: &Request,
    ) -> Result<Outcome, CallError> {
        let until = Instant::now() + deployment.limits.deadline;
        self.call_until(prepared, deployment, request, until)
    }

    /// [`Runtime::call`], stopped at `until` (a caller that already waited
    /// for a worker has only the rest of its deadline): the component's
    /// `remaining-ms` counts down to it; `get-limits` still says the
    /// deployment's deadline.
    pub fn call_until(
        &self,
        prepared: &Prepared,
        deployment: &Deployment,
        request: &Request,
        until: Instant,
    ) -> Result<Outcome, CallError> {
        let limits = deployment.limits;
        if request.body.len() > limits.max_body_bytes {
            return Err(CallError::Refused(format!(
                "body of {} bytes is over this host's {} byte limit",
                request.body.len(),
                limits.max_body_bytes
            )));
        }
        let mut table = ResourceTable::new();
        table.set_max_capacity(limits.max_resources);
        let data = StoreData {
            wasi: WasiCtx::builder().build(),
            table,
            graphs: self.graphs.clone(),
            // Tensors in the host count against the same bound as linear memory.
            nn_budget: nn::wit::NnBudget::new(limits.tensor_bytes),
            keyvalue: match &deployment.state {
                Some((store, namespace)) => StateCtx::new(store.clone(), namespace),
                // One-shot runs: state lives for one instance, within the default budget.
                None => StateCtx::new(
                    Arc::new(QuotaStore::new(
                        Arc::new(MemoryStore::default()),
                        StateQuota::default(),
                        Arc::default(),
                    )),
                    "",
                ),
            },
            config: deployment.config.clone(),
            limits: CallLimiter::new(limits.memory_bytes),
            placement: deployment.placement,
            call: limits,
            until,
        };
        let mut store = Store::new(&self.engine, data);
        store.limiter(|s| &mut s.limits);
        let left = until.saturating_duration_since(Instant::now());
        let ticks = left.as_nanos().div_ceil(TICK.as_nanos()).max(1) as u64;
        store.set_epoch_deadline(ticks);

        let result = prepared.pre.instantiate(&mut store).and_then(|guest| {
            guest
                .verge_inference_handler()
                .call_handle(&mut store, request)
        });
        match result {
            Ok(Ok(outcome)) => {
                let bytes = outcome_bytes(&outcome);
                if bytes > limits.max_output_bytes {
                    return Err(CallError::Quota(format!(
                        "the outcome is {bytes} bytes; a call may return {}",
                        limits.max_output_bytes
                    )));
                }
                Ok(outcome)
            }
            Ok(Err(e)) => Err(CallError::Component(e)),
            Err(e) => Err(trap(e, &limits)),
        }
    }
}

fn trap(e: wasmtime::Error, limits: &Limits) -> CallError {
    if let Some(q) = e.downcast_ref::<nn::wit::QuotaExceeded>() {
        return CallError::Quota(q.0.clone());
    }
    if e.downcast_ref::<OverMemory>().is_some() {
        return CallError::Memory(limits.memory_bytes);
    }
    if let Some(ResourceTableError::Full) = e.downcast_ref::<ResourceTableError>() {
        return CallError::Quota(too_many_resources(limits.max_resources));
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallError::Deadline(limits.deadline),
        _ => CallError::Trap(format!("{e:#}")),
    }
}

/// The bytes an outcome hands the host: its body and every string in it.
fn outcome_bytes(o: &Outcome) -> usize {
    let pairs =
        |list: &[(String, String)]| list.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    match o {
        Outcome::Respond(r) => r.body.len() + r.content_type.len() + pairs(&r.headers),
        Outcome::Annotate(list) => pairs(list),
        Outcome::Defer(reason) => reason.len(),
    }
}

/// A component ready to instantiate.
#[derive(Clone)]
pub struct Prepared {
    pre: bindings::GuestPre<StoreData>,
}

/// What a deployment grants a component.
#[derive(Clone)]
pub struct Deployment {
    pub placement: Placement,
    pub limits: Limits,
    pub config: Arc<WasiConfigVariables>,
    /// Where `wasi:keyvalue` keeps this deployment's state, and its
    /// namespace there; `None` gives each call a fresh in-memory store.
    pub state: Option<(Arc<dyn StateStore>, String)>,
}

impl Deployment {
    pub fn new(placement: Placement, limits: Limits, settings: &[(String, String)]) -> Self {
        let mut config = WasiConfigVariables::new();
        for (k, v) in settings {
            config.insert(k, v);
        }
        Deployment {
            placement,
            limits,
            config: Arc::new(config),
            state: None,
        }
    }

    /// Keeps this deployment's state in `store`, under `namespace`.
    pub fn with_state(mut self, store: Arc<dyn StateStore>, namespace: &str) -> Self {
        self.state = Some((store, namespace.to_string()));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Instantiates a core module under a `bound`-byte [`CallLimiter`].
    fn instantiate(wat: &str, bound: usize) -> wasmtime::Result<()> {
        let engine = Engine::default();
        let module = wasmtime::Module::new(&engine, wat::parse_str(wat).unwrap())?;
        let mut store = Store::new(&engine, CallLimiter::new(bound));
        store.limiter(|l| l);
        wasmtime::Instance::new(&mut store, &module, &[])?;
        Ok(())
    }

    fn over_memory(r: wasmtime::Result<()>) -> bool {
        r.is_err_and(|e| e.downcast_ref::<OverMemory>().is_some())
    }

    #[test]
    fn memories_and_tables_share_one_bound() {
        // 40 pages of 64 KiB = 2.5 MiB each: one fits under 4 MiB, two do not
        // (wasmtime's StoreLimits would let each memory have the whole bound).
        assert!(instantiate("(module (memory 40))", 4 << 20).is_ok());
        assert!(over_memory(instantiate(
            "(module (memory 40) (memory 40))",
            4 << 20
        )));
        // A table of a million functions is 8 MB of host memory.
        assert!(over_memory(instantiate(
            "(module (table 1000000 funcref))",
            4 << 20
        )));
        assert!(instantiate("(module (table 1000 funcref) (memory 40))", 4 << 20).is_ok());
    }
}
