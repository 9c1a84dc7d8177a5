//! Harness for the daemon's tests: a real `verge-device serve` process (the
//! one Cargo built, or a recipe's artifacts run as Greengrass runs them), a
//! minimal HTTP client, and the configurations the tests serve. Every process
//! is killed on drop; every wait is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::paths::{magika, sha256, wasm};

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `f` holds, up to `limit`; panics with `what` otherwise.
pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

pub(crate) fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let end = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("process {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------- the daemon

/// The `verge-device` program the harness runs: `$VERGE_DEVICE` when set,
/// else the one Cargo built into the profile folder this test (or example)
/// runs from: `target/release/deps/TEST` → `target/release/verge-device`.
/// Cargo's `CARGO_BIN_EXE_verge-device` exists only for verge-device's own
/// tests, and a dependency cannot ask Cargo for another package's binary, so
/// the harness follows Cargo's layout of the target folder. Cargo builds the
/// binary for `cargo test -p verge-device` and for the whole workspace; not
/// for another package's tests alone.
pub fn device_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("VERGE_DEVICE") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("the path of this test");
    let mut dir = exe.parent().expect("the folder of this test").to_path_buf();
    if dir.ends_with("deps") || dir.ends_with("examples") {
        dir.pop();
    }
    let bin = dir.join(format!("verge-device{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: build it (cargo build --release -p verge-device), or set VERGE_DEVICE",
        bin.display()
    );
    bin
}

/// `verge-device serve --config CONFIG` with [`device_bin`].
fn serve_command(config: &Path) -> Command {
    let mut command = Command::new(device_bin());
    command.arg("serve").arg("--config").arg(config);
    command
}

/// A Greengrass component's artifacts folder (what `verge-device recipe` and
/// `verge build` write) served as its recipe's run script serves it on a core
/// device: the folder's `verge-device-ARCH` for this machine, `serve --config
/// verge.json --thing-name THING --state-dir DIR/state --artifacts-dir
/// ARTIFACTS`. The configuration is a copy in `dir` (the artifacts stay as
/// built) with the API on a loopback port the system picks, since the
/// recipe's default is a Unix socket, which [`Daemon::post`] does not speak;
/// then `edit` changes it further (an `[mqtt]` pointed at a test broker, say).
pub fn start_artifacts(
    artifacts: &Path,
    dir: &Path,
    thing: &str,
    edit: impl FnOnce(&mut Value),
) -> Daemon {
    use verge_device::recipe::{Arch, CONFIG_ARTIFACT};
    let arch = Arch::current().expect("this machine's architecture has a Greengrass name");
    std::fs::create_dir_all(dir).unwrap();
    // A core device downloads its manifest's artifacts into one folder, each
    // under its URI's last segment: this machine's engine libraries
    // (`ARCH/libonnxruntime.so`, `ARCH/libtensorflowlite_c.so` in the output)
    // land beside the rest.
    let libraries: Vec<PathBuf> = std::fs::read_dir(artifacts.join(arch.as_str()))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    let device_artifacts = dir.join("artifacts");
    let artifacts = if libraries.is_empty() {
        artifacts
    } else {
        std::fs::create_dir_all(&device_artifacts).unwrap();
        for e in std::fs::read_dir(artifacts).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                std::os::unix::fs::symlink(e.path(), device_artifacts.join(e.file_name())).unwrap();
            }
        }
        for library in &libraries {
            std::os::unix::fs::symlink(
                library,
                device_artifacts.join(library.file_name().unwrap()),
            )
            .unwrap();
        }
        &device_artifacts
    };
    let shipped = artifacts.join(CONFIG_ARTIFACT);
    let text = std::fs::read(&shipped).unwrap_or_else(|e| panic!("{}: {e}", shipped.display()));
    let mut config: Value = serde_json::from_slice(&text).unwrap();
    config["api"]["listen"] = "127.0.0.1:0".into();
    edit(&mut config);
    // .json: the daemon reads the file by its extension, as it reads the shipped one.
    let copy = dir.join(CONFIG_ARTIFACT);
    std::fs::write(&copy, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let mut command = Command::new(artifacts.join(arch.binary_name()));
    command
        .arg("serve")
        .arg("--config")
        .arg(&copy)
        .arg("--thing-name")
        .arg(thing)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--artifacts-dir")
        .arg(artifacts);
    Daemon::start_command(command)
}

/// How long the classic Greengrass nucleus waits after SIGTERM before it
/// sends SIGKILL to a component's processes: `Exec.gracefulShutdownTimeout`,
/// 5 s, not configurable (aws-greengrass-nucleus, `util/Exec.java`).
/// Nucleus lite leaves it to systemd: the run step's `Timeout`, 120 s by default.
pub const GREENGRASS_KILL_AFTER: Duration = Duration::from_secs(5);

/// A `verge-device serve` process; its stdout (JSON lines) is collected.
pub struct Daemon {
    child: Option<Child>,
    pub lines: Arc<Mutex<Vec<Value>>>,
    /// Takes the stdout lines in; done once the process has exited.
    reader: Option<std::thread::JoinHandle<()>>,
    pub addr: SocketAddr,
}

impl Daemon {
    /// Starts the daemon ([`device_bin`]) and waits until it is ready.
    pub fn start(config: &Path) -> Daemon {
        Self::start_command(serve_command(config))
    }

    /// Starts `command` (a `verge-device serve` command line) and waits until
    /// the daemon is ready.
    pub fn start_command(command: Command) -> Daemon {
        let mut d = Self::spawn_command(command);
        d.wait_ready();
        d
    }

    /// Waits until a spawned daemon is ready (and knows its address).
    pub fn wait_ready(&mut self) {
        let d = self;
        let lines = d.lines.clone();
        let mut exited = None;
        wait_until("the daemon to be ready", Duration::from_secs(180), || {
            if let Some(s) = d.child.as_mut().unwrap().try_wait().unwrap() {
                exited = Some(s);
                return true;
            }
            lines.lock().unwrap().iter().any(|l| l["msg"] == "ready")
        });
        if let Some(s) = exited {
            panic!("the daemon exited ({s}): {:#?}", d.lines.lock().unwrap());
        }
        // A Unix socket's address (`unix:PATH`) is not a TCP one: the test knows its path.
        if let Some(addr) = d
            .find("ready")
            .and_then(|l| l["addr"].as_str().and_then(|a| a.parse().ok()))
        {
            d.addr = addr;
        }
    }

    /// Starts the daemon ([`device_bin`]) without waiting.
    pub fn spawn(config: &Path) -> Daemon {
        Self::spawn_command(serve_command(config))
    }

    /// Starts `command` without waiting; its stdout is collected.
    pub fn spawn_command(mut command: Command) -> Daemon {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let l = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                // A line that is not JSON is kept as a string, for tests to catch.
                let v = serde_json::from_str(&line).unwrap_or(Value::String(line));
                l.lock().unwrap().push(v);
            }
        });
        Daemon {
            child: Some(child),
            lines,
            reader: Some(reader),
            addr: "127.0.0.1:0".parse().unwrap(),
        }
    }

    pub fn find(&self, msg: &str) -> Option<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find(|l| l["msg"] == msg)
            .cloned()
    }

    pub fn all(&self, msg: &str) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l["msg"] == msg)
            .cloned()
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        signal(child.id(), "TERM");
        let status = wait_exit(&mut child, Duration::from_secs(60));
        self.all_lines_in();
        status
    }

    /// Stops the daemon as Greengrass's classic nucleus does: SIGTERM, then
    /// SIGKILL if it is still running [`GREENGRASS_KILL_AFTER`] later.
    /// Returns how long it took to exit, and `false` if it had to be killed.
    pub fn stop_as_greengrass(&mut self) -> (Duration, bool) {
        let mut child = self.child.take().unwrap();
        let t = Instant::now();
        signal(child.id(), "TERM");
        let exited = loop {
            if child.try_wait().unwrap().is_some() {
                break true;
            }
            if t.elapsed() > GREENGRASS_KILL_AFTER {
                child.kill().unwrap();
                child.wait().unwrap();
                break false;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let took = t.elapsed();
        self.all_lines_in();
        (took, exited)
    }

    /// SIGKILL, as a crash or a power cut would.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        self.all_lines_in();
    }

    /// Waits for the process to exit by itself.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let status = wait_exit(&mut child, limit);
        self.all_lines_in();
        status
    }

    /// Once the process has exited: every line it wrote is in `lines`.
    fn all_lines_in(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }

    pub fn post(&self, route: &str, content_type: &str, body: &[u8]) -> Reply {
        let mut headers = vec![("x-user", "ada")];
        if !content_type.is_empty() {
            headers.push(("content-type", content_type));
        }
        http(
            self.addr,
            "POST",
            &format!("/v1/infer/{route}"),
            &headers,
            body,
        )
    }

    pub fn get(&self, path: &str) -> Reply {
        http(self.addr, "GET", path, &[], b"")
    }

    /// A metric's value (the first sample whose name and labels start with `series`).
    pub fn metric(&self, series: &str) -> f64 {
        let text = self.get("/metrics").text();
        text.lines()
            .find(|l| l.starts_with(series) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no metric {series} in\n{text}"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------- HTTP

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 exchange on a fresh connection.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    )
    .into_bytes();
    for (k, v) in headers {
        req.extend(format!("{k}: {v}\r\n").bytes());
    }
    req.extend(b"\r\n");
    req.extend(body);
    raw(addr, &req)
}

/// Sends raw bytes and parses what comes back as an HTTP response.
pub fn raw(addr: SocketAddr, bytes: &[u8]) -> Reply {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    exchange(s, bytes)
}

/// Sends bytes on a connected stream and parses the HTTP response.
pub fn exchange(mut s: impl Read + Write, bytes: &[u8]) -> Reply {
    // The server may answer (and close) before reading a large body.
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {:?}", String::from_utf8_lossy(&out)));
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: out[split + 4..].to_vec(),
    }
}

// ---------------------------------------------------------------- configuration

/// The daemon's configuration for the tests: the probe and file-type
/// components and Magika, three routes (`probe` to the cloud, `local` not,
/// `file-type`), plus `extra` TOML appended.
pub fn config(dir: &Path, extra: &str) -> PathBuf {
    config_with(dir, "", extra)
}

/// [`config`] with `model` TOML lines added to `[models.magika]` (its engine).
pub fn config_with(dir: &Path, model: &str, extra: &str) -> PathBuf {
    config_full(dir, "", model, extra)
}

/// [`config_with`] with `api` TOML lines added to `[api]`.
pub fn config_full(dir: &Path, api: &str, model: &str, extra: &str) -> PathBuf {
    let probe = wasm("probe");
    let file_type = wasm("file_type");
    let magika = magika();
    let text = format!(
        r#"thing_name = "test-thing"
state_dir = "{state}"

[api]
{listen}
max_body_bytes = 65536
{workers}
{api}

[models.magika]
path = "{magika}"
sha256 = "{magika_sha}"
{model}

[components.probe]
path = "{probe}"
sha256 = "{probe_sha}"

[components.file-type]
path = "{file_type}"
sha256 = "{file_type_sha}"

[routes.local]
component = "probe"
deadline_ms = 1000
memory_mb = 64
config = {{ greeting = "hello" }}

[routes.file-type]
component = "file-type"

{extra}
"#,
        state = dir.join("state").display(),
        // `api` may say where to listen instead.
        listen = if api.contains("listen") {
            ""
        } else {
            "listen = \"127.0.0.1:0\""
        },
        workers = if api.contains("workers") {
            ""
        } else {
            "workers = 2"
        },
        magika = magika.display(),
        magika_sha = sha256(&magika),
        probe = probe.display(),
        probe_sha = sha256(&probe),
        file_type = file_type.display(),
        file_type_sha = sha256(&file_type),
    );
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("verge.toml");
    std::fs::write(&path, text).unwrap();
    path
}
