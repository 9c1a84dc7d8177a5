//! `verge new NAME --lang rust|js|python`: a component project that builds on
//! its own, outside this repository. It carries what it needs: the contract
//! (`wit/`), its language's SDK (`vendor/verge-sdk/`, the same files this
//! repository builds its own components with), a hello component, a
//! `build.sh` that installs the toolchain from the registries and builds
//! `NAME.wasm`, a `test.sh` that runs it on the device host, and a README.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Js,
    Python,
}

/// The pinned tools the projects build with (as `./dev` pins them).
pub const COMPONENTIZE_QJS_VERSION: &str = "0.4.5";
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";
/// wit-bindgen as the workspace pins it (the Rust SDK's one dependency).
const WIT_BINDGEN_VERSION: &str = "0.61.1";

/// A file a project carries: its path there, its path here, its text.
type Vendored = (&'static str, &'static str, &'static str);

macro_rules! files {
    ($($to:literal => $from:literal),* $(,)?) => {
        &[$(($to, $from, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../", $from)))),*]
    };
}

/// The contract, as every project gets it.
const WIT: &[Vendored] = files! {
    "wit/verge.wit" => "wit/verge.wit",
    "wit/deps/nn/wasi-nn.wit" => "wit/deps/nn/wasi-nn.wit",
    "wit/deps/config/store.wit" => "wit/deps/config/store.wit",
    "wit/deps/config/world.wit" => "wit/deps/config/world.wit",
    "wit/deps/keyvalue/atomic.wit" => "wit/deps/keyvalue/atomic.wit",
    "wit/deps/keyvalue/batch.wit" => "wit/deps/keyvalue/batch.wit",
    "wit/deps/keyvalue/store.wit" => "wit/deps/keyvalue/store.wit",
    "wit/deps/keyvalue/watch.wit" => "wit/deps/keyvalue/watch.wit",
    "wit/deps/keyvalue/world.wit" => "wit/deps/keyvalue/world.wit",
};

/// The Rust SDK's sources; its `bindings` read `../../wit` from its folder,
/// which `vendor/verge-sdk/` keeps true.
const RUST_SDK: &[Vendored] = files! {
    "vendor/verge-sdk/src/lib.rs" => "components/sdk/src/lib.rs",
    "vendor/verge-sdk/src/error.rs" => "components/sdk/src/error.rs",
    "vendor/verge-sdk/src/json.rs" => "components/sdk/src/json.rs",
    "vendor/verge-sdk/src/message.rs" => "components/sdk/src/message.rs",
    "vendor/verge-sdk/src/model.rs" => "components/sdk/src/model.rs",
    "vendor/verge-sdk/src/settings.rs" => "components/sdk/src/settings.rs",
    "vendor/verge-sdk/src/tensor.rs" => "components/sdk/src/tensor.rs",
};

const JS_SDK: &[Vendored] = files! {
    "vendor/verge-sdk/package.json" => "components/sdk-js/package.json",
    "vendor/verge-sdk/src/index.js" => "components/sdk-js/src/index.js",
    "vendor/verge-sdk/src/index.d.ts" => "components/sdk-js/src/index.d.ts",
    "vendor/verge-sdk/types/component.d.ts" => "components/sdk-js/types/component.d.ts",
    "vendor/verge-sdk/types/interfaces/verge-inference-handler.d.ts" => "components/sdk-js/types/interfaces/verge-inference-handler.d.ts",
    "vendor/verge-sdk/types/interfaces/verge-inference-host.d.ts" => "components/sdk-js/types/interfaces/verge-inference-host.d.ts",
    "vendor/verge-sdk/types/interfaces/verge-inference-types.d.ts" => "components/sdk-js/types/interfaces/verge-inference-types.d.ts",
    "vendor/verge-sdk/types/interfaces/wasi-config-store.d.ts" => "components/sdk-js/types/interfaces/wasi-config-store.d.ts",
    "vendor/verge-sdk/types/interfaces/wasi-keyvalue-atomics.d.ts" => "components/sdk-js/types/interfaces/wasi-keyvalue-atomics.d.ts",
    "vendor/verge-sdk/types/interfaces/wasi-keyvalue-store.d.ts" => "components/sdk-js/types/interfaces/wasi-keyvalue-store.d.ts",
    "vendor/verge-sdk/types/interfaces/wasi-nn-errors.d.ts" => "components/sdk-js/types/interfaces/wasi-nn-errors.d.ts",
    "vendor/verge-sdk/types/interfaces/wasi-nn-graph.d.ts" => "components/sdk-js/types/interfaces/wasi-nn-graph.d.ts",
    "vendor/verge-sdk/types/interfaces/wasi-nn-inference.d.ts" => "components/sdk-js/types/interfaces/wasi-nn-inference.d.ts",
    "vendor/verge-sdk/types/interfaces/wasi-nn-tensor.d.ts" => "components/sdk-js/types/interfaces/wasi-nn-tensor.d.ts",
};

const PYTHON_SDK: &[Vendored] = files! {
    "vendor/verge-sdk/pyproject.toml" => "components/sdk-py/pyproject.toml",
    "vendor/verge-sdk/verge_sdk/__init__.py" => "components/sdk-py/verge_sdk/__init__.py",
};

const RUST_APP: &str = include_str!("../templates/rust/lib.rs");
const JS_APP: &str = include_str!("../templates/js/app.js");
const PYTHON_APP: &str = include_str!("../templates/python/src/app.py");

/// What the hello component answers for `sample.txt` ("verge").
pub const SAMPLE: &str = "verge\n";
pub const EXPECTED: &str = r#"{"message":"hello, verge","chars":5}"#;

/// Writes the project into `dir` (new, or empty); returns the files written.
pub fn write(
    name: &str,
    lang: Lang,
    dir: &Path,
    device: Option<&Path>,
) -> anyhow::Result<Vec<PathBuf>> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        bail!(
            "'{name}': a component name is lower-case letters, digits and '-', starting with a letter (at most 64)"
        );
    }
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        bail!(
            "{}: the folder is not empty (give a new one)",
            dir.display()
        );
    }
    let wasm = format!("{name}.wasm");
    let fill = |s: &str| s.replace("{{name}}", name);
    let mut files: Vec<(String, String)> = WIT
        .iter()
        .map(|(p, _, s)| (p.to_string(), s.to_string()))
        .collect();
    let sdk = match lang {
        Lang::Rust => RUST_SDK,
        Lang::Js => JS_SDK,
        Lang::Python => PYTHON_SDK,
    };
    files.extend(sdk.iter().map(|(p, _, s)| (p.to_string(), s.to_string())));
    let (build, ignore) = match lang {
        Lang::Rust => {
            let crate_name = name.replace('-', "_");
            files.push(("vendor/verge-sdk/Cargo.toml".into(), rust_sdk_manifest()));
            files.push(("Cargo.toml".into(), rust_manifest(name)));
            files.push(("src/lib.rs".into(), fill(RUST_APP)));
            (
                format!(
                    "rustup target add wasm32-wasip2\n\
                     cargo build --target wasm32-wasip2 --profile component\n\
                     cp \"${{CARGO_TARGET_DIR:-target}}/wasm32-wasip2/component/{crate_name}.wasm\" {wasm}\n"
                ),
                "/target\n",
            )
        }
        Lang::Js => {
            files.push(("package.json".into(), js_manifest(name)));
            files.push(("app.js".into(), fill(JS_APP)));
            (
                "npm install --no-audit --no-fund\nnpm run build\n".to_string(),
                "node_modules\n",
            )
        }
        Lang::Python => {
            files.push(("src/app.py".into(), fill(PYTHON_APP)));
            (
                format!(
                    "[ -x .venv/bin/componentize-py ] && .venv/bin/componentize-py --version | grep -q {COMPONENTIZE_PY_VERSION} || {{\n\
                     \x20   python3 -m venv .venv\n\
                     \x20   .venv/bin/pip install --quiet --disable-pip-version-check componentize-py=={COMPONENTIZE_PY_VERSION}\n\
                     }}\n\
                     .venv/bin/componentize-py -d wit -w component componentize -p vendor/verge-sdk -p src app -o {wasm}\n"
                ),
                ".venv\n__pycache__\n",
            )
        }
    };
    files.push((
        "build.sh".into(),
        format!(
            "#!/usr/bin/env bash\n# Installs the toolchain (from the registries) and builds {wasm}.\nset -euo pipefail\ncd \"$(dirname \"$0\")\"\n{build}echo \"built {wasm}\"\n"
        ),
    ));
    let device = device.map_or("verge-device".to_string(), |d| d.display().to_string());
    files.push((
        "test.sh".into(),
        format!(
            "#!/usr/bin/env bash\n\
             # Builds {wasm}, runs it on the device host with sample.txt, and checks the answer.\n\
             set -euo pipefail\n\
             cd \"$(dirname \"$0\")\"\n\
             ./build.sh\n\
             device=\"${{VERGE_DEVICE:-{device}}}\"\n\
             got=$(\"$device\" run {wasm} --input sample.txt)\n\
             echo \"$got\"\n\
             case \"$got\" in\n\
             \x20   *'\"body\":{EXPECTED}'*) echo ok ;;\n\
             \x20   *) echo 'expected the body {EXPECTED}' >&2; exit 1 ;;\n\
             esac\n"
        ),
    ));
    files.push(("sample.txt".into(), SAMPLE.into()));
    files.push((".gitignore".into(), format!("{ignore}/{wasm}\n")));
    files.push(("README.md".into(), readme(name, lang)));

    let mut written = Vec::new();
    for (rel, text) in &files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        if rel.ends_with(".sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
        written.push(path);
    }
    Ok(written)
}

fn rust_manifest(name: &str) -> String {
    format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
         [lib]\ncrate-type = [\"cdylib\"]\n\n\
         [dependencies]\nverge-sdk = {{ path = \"vendor/verge-sdk\" }}\n\n\
         # Small components: size-optimised, whole-program LTO, no unwinding.\n\
         [profile.component]\ninherits = \"release\"\nopt-level = \"s\"\nlto = true\ncodegen-units = 1\nstrip = true\npanic = \"abort\"\n\n\
         [workspace]\n"
    )
}

fn rust_sdk_manifest() -> String {
    format!(
        "[package]\nname = \"verge-sdk\"\nversion = \"0.1.0\"\nedition = \"2024\"\nlicense = \"Apache-2.0\"\npublish = false\n\n\
         [target.'cfg(target_arch = \"wasm32\")'.dependencies]\nwit-bindgen = \"{WIT_BINDGEN_VERSION}\"\n"
    )
}

fn js_manifest(name: &str) -> String {
    format!(
        "{{\n  \"name\": \"{name}\",\n  \"version\": \"0.1.0\",\n  \"private\": true,\n  \"type\": \"module\",\n  \
         \"scripts\": {{\n    \"build\": \"componentize-qjs --wit wit --world component --js app.js -o {name}.wasm --sync --opt-size -m\"\n  }},\n  \
         \"dependencies\": {{\n    \"verge-sdk\": \"file:vendor/verge-sdk\"\n  }},\n  \
         \"devDependencies\": {{\n    \"componentize-qjs\": \"{COMPONENTIZE_QJS_VERSION}\"\n  }}\n}}\n"
    )
}

fn readme(name: &str, lang: Lang) -> String {
    let (source, tool) = match lang {
        Lang::Rust => ("src/lib.rs", "cargo (wasm32-wasip2)"),
        Lang::Js => ("app.js", "componentize-qjs (QuickJS)"),
        Lang::Python => ("src/app.py", "componentize-py (CPython)"),
    };
    format!(
        "# {name}\n\n\
         A verge component: `{source}` answers each request, against the contract in `wit/`.\n\
         `./build.sh` installs {tool} from the registries and builds `{name}.wasm`.\n\
         `./test.sh` builds it and runs it on the device host with `sample.txt` (`VERGE_DEVICE` names the binary).\n\
         On a device: `verge-device run {name}.wasm --input FILE`, or a route of `verge-device serve`.\n\
         At CloudFront: `verge-edge pack --component {name}.wasm --trigger origin-request --include-body --out out/`.\n\
         The SDK (`vendor/verge-sdk/`) has requests, outcomes, settings, and models over `wasi:nn`.\n\
         Settings come from the deployment: `--config greeting=hi` on the device.\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of wit/ and of each SDK is carried: a file added there and
    /// not here would make projects that do not build.
    #[test]
    fn projects_carry_every_file_of_the_contract_and_the_sdks() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let listed = |list: &[Vendored]| -> Vec<String> {
            let mut v: Vec<String> = list.iter().map(|(_, from, _)| from.to_string()).collect();
            v.sort();
            v
        };
        let on_disk = |dir: &str, ext: &[&str]| -> Vec<String> {
            let mut out = Vec::new();
            let mut stack = vec![root.join(dir)];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).unwrap() {
                    let p = e.unwrap().path();
                    if p.is_dir() {
                        if !p.ends_with("node_modules") && !p.ends_with("__pycache__") {
                            stack.push(p);
                        }
                    } else if ext.iter().any(|x| p.to_string_lossy().ends_with(x)) {
                        out.push(
                            p.strip_prefix(&root)
                                .unwrap()
                                .to_string_lossy()
                                .into_owned(),
                        );
                    }
                }
            }
            out.sort();
            out
        };
        assert_eq!(listed(WIT), on_disk("wit", &[".wit"]));
        assert_eq!(listed(RUST_SDK), on_disk("components/sdk/src", &[".rs"]));
        assert_eq!(
            listed(JS_SDK),
            on_disk("components/sdk-js", &[".js", ".ts", ".json"])
        );
        assert_eq!(
            listed(PYTHON_SDK),
            on_disk("components/sdk-py", &[".py", ".toml"])
        );
    }

    #[test]
    fn names_are_checked_and_folders_not_overwritten() {
        let dir = std::env::temp_dir().join(format!("verge-new-unit-{}", std::process::id()));
        assert!(write("Bad_Name", Lang::Js, &dir, None).is_err());
        let files = write("hello", Lang::Python, &dir, None).unwrap();
        assert!(files.iter().any(|f| f.ends_with("wit/verge.wit")));
        assert!(
            files
                .iter()
                .any(|f| f.ends_with("vendor/verge-sdk/verge_sdk/__init__.py"))
        );
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
        assert!(readme.lines().count() <= 10, "{readme}");
        assert!(
            write("hello", Lang::Python, &dir, None).is_err(),
            "not empty"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
