//! A hostile component at the edge: its `handle` answers a response whose
//! body list runs past the end of its linear memory. The canonical ABI says
//! lifting it traps; js-component-bindgen before 2.12.1 handed back the bytes
//! that were in range instead (GHSA-3827-xxx2-c5qc). The component is packed
//! by the real `verge-edge pack` and called through the shim on the Node.js
//! that runs packages (`$VERGE_NODE`, else `node`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// A core module in the canonical ABI of `verge:inference/component`: its
/// answer is `ok(respond({status: 200, body: <36 bytes before the end of
/// memory, 100 long>}))`, and the 36 bytes in range say LEAK.
const MODULE: &str = r#"(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (global.set $heap (i32.add (local.get $p) (local.get 3)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow (i32.add (i32.shr_u (global.get $heap) (i32.const 16)) (i32.const 1))))))
    (local.get $p))
  (func (export "verge:inference/handler@0.1.0#handle")
        (param i32 i32 i32 i32 i32 i32 i32) (result i32)
    (local $end i32) (local $p i32)
    (local.set $end (i32.mul (memory.size) (i32.const 65536)))
    (local.set $p (i32.sub (local.get $end) (i32.const 36)))
    (loop $fill
      (i32.store (local.get $p) (i32.const 0x4b41454c)) ;; "LEAK"
      (local.set $p (i32.add (local.get $p) (i32.const 4)))
      (br_if $fill (i32.lt_u (local.get $p) (local.get $end))))
    (i32.store8 (i32.const 2048) (i32.const 0))          ;; result: ok
    (i32.store8 (i32.const 2052) (i32.const 0))          ;; outcome: respond
    (i32.store16 (i32.const 2056) (i32.const 200))       ;; status
    (i64.store (i32.const 2060) (i64.const 0))           ;; content-type: ""
    (i32.store (i32.const 2068) (i32.sub (local.get $end) (i32.const 36)))
    (i32.store (i32.const 2072) (i32.const 100))         ;; body: 64 bytes past the end
    (i64.store (i32.const 2076) (i64.const 0))           ;; headers: none
    (i32.const 2048))
)"#;

fn component() -> Vec<u8> {
    let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
    let mut resolve = wit_parser::Resolve::default();
    let (pkg, _) = resolve.push_dir(&wit).expect("wit/ parses");
    let world = resolve.select_world(&[pkg], Some("component")).unwrap();
    let mut module = wat::parse_str(MODULE).unwrap();
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .unwrap();
    wit_component::ComponentEncoder::default()
        .module(&module)
        .unwrap()
        .validate(true)
        .encode()
        .unwrap()
}

fn node() -> PathBuf {
    std::env::var_os("VERGE_NODE").map_or_else(|| "node".into(), PathBuf::from)
}

#[test]
fn a_list_lifted_out_of_bounds_traps_at_the_edge() {
    let dir = std::env::temp_dir().join(format!("verge-edge-oob-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let wasm = dir.join("oob.wasm");
    std::fs::write(&wasm, component()).unwrap();

    let out = dir.join("pack");
    let pack = Command::new(env!("CARGO_BIN_EXE_verge-edge"))
        .args(["pack", "--component"])
        .arg(&wasm)
        .args([
            "--trigger",
            "origin-request",
            "--include-body",
            "--timeout",
            "30",
        ])
        .args(["--on-error", "fail", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        pack.status.success(),
        "{}",
        String::from_utf8_lossy(&pack.stderr)
    );
    let unzipped = dir.join("package");
    let zip = std::fs::read(out.join("function.zip")).unwrap();
    zip::ZipArchive::new(std::io::Cursor::new(zip))
        .unwrap()
        .extract(&unzipped)
        .unwrap();
    let body = dir.join("body.txt");
    std::fs::write(&body, "hello").unwrap();

    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shims/lambda-edge/src/invoke.mjs");
    let mut child = Command::new(node())
        .arg(driver)
        .arg(&unzipped)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs ($VERGE_NODE, else node on the path)");
    let request = serde_json::json!({ "inputs": [{ "file": body, "content_type": "text/plain" }], "repeat": 2 });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let done = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let record: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    let outcome = &record["outcome"];
    // on-error fail: a trap answers 503, and the log line says it was a trap.
    assert_eq!(outcome["status"], 503, "{record}");
    assert!(!stdout.contains("LEAK"), "bytes in range leaked: {stdout}");
    let logged = outcome["logged"].to_string();
    assert!(logged.contains("out of bounds"), "{record}");
    std::fs::remove_dir_all(&dir).unwrap();
}
