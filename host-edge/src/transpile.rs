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
    for (path, bytes) in &mut files {
        if path.ends_with(".js") {
            *bytes = once_per_process(bytes);
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Transpiled {
        files,
        imports: t.imports,
    })
}

/// js-component-bindgen 2.11's glue reads `process.env.JCO_DEBUG` in
/// `_debugLog`, which it calls several times at every crossing of the
/// component boundary (a `process.env` read goes through libc's environment
/// each time). The variable is read once instead; without a match (another
/// generator version) the glue is left as it is.
fn once_per_process(js: &[u8]) -> Vec<u8> {
    const PER_CALL: &str = "  const _debugLog = (...args) => {\n    if (!globalThis?.process?.env?.JCO_DEBUG) { return; }\n    console.debug(...args);\n  };";
    const ONCE: &str = "  // verge-edge: JCO_DEBUG is read once, not at every crossing.\n  const _debugLog = globalThis?.process?.env?.JCO_DEBUG ? (...args) => console.debug(...args) : () => {};";
    match std::str::from_utf8(js) {
        Ok(text) if text.contains(PER_CALL) => text.replacen(PER_CALL, ONCE, 1).into_bytes(),
        _ => js.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_debug_switch_is_read_once() {
        let glue = "x\n  const _debugLog = (...args) => {\n    if (!globalThis?.process?.env?.JCO_DEBUG) { return; }\n    console.debug(...args);\n  };\ny";
        let out = String::from_utf8(super::once_per_process(glue.as_bytes())).unwrap();
        assert!(out.contains("JCO_DEBUG ? (...args) => console.debug(...args) : () => {};"));
        assert!(!out.contains("if (!globalThis"));
        assert_eq!(super::once_per_process(b"other"), b"other");
    }
}
