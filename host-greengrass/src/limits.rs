//! The bounds of one call: what the runtime enforces and what the
//! host-side resources (wasi:nn, wasi:keyvalue) report when a call hits them.

use std::time::Duration;

/// The bounds of one call.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub deadline: Duration,
    /// Linear memories and tables, all of the component's together.
    pub memory_bytes: usize,
    pub max_body_bytes: usize,
    /// Bytes of `wasi:nn` tensors the call may hold in the host, outside its
    /// linear memory (inputs and outputs alike).
    pub tensor_bytes: usize,
    /// Host resources live at once: `wasi:nn` tensors, graphs, contexts and
    /// errors, `wasi:keyvalue` buckets, WASI streams and pollables.
    pub max_resources: usize,
    /// Bytes of the outcome the call may hand back (body, headers, text):
    /// the host answers with it, so it must not grow without end either.
    pub max_output_bytes: usize,
}

/// The default of [`Limits::max_resources`].
pub const DEFAULT_MAX_RESOURCES: usize = 4096;

impl Limits {
    /// A call's bounds with the host-side ones derived from its memory bound.
    pub fn new(deadline: Duration, memory_bytes: usize, max_body_bytes: usize) -> Limits {
        Limits {
            deadline,
            memory_bytes,
            max_body_bytes,
            tensor_bytes: memory_bytes,
            max_resources: DEFAULT_MAX_RESOURCES,
            max_output_bytes: memory_bytes / 4,
        }
    }
}

impl Limits {
    /// These bounds with the host-side ones a deployment sets, in MiB (and a
    /// count); `None` keeps the default derived from the memory bound.
    pub fn overridden(
        mut self,
        tensor_mb: Option<usize>,
        max_resources: Option<usize>,
        output_mb: Option<usize>,
    ) -> Limits {
        if let Some(mb) = tensor_mb {
            self.tensor_bytes = mb << 20;
        }
        if let Some(n) = max_resources {
            self.max_resources = n;
        }
        if let Some(mb) = output_mb {
            self.max_output_bytes = mb << 20;
        }
        self
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new(Duration::from_secs(10), 256 << 20, 64 << 20)
    }
}

/// Why a call that holds `max` host resources may not take another.
pub fn too_many_resources(max: usize) -> String {
    format!(
        "the component holds {max} host resources at once (wasi:nn tensors, graphs and contexts, \
         keyvalue buckets, streams), the most a call may"
    )
}
