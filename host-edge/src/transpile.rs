//! The composed component as JavaScript + core Wasm (js-component-bindgen,
//! jco's Rust core: no Node needed at pack time), and what verge changes in
//! that output.
//!
//! The options: multi-memory (the adapters between the component's and the
//! provider's memories stay in Wasm instead of calling JS per load and store;
//! Node 22 runs it, Lambda's nodejs22.x) and Hybrid import bindings (an import
//! the shim marks with `Symbol.for('cabiLower')`, the engine's `run`, is
//! called on the canonical ABI directly; see shims/lambda-edge/src/engine-abi.mjs).
//!
//! The rewrites, each on the output's structure and each counted (a rewrite
//! that finds nothing where it must fails the pack, naming the generator):
//!
//! * the adapters' `list<u8>` byte loops become `memory.copy` ([`adapters`]);
//! * the adapters' task bookkeeping (enter/exit-sync-call, context slots)
//!   becomes nothing when the composition is sync only: checked on the
//!   component first (no async ABI, no context slots anywhere); its calls run
//!   one way, component → provider → host, because `compose::plug_nn` only
//!   ever connects the component's imports to the provider's exports.
//!   Otherwise the generated code is kept ([`adapters`] says why this holds);
//! * each Hybrid import's check `if (f[symbolCabiLower])` becomes
//!   `if (f?.[symbolCabiLower])`, each step optional: the shim provides only
//!   the WASI functions a component can use (e.g. no filesystem methods),
//!   and a function that is not there must fail when called, as it does
//!   without Hybrid bindings, not when the component is instantiated;
//! * `_debugLog`, which reads `process.env.JCO_DEBUG` at every crossing,
//!   reads it once.

mod adapters;

pub use adapters::{Counts as AdapterCounts, rewrite as rewrite_adapters};

use js_component_bindgen::{BindingsMode, InstantiationMode, TranspileOpts};
use wasmparser::{CanonicalFunction, CanonicalOption, Parser, Payload};

/// The transpiler whose output the rewrites know; a test holds it to Cargo.lock.
pub const GENERATOR: &str = "js-component-bindgen 2.18.0";

/// Transpiled files, by path relative to the output folder.
pub struct Transpiled {
    pub files: Vec<(String, Vec<u8>)>,
    /// The interfaces the shim must provide.
    pub imports: Vec<String>,
    /// What the rewrites changed.
    pub rewrites: Rewrites,
}

/// Counts of what [`to_js`] rewrote in the generated code.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rewrites {
    /// Adapter byte loops made `memory.copy`.
    pub byte_copies: usize,
    /// Adapter calls to task bookkeeping (enter/exit-sync-call, context slots), removed.
    pub bookkeeping_calls: usize,
    /// `_debugLog` definitions made to read their switch once.
    pub debug_logs: usize,
    /// Hybrid import checks made optional.
    pub hybrid_checks: usize,
}

/// Transpiles for Node ESM with an explicit `instantiate(getCoreModule,
/// imports)`: the shim compiles the core modules once per container and
/// re-instantiates only after a trap.
pub fn to_js(component: &[u8], name: &str) -> anyhow::Result<Transpiled> {
    let sync_only = is_sync_only(component)?;
    let opts = TranspileOpts {
        name: name.to_string(),
        no_typescript: true,
        instantiation_mode: Some(InstantiationMode::Async),
        multi_memory: true,
        import_bindings: Some(BindingsMode::Hybrid),
        ..Default::default()
    };
    let t = js_component_bindgen::transpile(component, opts)
        .map_err(|e| anyhow::anyhow!("transpiling to JavaScript: {e:#}"))?;
    let mut rewrites = Rewrites::default();
    let imports_something = !t.imports.is_empty();
    let mut files = t.files;
    for (path, bytes) in &mut files {
        if path.ends_with(".wasm") {
            let (out, counts) = adapters::rewrite(bytes, sync_only)?;
            if counts.byte_loops != counts.byte_copies {
                anyhow::bail!(
                    "{path}: {} of its {} byte-copy loops have a shape verge-edge does not know ({GENERATOR} is the generator it knows): update transpile/adapters.rs",
                    counts.byte_loops - counts.byte_copies,
                    counts.byte_loops
                );
            }
            if counts.bookkeeping_imports > 0 && sync_only && counts.bookkeeping_calls == 0 {
                anyhow::bail!(
                    "{path} imports task bookkeeping but no call to it was found ({GENERATOR} is the generator verge-edge knows): update transpile/adapters.rs"
                );
            }
            rewrites.byte_copies += counts.byte_copies;
            rewrites.bookkeeping_calls += counts.bookkeeping_calls;
            *bytes = out;
        } else if path.ends_with(".js") {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| anyhow::anyhow!("{path}: the generated JavaScript is not UTF-8"))?;
            let (text, n) = debug_log_once(text);
            if n != 1 {
                anyhow::bail!(
                    "{path}: expected one _debugLog definition of {GENERATOR}'s shape, found {n}: update transpile.rs"
                );
            }
            rewrites.debug_logs += n;
            let (text, checks) = optional_hybrid_checks(&text);
            let uses = text.matches("[symbolCabiLower]").count();
            if (imports_something && checks == 0) || uses != 2 * checks {
                anyhow::bail!(
                    "{path}: {checks} Hybrid import checks of {GENERATOR}'s shape among {uses} uses of symbolCabiLower: update transpile.rs"
                );
            }
            rewrites.hybrid_checks += checks;
            *bytes = text.into_bytes();
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Transpiled {
        files,
        imports: t.imports,
        rewrites,
    })
}

/// True when nothing in the component (nested components and all) uses the
/// async ABI or context slots: every canonical function is a sync lift or
/// lower or a resource new/drop/rep.
pub fn is_sync_only(component: &[u8]) -> anyhow::Result<bool> {
    for payload in Parser::new(0).parse_all(component) {
        let payload =
            payload.map_err(|e| anyhow::anyhow!("the composed component does not parse: {e}"))?;
        let Payload::ComponentCanonicalSection(section) = payload else {
            continue;
        };
        for func in section {
            let func =
                func.map_err(|e| anyhow::anyhow!("the composed component does not parse: {e}"))?;
            let plain = |options: &[CanonicalOption]| {
                !options
                    .iter()
                    .any(|o| matches!(o, CanonicalOption::Async | CanonicalOption::Callback(_)))
            };
            let sync = match &func {
                CanonicalFunction::Lift { options, .. }
                | CanonicalFunction::Lower { options, .. } => plain(options),
                CanonicalFunction::ResourceNew { .. }
                | CanonicalFunction::ResourceDrop { .. }
                | CanonicalFunction::ResourceRep { .. } => true,
                _ => false,
            };
            if !sync {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// `if (Descriptor.prototype.stat[symbolCabiLower]) {` →
/// `if (Descriptor?.prototype?.stat?.[symbolCabiLower]) {`, each on a line of its own.
fn optional_hybrid_checks(js: &str) -> (String, usize) {
    const OPEN: &str = "if (";
    const CLOSE: &str = "[symbolCabiLower]) {";
    let mut n = 0;
    let mut out = String::with_capacity(js.len() + 4096);
    for line in js.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let body = trimmed.trim_end();
        let path = body
            .strip_prefix(OPEN)
            .and_then(|rest| rest.strip_suffix(CLOSE))
            .filter(|p| {
                !p.is_empty()
                    && p.split('.').all(|step| {
                        !step.is_empty()
                            && step
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
                    })
            });
        match path {
            Some(path) => {
                n += 1;
                out.push_str(&line[..line.len() - trimmed.len()]);
                out.push_str(&format!("{OPEN}{}?.{CLOSE}", path.replace('.', "?.")));
                out.push_str(&trimmed[body.len()..]);
            }
            None => out.push_str(line),
        }
    }
    (out, n)
}

/// `_debugLog` reads `process.env.JCO_DEBUG` (through libc's environment) on
/// every call, several times per crossing: read once instead.
fn debug_log_once(js: &str) -> (String, usize) {
    const PER_CALL: &str = "  const _debugLog = (...args) => {\n    if (!globalThis?.process?.env?.JCO_DEBUG) { return; }\n    console.debug(...args);\n  };";
    const ONCE: &str = "  // verge-edge: JCO_DEBUG is read once, not at every crossing.\n  const _debugLog = globalThis?.process?.env?.JCO_DEBUG ? (...args) => console.debug(...args) : () => {};";
    let n = js.matches(PER_CALL).count();
    (js.replace(PER_CALL, ONCE), n)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_generator_named_is_the_one_locked() {
        let lock =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).unwrap();
        let at = lock
            .find("name = \"js-component-bindgen\"\nversion = \"")
            .expect("js-component-bindgen is locked");
        let version = lock[at..].lines().nth(1).unwrap();
        let version = version
            .trim_start_matches("version = \"")
            .trim_end_matches('"');
        assert_eq!(super::GENERATOR, format!("js-component-bindgen {version}"));
    }

    #[test]
    fn hybrid_checks_tolerate_what_the_shim_leaves_out() {
        let glue = "  if (exit[symbolCabiLower]) {\n    trampoline15 = exit[symbolCabiLower]({});\n  }\n  if (Descriptor.prototype.stat[symbolCabiLower]) {\n  x\n  if (a + b[symbolCabiLower]) {\n";
        let (out, n) = super::optional_hybrid_checks(glue);
        assert_eq!(n, 2);
        assert!(
            out.contains(
                "  if (exit?.[symbolCabiLower]) {\n    trampoline15 = exit[symbolCabiLower]({});"
            ),
            "{out}"
        );
        assert!(
            out.contains("if (Descriptor?.prototype?.stat?.[symbolCabiLower]) {\n"),
            "{out}"
        );
        assert!(
            out.contains("if (a + b[symbolCabiLower]) {"),
            "not a path: left alone"
        );
    }

    #[test]
    fn the_debug_switch_is_read_once() {
        let glue = "x\n  const _debugLog = (...args) => {\n    if (!globalThis?.process?.env?.JCO_DEBUG) { return; }\n    console.debug(...args);\n  };\ny";
        let (out, n) = super::debug_log_once(glue);
        assert_eq!(n, 1);
        assert!(out.contains("JCO_DEBUG ? (...args) => console.debug(...args) : () => {};"));
        assert!(!out.contains("if (!globalThis"));
        assert_eq!(super::debug_log_once("other").1, 0);
    }
}
