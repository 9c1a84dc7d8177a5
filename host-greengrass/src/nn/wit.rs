//! The `wasi:nn` WIT glue of the device host, on the vendored WIT: every
//! resource is a `verge-nn` value in the store's table, and every error
//! reaches the component with its real code and message (wasmtime-wasi-nn's
//! glue turns them all into `runtime-error`).

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use super::Graphs;
use verge_nn::{Context, ErrorCode, Graph, NnError, Tensor, policy};

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "wasi:nn/ml",
        with: {
            "wasi:nn/tensor.tensor": verge_nn::Tensor,
            "wasi:nn/graph.graph": verge_nn::Graph,
            "wasi:nn/inference.graph-execution-context": verge_nn::Context,
            "wasi:nn/errors.error": verge_nn::NnError,
        },
        imports: { default: trappable },
    });
}

use generated::wasi::nn::{errors, graph, inference, tensor};

/// What one store's `wasi:nn` reaches: its resource table, the deployed
/// models, and what the call may hold in the host.
pub struct NnView<'a> {
    pub table: &'a mut ResourceTable,
    pub graphs: &'a Graphs,
    pub budget: &'a mut NnBudget,
}

/// What one call's `wasi:nn` holds in the host, outside the component's
/// linear memory (so outside the store's memory limiter): tensor bytes,
/// bounded; going over ends the call with [`QuotaExceeded`]. (How many
/// resources it holds is bounded by the store's resource table.)
#[derive(Debug)]
pub struct NnBudget {
    max_bytes: usize,
    bytes: usize,
}

impl NnBudget {
    /// Tensor bytes in the host bounded by `max_bytes`.
    pub fn new(max_bytes: usize) -> NnBudget {
        NnBudget {
            max_bytes,
            bytes: 0,
        }
    }

    fn take(&mut self, bytes: usize) -> wasmtime::Result<()> {
        let total = self.bytes.saturating_add(bytes);
        if total > self.max_bytes {
            return Err(QuotaExceeded(format!(
                "wasi:nn tensors would hold {total} bytes in the host; a call may hold {}",
                self.max_bytes
            ))
            .into());
        }
        self.bytes = total;
        Ok(())
    }

    fn give_back(&mut self, bytes: usize) {
        self.bytes = self.bytes.saturating_sub(bytes);
    }
}

/// A call went over what it may hold in the host: it ends, the host goes on.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct QuotaExceeded(pub String);

struct HasNn;

impl HasData for HasNn {
    type Data<'a> = NnView<'a>;
}

/// Adds `wasi:nn` to a linker; `view` gives the store's table and models.
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> NnView<'_>,
) -> wasmtime::Result<()> {
    tensor::add_to_linker::<T, HasNn>(linker, view)?;
    graph::add_to_linker::<T, HasNn>(linker, view)?;
    inference::add_to_linker::<T, HasNn>(linker, view)?;
    errors::add_to_linker::<T, HasNn>(linker, view)?;
    Ok(())
}

type Answer<T> = wasmtime::Result<Result<Resource<T>, Resource<NnError>>>;

impl NnView<'_> {
    /// Puts `value` in the table, counted against the budget with `bytes`.
    fn push<T: Send + 'static>(&mut self, value: T, bytes: usize) -> wasmtime::Result<Resource<T>> {
        self.budget.take(bytes)?;
        Ok(self.table.push(value)?)
    }

    /// Takes a resource out of the table and gives its share of the budget back.
    fn delete<T: 'static>(
        &mut self,
        r: Resource<T>,
        bytes: impl Fn(&T) -> usize,
    ) -> wasmtime::Result<T> {
        let value = self.table.delete(r)?;
        self.budget.give_back(bytes(&value));
        Ok(value)
    }

    /// Puts `value` in the table, or the error when there is one.
    fn answer<T: Send + 'static>(&mut self, value: Result<T, NnError>) -> Answer<T> {
        Ok(match value {
            Ok(v) => Ok(self.push(v, 0)?),
            Err(e) => Err(self.push(e, 0)?),
        })
    }
}

fn tensor_bytes(t: &Tensor) -> usize {
    t.data.len()
}

fn nothing<T>(_: &T) -> usize {
    0
}

use tensor::TensorType;
verge_nn::tensor_type_conversions!(TensorType);

impl tensor::Host for NnView<'_> {}

impl tensor::HostTensor for NnView<'_> {
    fn new(
        &mut self,
        dims: Vec<u32>,
        ty: tensor::TensorType,
        data: Vec<u8>,
    ) -> wasmtime::Result<Resource<Tensor>> {
        let bytes = data.len();
        self.push(Tensor::new(dims, element_type(ty), data), bytes)
    }

    fn dimensions(&mut self, t: Resource<Tensor>) -> wasmtime::Result<Vec<u32>> {
        Ok(self.table.get(&t)?.dims.clone())
    }

    fn ty(&mut self, t: Resource<Tensor>) -> wasmtime::Result<tensor::TensorType> {
        Ok(tensor_type(self.table.get(&t)?.ty))
    }

    fn data(&mut self, t: Resource<Tensor>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.table.get(&t)?.data.clone())
    }

    fn drop(&mut self, t: Resource<Tensor>) -> wasmtime::Result<()> {
        self.delete(t, tensor_bytes)?;
        Ok(())
    }
}

impl graph::Host for NnView<'_> {
    fn load(
        &mut self,
        _builders: Vec<Vec<u8>>,
        _encoding: graph::GraphEncoding,
        _target: graph::ExecutionTarget,
    ) -> Answer<Graph> {
        self.answer(Err(policy::guest_bytes_refused()))
    }

    fn load_by_name(&mut self, name: String) -> Answer<Graph> {
        let graph = self.graphs.by_name(&name);
        self.answer(graph)
    }
}

impl graph::HostGraph for NnView<'_> {
    fn init_execution_context(&mut self, g: Resource<Graph>) -> Answer<Context> {
        let context = self.table.get(&g)?.context();
        self.answer(Ok(context))
    }

    fn drop(&mut self, g: Resource<Graph>) -> wasmtime::Result<()> {
        self.delete(g, nothing)?;
        Ok(())
    }
}

impl inference::Host for NnView<'_> {}

impl inference::HostGraphExecutionContext for NnView<'_> {
    fn compute(
        &mut self,
        ctx: Resource<Context>,
        inputs: Vec<(String, Resource<Tensor>)>,
    ) -> wasmtime::Result<Result<Vec<(String, Resource<Tensor>)>, Resource<NnError>>> {
        // The tensors are the component's to give: they leave its table.
        let mut named = Vec::with_capacity(inputs.len());
        for (name, t) in inputs {
            named.push((name, self.delete(t, tensor_bytes)?));
        }
        match self.table.get_mut(&ctx)?.compute_named(named) {
            Ok(outputs) => {
                let mut out = Vec::with_capacity(outputs.len());
                for (name, t) in outputs {
                    let bytes = t.data.len();
                    out.push((name, self.push(t, bytes)?));
                }
                Ok(Ok(out))
            }
            Err(e) => Ok(Err(self.push(e, 0)?)),
        }
    }

    fn drop(&mut self, ctx: Resource<Context>) -> wasmtime::Result<()> {
        self.delete(ctx, nothing)?;
        Ok(())
    }
}

impl errors::Host for NnView<'_> {}

impl errors::HostError for NnView<'_> {
    fn code(&mut self, e: Resource<NnError>) -> wasmtime::Result<errors::ErrorCode> {
        use errors::ErrorCode as W;
        Ok(match self.table.get(&e)?.code {
            ErrorCode::InvalidArgument => W::InvalidArgument,
            ErrorCode::InvalidEncoding => W::InvalidEncoding,
            ErrorCode::Timeout => W::Timeout,
            ErrorCode::RuntimeError => W::RuntimeError,
            ErrorCode::UnsupportedOperation => W::UnsupportedOperation,
            ErrorCode::TooLarge => W::TooLarge,
            ErrorCode::NotFound => W::NotFound,
            ErrorCode::Security => W::Security,
            ErrorCode::Unknown => W::Unknown,
        })
    }

    fn data(&mut self, e: Resource<NnError>) -> wasmtime::Result<String> {
        Ok(self.table.get(&e)?.data())
    }

    fn drop(&mut self, e: Resource<NnError>) -> wasmtime::Result<()> {
        self.delete(e, nothing)?;
        Ok(())
    }
}
