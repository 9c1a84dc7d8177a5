//! Compiles `shim.c` against the headers of the very SDK that cargo resolved
//! (its folder found with `cargo metadata`, so the packet layouts match the
//! library the test links).
use std::path::PathBuf;
use std::process::Command;

fn sdk_dir() -> PathBuf {
    let cargo = std::env::var("CARGO").expect("CARGO is set for build scripts");
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let target = std::env::var("TARGET").expect("TARGET");
    // Offline first: everything this build needs is already on disk.
    for offline in [true, false] {
        let mut cmd = Command::new(&cargo);
        cmd.args([
            "metadata",
            "--format-version",
            "1",
            "--filter-platform",
            &target,
        ])
        .current_dir(&dir);
        if offline {
            cmd.arg("--offline");
        }
        let Ok(out) = cmd.output() else { continue };
        if !out.status.success() {
            continue;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        // The SDK's manifest path, without a JSON parser in a build script.
        let found = text
            .split("\"manifest_path\":\"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .find(|p| p.contains("aws-greengrass-component-sdk-") && p.ends_with("Cargo.toml"));
        if let Some(manifest) = found {
            return PathBuf::from(manifest)
                .parent()
                .expect("a folder")
                .to_path_buf();
        }
    }
    panic!("aws-greengrass-component-sdk not found in `cargo metadata`");
}

fn main() {
    let sdk = sdk_dir();
    cc::Build::new()
        .file("shim.c")
        .include(sdk.join("include"))
        .include(sdk.join("priv_include"))
        .include(sdk.join("mock"))
        .include(sdk.join("mock/packets"))
        .define("_GNU_SOURCE", None)
        .define("GG_MODULE", "\"verge-ipc-mock\"")
        .define("GG_LOG_LEVEL", "GG_LOG_WARN")
        .flag("-std=gnu11")
        .flag("-Wno-missing-braces")
        .compile("verge-ipc-mock-shim");
    println!("cargo:rerun-if-changed=shim.c");
}
