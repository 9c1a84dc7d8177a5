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
            *bytes = tune_glue(bytes);
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Transpiled {
        files,
        imports: t.imports,
    })
}

/// Two costs of js-component-bindgen 2.11's glue that are paid at every
/// crossing of a component boundary, cut in the emitted JavaScript (without a
/// match, from another generator version, the glue is left as it is):
///
/// * `_debugLog` reads `process.env.JCO_DEBUG` on every call, several times
///   per crossing (a `process.env` read goes through libc's environment):
///   read once instead. A no-op compute went from 83 to 34 µs (tract) and
///   from 90–130 to 51–59 µs (onnxruntime).
/// * The adapters between two components' memories (the wasi:nn provider and
///   the component) load and store through JS "augments" that make a new
///   `DataView` for every byte: one view per memory buffer instead. A
///   600 KB image tensor went from 48 to 27 ms per request.
fn tune_glue(js: &[u8]) -> Vec<u8> {
    const PER_CALL: &str = "  const _debugLog = (...args) => {\n    if (!globalThis?.process?.env?.JCO_DEBUG) { return; }\n    console.debug(...args);\n  };";
    const ONCE: &str = "  // verge-edge: JCO_DEBUG is read once, not at every crossing.\n  const _debugLog = globalThis?.process?.env?.JCO_DEBUG ? (...args) => console.debug(...args) : () => {};";
    const VIEWS: &str = "// verge-edge: one DataView per memory buffer, not one per byte an adapter copies.\nconst _vergeViews = new WeakMap();\nfunction _vergeView(b) { let v = _vergeViews.get(b); if (v === undefined) { v = new DataView(b); _vergeViews.set(b, v); } return v; }\n";
    let Ok(text) = std::str::from_utf8(js) else {
        return js.to_vec();
    };
    let mut text = text.replacen(PER_CALL, ONCE, 1);
    let (bytes, n8) = byte_augments(&text);
    let (views, n) = cached_views(&bytes);
    text = match (n8, n) {
        (0, 0) => views,
        (0, _) => format!("{VIEWS}{views}"),
        _ => format!("{VIEWS}{BYTES}{views}"),
    };
    text.into_bytes()
}

/// The adapters copy a `list<u8>` between two components' memories one byte
/// at a time through `I32Load8U` / `I32Store8` augments: those keep a
/// `Uint8Array` over the memory, renewed only when growth detaches it.
const BYTES: &str = "// verge-edge: byte loads and stores through a Uint8Array kept over the memory (renewed when growth detaches it).\nfunction _vergeBytes(memory) { let a = null; return () => (a !== null && a.byteLength !== 0 ? a : (a = new Uint8Array(memory().buffer))); }\nfunction _vergeLoad8(memory) { const bytes = _vergeBytes(memory); return (ptr, off) => bytes()[ptr + off]; }\nfunction _vergeStore8(memory) { const bytes = _vergeBytes(memory); return (ptr, val, off) => { bytes()[ptr + off] = val; }; }\n";

/// `'memM I32Load8U': (ptr, off) => new DataView(exportsN.memory.buffer).getUint8(ptr + off, true),`
/// and the `I32Store8` twin, as js-component-bindgen 2.11 writes them.
fn byte_augments(text: &str) -> (String, usize) {
    let mut out = text.to_string();
    let mut n = 0;
    for (op, head, tail, helper) in [
        (
            " I32Load8U': ",
            "(ptr, off) => new DataView(exports",
            ".memory.buffer).getUint8(ptr + off, true),",
            "_vergeLoad8",
        ),
        (
            " I32Store8': ",
            "(ptr, val, offset) => {\n        new DataView(exports",
            ".memory.buffer).setInt8(ptr + offset, val, true);\n      },",
            "_vergeStore8",
        ),
    ] {
        let mut rewritten = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(at) = rest.find(op) {
            let (before, after) = rest.split_at(at + op.len());
            rewritten.push_str(before);
            rest = after;
            let Some(body) = rest.strip_prefix(head) else {
                continue;
            };
            let digits = body.bytes().take_while(u8::is_ascii_digit).count();
            if digits > 0 && body[digits..].starts_with(tail) {
                rewritten.push_str(&format!(
                    "{helper}(() => exports{}.memory),",
                    &body[..digits]
                ));
                rest = &body[digits + tail.len()..];
                n += 1;
            }
        }
        rewritten.push_str(rest);
        out = rewritten;
    }
    (out, n)
}

/// `new DataView(exportsN.memory.buffer)` → `_vergeView(exportsN.memory.buffer)`.
fn cached_views(text: &str) -> (String, usize) {
    const OPEN: &str = "new DataView(exports";
    const CLOSE: &str = ".memory.buffer)";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut n = 0;
    while let Some(at) = rest.find(OPEN) {
        let after = &rest[at + OPEN.len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && after[digits..].starts_with(CLOSE) {
            out.push_str(&rest[..at]);
            out.push_str("_vergeView(exports");
            out.push_str(&after[..digits]);
            out.push_str(CLOSE);
            rest = &after[digits + CLOSE.len()..];
            n += 1;
        } else {
            out.push_str(&rest[..at + OPEN.len()]);
            rest = after;
        }
    }
    out.push_str(rest);
    (out, n)
}

#[cfg(test)]
mod tests {
    #[test]
    fn byte_copies_between_memories_skip_the_dataview() {
        let glue = "      'mem1 I32Load8U': (ptr, off) => new DataView(exports5.memory.buffer).getUint8(ptr + off, true),\n      'mem1 I32Store8': (ptr, val, offset) => {\n        new DataView(exports5.memory.buffer).setInt8(ptr + offset, val, true);\n      },\n";
        let out = String::from_utf8(super::tune_glue(glue.as_bytes())).unwrap();
        assert!(
            out.contains("'mem1 I32Load8U': _vergeLoad8(() => exports5.memory),"),
            "{out}"
        );
        assert!(
            out.contains("'mem1 I32Store8': _vergeStore8(() => exports5.memory),"),
            "{out}"
        );
        assert!(out.contains("function _vergeStore8(memory)"));
    }

    #[test]
    fn the_glue_reads_its_debug_switch_once_and_keeps_its_views() {
        let glue = "x\n  const _debugLog = (...args) => {\n    if (!globalThis?.process?.env?.JCO_DEBUG) { return; }\n    console.debug(...args);\n  };\n'mem1 I32Load8U': (p, o) => new DataView(exports5.memory.buffer).getUint8(p + o, true),\nnew DataView(exportsX.memory.buffer)";
        let out = String::from_utf8(super::tune_glue(glue.as_bytes())).unwrap();
        assert!(out.contains("JCO_DEBUG ? (...args) => console.debug(...args) : () => {};"));
        assert!(!out.contains("if (!globalThis"));
        assert!(out.contains("=> _vergeView(exports5.memory.buffer).getUint8(p + o, true)"));
        assert!(
            out.contains("new DataView(exportsX.memory.buffer)"),
            "only exportsN is rewritten"
        );
        assert!(out.starts_with("// verge-edge: one DataView per memory buffer"));
        assert_eq!(super::tune_glue(b"other"), b"other");
    }
}
