//! Plugging the `wasi:nn` provider into a component, as `wac plug` does.

use wac_graph::types::Package;
use wac_graph::{CompositionGraph, EncodeOptions};

/// The component with its `wasi:nn` imports satisfied by the provider. The
/// result imports what is left (WASI, state, config, the host interface and
/// the provider's `verge:inference/models`) and exports the handler.
pub fn plug_nn(component: &[u8], provider: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut graph = CompositionGraph::new();
    let socket = Package::from_bytes(
        "verge:component",
        None,
        component.to_vec(),
        graph.types_mut(),
    )
    .map_err(|e| anyhow::anyhow!("the component is not a valid component: {e:#}"))?;
    let socket = graph.register_package(socket)?;
    let plug = Package::from_bytes(
        "verge:nn-provider",
        None,
        provider.to_vec(),
        graph.types_mut(),
    )
    .map_err(|e| anyhow::anyhow!("the wasi:nn provider is not a valid component: {e:#}"))?;
    let plug = graph.register_package(plug)?;
    match wac_graph::plug(&mut graph, vec![plug], socket) {
        Ok(()) => {}
        // A component that does no inference needs no provider.
        Err(wac_graph::PlugError::NoPlugHappened) => return Ok(component.to_vec()),
        Err(e) => {
            return Err(anyhow::anyhow!(
                "plugging wasi:nn into the component: {e:#}"
            ));
        }
    }
    Ok(graph.encode(EncodeOptions::default())?)
}
