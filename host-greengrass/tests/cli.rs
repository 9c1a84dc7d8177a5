//! `verge-device run` as a user types it.

use std::process::Command;

use serde_json::Value;

fn verge_device() -> Command {
    Command::new(env!("CARGO_BIN_EXE_verge-device"))
}

#[test]
fn run_prints_one_json_line_per_input() {
    let script = std::env::current_exe().unwrap();
    let out = verge_device()
        .arg("run")
        .arg(verge_testkit::wasm("file_type"))
        .arg("--model")
        .arg(format!("magika={}", verge_testkit::magika().display()))
        .args([
            "--input",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cli.rs"),
        ])
        .arg("--input")
        .arg(&script)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["respond"]["body"]["label"], "rust");
    assert_eq!(lines[1]["respond"]["body"]["label"], "elf");
    assert_eq!(lines[1]["respond"]["body"]["group"], "executable");
}

#[test]
fn failures_are_reported_with_a_nonzero_exit() {
    // A component error: exit 2, the error as JSON.
    let out = verge_device()
        .arg("run")
        .arg(verge_testkit::wasm("probe"))
        .args(["--input", "/dev/null"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "invalid-input");

    // A missing model file, a malformed --model and a missing component: exit 1 or clap's 2, a message.
    let out = verge_device()
        .arg("run")
        .arg(verge_testkit::wasm("file_type"))
        .args([
            "--model",
            "magika=/nonexistent.onnx",
            "--input",
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("model 'magika' (/nonexistent.onnx)"));

    let out = verge_device()
        .args(["run", "x.wasm", "--model", "magika", "--input", "/dev/null"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected KEY=VALUE"));

    let out = verge_device()
        .args(["run", "/nonexistent.wasm", "--input", "/dev/null"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading component /nonexistent.wasm"));
}

/// Runs `verge-device run` on the probe with `command` as the body and
/// returns its exit code, its outcome line and its peak RSS in bytes
/// (`wait4`'s rusage for this one child).
fn run_probe_peak(command: &str, extra: &[&str]) -> (Option<i32>, Value, u64) {
    let dir = std::env::temp_dir().join(format!("verge-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join(command.replace(':', "_"));
    std::fs::write(&input, command).unwrap();
    // Reaped by wait4 below, which also gives its rusage.
    #[allow(clippy::zombie_processes)]
    let mut child = verge_device()
        .arg("run")
        .arg(verge_testkit::wasm("probe"))
        .arg("--input")
        .arg(&input)
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    // SAFETY: waits for our own child; both out-pointers are valid.
    assert_eq!(unsafe { libc::wait4(pid, &mut status, 0, &mut usage) }, pid);
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    let line = serde_json::from_str(out.lines().next().unwrap_or("null")).unwrap();
    (code, line, usage.ru_maxrss as u64 * 1024)
}

/// The hostile probe on `run`: each host resource it goes after ends its
/// call with a clear error, and the process stays within the bound it was
/// given plus a stated overhead (32 MiB over an `echo` run's peak).
#[test]
fn hostile_calls_end_with_their_error_within_the_bounds_of_run() {
    // The allocator's slack and the copies of the answer.
    const OVERHEAD: u64 = 32 << 20;
    let (_, _, baseline) = run_probe_peak("echo", &["--memory-mb", "64"]);
    for (command, kind, message) in verge_testkit::HOSTILE_64_MIB {
        let (code, line, peak) = run_probe_peak(command, &["--memory-mb", "64"]);
        assert_eq!(code, Some(2), "{command}: {line}");
        assert_eq!(line["error"]["kind"], kind, "{command}: {line}");
        assert!(
            line.to_string().contains(message),
            "{command}: {line} lacks {message:?}"
        );
        // Linear memory (64 MiB) + host tensors (64 MiB) + state (16 MiB, held
        // twice while written) + the overhead.
        let bound = baseline + OVERHEAD + ((64 + 64 + 32) << 20);
        eprintln!(
            "run {command}: peak RSS {} MiB (echo {} MiB, bound {} MiB)",
            peak >> 20,
            baseline >> 20,
            bound >> 20
        );
        assert!(
            peak <= bound,
            "{command}: peak RSS {} MiB over {} MiB",
            peak >> 20,
            bound >> 20
        );
    }
    // The bounds are settings: a smaller tensor bound refuses sooner.
    let (_, line, _) = run_probe_peak("nn-hoard:40:1048576", &["--tensor-mb", "8"]);
    assert!(
        line.to_string().contains("a call may hold 8388608"),
        "{line}"
    );
    let (_, line, _) = run_probe_peak("nn-hoard:100:1", &["--max-resources", "50"]);
    assert!(
        line.to_string().contains("holds 50 host resources"),
        "{line}"
    );
}
