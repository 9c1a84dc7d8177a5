//! The composed component as JavaScript + core Wasm (js-component-bindgen,
//! jco's Rust core: no Node needed at pack time).

use js_component_bindgen::{InstantiationMode, TranspileOpts};

/// Transpiled files, by path relative to the output folder.
pub struct Transpiled {
    pub files: Vec<(String, Vec<u8>)>,
    /// The interfaces the shim must provide.
    pub imports: Vec<String>,
}

/// Transpiles for Node ESM with an explicit `instantiate(getCoreModule,
/// imports)`: the shim compiles the core modules once per container and
/// re-instantiates only after a trap.
pub fn to_js(component: &[u8], name: &str) -> anyhow::Result<Transpiled> {
    let opts = TranspileOpts {
        name: name.to_string(),
        no_typescript: true,
        instantiation_mode: Some(InstantiationMode::Async),
        ..Default::default()
    };
    let t = js_component_bindgen::transpile(component, opts)
        .map_err(|e| anyhow::anyhow!("transpiling to JavaScript: {e:#}"))?;
    let mut files = t.files;
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Transpiled {
        files,
        imports: t.imports,
    })
}
