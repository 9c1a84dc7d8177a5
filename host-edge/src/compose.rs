//! Plugging the `wasi:nn` provider into a component, as `wac plug` does.

use wac_graph::types::Package;
use wac_graph::{CompositionGraph, EncodeOptions};

/// The component with its `wasi:nn` imports satisfied by the provider. The
/// result imports what is left (WASI, state, config, the host interface and
/// what the provider imports: `verge:inference/models` or `/engine`) and
/// exports the handler. `None` when the component does no inference.
pub fn plug_nn(component: &[u8], provider: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
    let mut graph = CompositionGraph::new();
    let mut register = |name: &str, what: &str, bytes: &[u8]| -> anyhow::Result<_> {
        let package = Package::from_bytes(name, None, bytes.to_vec(), graph.types_mut())
            .map_err(|e| anyhow::anyhow!("{what} is not a valid component: {e:#}"))?;
        Ok(graph.register_package(package)?)
    };
    let socket = register("verge:component", "the component", component)?;
    let plug = register("verge:nn-provider", "the wasi:nn provider", provider)?;
    match wac_graph::plug(&mut graph, vec![plug], socket) {
        Ok(()) => {}
        // A component that does no inference needs no provider.
        Err(wac_graph::PlugError::NoPlugHappened) => return Ok(None),
        Err(e) => {
            return Err(anyhow::anyhow!(
                "plugging wasi:nn into the component: {e:#}"
            ));
        }
    }
    Ok(Some(graph.encode(EncodeOptions::default())?))
}
