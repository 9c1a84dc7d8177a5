//! The compact provider: models bundled with the package, read by name
//! through `verge:inference/models` and run by the compact engine in Wasm.

#![cfg(target_arch = "wasm32")]

use verge_nn::{Graph, NnError};
use verge_nn_provider::{Source, bundled_model};

struct Bundled;

impl Source for Bundled {
    fn load(name: &str) -> Result<Graph, NnError> {
        Graph::load(name, &verge_nn_compact::Compact, &bundled_model(name)?)
    }
}

verge_nn_provider::export_provider!(Bundled);
