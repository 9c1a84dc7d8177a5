//! The rewrites of the generated glue (src/transpile.rs) on the generator's
//! real output: the probe, file-type and image-classify packed on each Wasm
//! engine the way `verge-edge pack` packs them. Each pack's manifest counts
//! what was rewritten, and a second pass over its core modules finds nothing
//! left to rewrite: no byte-copy loop, no call to task bookkeeping. Needs the
//! built components (VERGE_WASM_DIR, as ./dev test sets it).

use std::io::Read;
use std::path::PathBuf;

use verge_edge::package::{self, Engine, OnError, PackOptions};
use verge_edge::quota::{Runtime, Trigger};
use verge_edge::transpile;

fn wasm(file: &str) -> PathBuf {
    let dir = std::env::var_os("VERGE_WASM_DIR")
        .expect("VERGE_WASM_DIR is not set: run through ./dev test");
    let p = PathBuf::from(dir).join(file);
    assert!(
        p.exists(),
        "{} is missing: build the components",
        p.display()
    );
    p
}

fn pack(component: &str, engine: Engine) -> package::Package {
    let opts = PackOptions {
        component: wasm(component),
        provider: std::fs::read(wasm(package::provider_file(engine).unwrap())).unwrap(),
        engine,
        onnxruntime_node: Err("not packed here".into()),
        threads: 0,
        models: Vec::new(),
        trigger: Trigger::OriginRequest,
        include_body: true,
        memory_mb: 1024,
        timeout_s: 30,
        runtime: Runtime::default(),
        on_error: OnError::Pass,
        config: Vec::new(),
    };
    package::build(&opts).unwrap_or_else(|e| panic!("{component} on {engine:?}: {e}"))
}

#[test]
fn the_glue_of_real_packs_is_rewritten_whole() {
    for (component, engine) in [
        ("probe.wasm", Engine::Tract),
        ("probe.wasm", Engine::Compact),
        ("file_type.wasm", Engine::Tract),
        ("image_classify.wasm", Engine::Compact),
    ] {
        let p = pack(component, engine);
        let glue = &p.manifest["glue"];
        assert_eq!(glue["generator"], transpile::GENERATOR);
        assert_eq!(glue["debug_logs"], 1, "{component}: {glue}");
        // Tensor bytes cross between the component and the provider both ways.
        assert!(
            glue["byte_copies"].as_u64().unwrap() >= 2,
            "{component}: {glue}"
        );
        assert!(
            glue["bookkeeping_calls"].as_u64().unwrap() > 0,
            "{component}: {glue}"
        );
        assert!(
            glue["hybrid_checks"].as_u64().unwrap() > 0,
            "{component}: {glue}"
        );

        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(&p.zip)).unwrap();
        let names: Vec<String> = zip
            .file_names()
            .map(|n| n.map(|n| n.to_string()))
            .collect::<Result<_, _>>()
            .unwrap();
        let mut modules = 0;
        for name in names
            .iter()
            .filter(|n| n.starts_with("component/") && n.ends_with(".wasm"))
        {
            let mut bytes = Vec::new();
            zip.by_name(name).unwrap().read_to_end(&mut bytes).unwrap();
            let (again, counts) = transpile::rewrite_adapters(&bytes, true).unwrap();
            assert_eq!(
                counts.byte_loops, 0,
                "{component}: {name} still has a byte loop"
            );
            assert_eq!(
                counts.bookkeeping_calls, 0,
                "{component}: {name} still calls bookkeeping"
            );
            assert_eq!(again, bytes, "{component}: a second pass changes {name}");
            modules += 1;
        }
        assert!(modules > 2, "{component}: {names:?}");
    }
}
