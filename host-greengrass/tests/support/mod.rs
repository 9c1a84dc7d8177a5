//! Harness for the daemon's tests: a real `verge-device serve` process, a
//! real mosquitto broker with certificates made at test time, a minimal HTTP
//! client and an MQTT subscriber. Every process is killed on drop; every wait
//! is bounded.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "../common.rs"]
pub mod common;
pub use common::{magika, wasm};

/// A fresh directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("verge-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

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

pub fn sha256(path: &Path) -> String {
    format!(
        "{:x}",
        <sha2::Sha256 as sha2::Digest>::digest(std::fs::read(path).unwrap())
    )
}

// ---------------------------------------------------------------- certificates

/// A CA, a server certificate for 127.0.0.1, a client certificate; and a
/// second, unrelated CA with its own client certificate (for refusals).
pub struct Certs {
    pub dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Certs {
    pub fn generate(dir: &Path) -> Certs {
        let dir = dir.join("certs");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("client.ext"),
            "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
        let run = |args: String| openssl(&dir, &args.split_whitespace().collect::<Vec<_>>());
        for ca in ["ca", "rogue-ca"] {
            run(format!(
                "req -x509 {ec} -keyout {ca}.key -out {ca}.pem -days 2 -subj /CN=verge-test-{ca}"
            ));
        }
        for (name, ca, ext) in [
            ("server", "ca", "server.ext"),
            ("client", "ca", "client.ext"),
            ("rogue-client", "rogue-ca", "client.ext"),
        ] {
            run(format!(
                "req {ec} -keyout {name}.key -out {name}.csr -subj /CN=127.0.0.1"
            ));
            run(format!(
                "x509 -req -in {name}.csr -CA {ca}.pem -CAkey {ca}.key -CAcreateserial \
                 -out {name}.pem -days 2 -extfile {ext}"
            ));
        }
        Certs { dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

// ---------------------------------------------------------------- the broker

/// Debian's mosquitto on a loopback port: mutual TLS (client certificates
/// required), persistent sessions so a subscriber misses nothing across a
/// broker restart.
pub struct Broker {
    pub port: u16,
    conf: PathBuf,
    child: Option<Child>,
}

impl Broker {
    /// With `certs`, mutual TLS; without, plain TCP.
    pub fn new(dir: &Path, certs: Option<&Certs>) -> Broker {
        let port = free_port();
        let data = dir.join("mosquitto");
        std::fs::create_dir_all(&data).unwrap();
        let conf = data.join("mosquitto.conf");
        let tls = certs.map_or(String::new(), |c| {
            format!(
                "require_certificate true\ncafile {}\ncertfile {}\nkeyfile {}\n",
                c.path("ca.pem").display(),
                c.path("server.pem").display(),
                c.path("server.key").display(),
            )
        });
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\n\
                 allow_anonymous true\n\
                 {tls}\
                 persistence true\npersistence_location {data}/\n\
                 max_queued_messages 100000\n\
                 log_dest file {data}/mosquitto.log\n\
                 user root\n",
                data = data.display(),
            ),
        )
        .unwrap();
        Broker {
            port,
            conf,
            child: None,
        }
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new(mosquitto())
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("running mosquitto (Debian package mosquitto)");
        self.child = Some(child);
        let port = self.port;
        wait_until("mosquitto to listen", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// Stops the broker cleanly (it saves its sessions).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            wait_exit(&mut child, Duration::from_secs(20));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Debian installs the broker in /usr/sbin, which is not on every PATH.
fn mosquitto() -> PathBuf {
    if let Some(p) = std::env::var_os("VERGE_MOSQUITTO") {
        return p.into();
    }
    let sbin = PathBuf::from("/usr/sbin/mosquitto");
    if sbin.exists() {
        sbin
    } else {
        "mosquitto".into()
    }
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
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

// ---------------------------------------------------------------- a subscriber

/// An MQTT subscriber on its own thread and runtime, with a persistent
/// session, collecting every publish on `filter`.
pub struct Subscriber {
    pub received: Arc<Mutex<Vec<(String, Value)>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Subscriber {
    /// Connects (retrying while the broker is away) and waits for the first
    /// SUBACK, so nothing published afterwards is missed.
    pub fn start(port: u16, certs: Option<&Certs>, filter: &str) -> Subscriber {
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let subscribed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tls = certs.map(|certs| {
            verge_device::uplink::mqtt::tls_config(&verge_device::uplink::mqtt::Tls {
                ca: certs.path("ca.pem"),
                cert: certs.path("client.pem"),
                key: certs.path("client.key"),
            })
            .unwrap()
        });
        let (r, s, sub) = (received.clone(), stop.clone(), subscribed.clone());
        let filter = filter.to_string();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                use rumqttc::{
                    AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
                };
                let mut o = MqttOptions::new("verge-test-subscriber", "127.0.0.1", port);
                o.set_clean_session(false)
                    .set_keep_alive(Duration::from_secs(5))
                    .set_max_packet_size(1 << 20, 1 << 20);
                if let Some(tls) = tls {
                    o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                        Arc::new(tls),
                    )));
                }
                let (client, mut el) = AsyncClient::new(o, 100);
                client.subscribe(&filter, QoS::AtLeastOnce).await.unwrap();
                while !s.load(std::sync::atomic::Ordering::Relaxed) {
                    match tokio::time::timeout(Duration::from_millis(200), el.poll()).await {
                        Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                            let v = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                            r.lock().unwrap().push((p.topic.clone(), v));
                        }
                        Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                            sub.store(true, std::sync::atomic::Ordering::Relaxed)
                        }
                        Ok(Ok(_)) | Err(_) => {}
                        Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            });
        });
        wait_until("the subscriber's SUBACK", Duration::from_secs(20), || {
            subscribed.load(std::sync::atomic::Ordering::Relaxed)
        });
        Subscriber {
            received,
            stop,
            thread: Some(thread),
        }
    }

    /// The ids of the messages received on topics ending in `suffix`, in order.
    pub fn ids(&self, suffix: &str) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t.ends_with(suffix))
            .map(|(_, v)| v["id"].as_str().unwrap_or("").to_string())
            .collect()
    }

    pub fn on(&self, suffix: &str) -> Vec<Value> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t.ends_with(suffix))
            .map(|(_, v)| v.clone())
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------- the daemon

/// A `verge-device serve` process; its stdout (JSON lines) is collected.
pub struct Daemon {
    child: Option<Child>,
    pub lines: Arc<Mutex<Vec<Value>>>,
    /// Takes the stdout lines in; done once the process has exited.
    reader: Option<std::thread::JoinHandle<()>>,
    pub addr: SocketAddr,
}

impl Daemon {
    /// Starts the daemon and waits until it is ready.
    pub fn start(config: &Path) -> Daemon {
        let mut d = Self::spawn(config);
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

    /// Starts the daemon without waiting.
    pub fn spawn(config: &Path) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_verge-device"))
            .arg("serve")
            .arg("--config")
            .arg(config)
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
shutdown_grace_s = 20
workers = 2
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

/// The `[mqtt]` section over plain TCP, and a cloud route `probe`.
pub fn plain_mqtt_section(port: u16) -> String {
    format!(
        "[routes.probe]\ncomponent = \"probe\"\ncloud = {{ topic = \"verge/{{thing}}/probe\" }}\n\n\
         [mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nreconnect_max_s = 1\n"
    )
}

/// The `[mqtt]` section (mutual TLS) and a cloud route `probe`.
pub fn mqtt_section(port: u16, certs: &Certs, client: &str, extra: &str) -> String {
    format!(
        r#"[routes.probe]
component = "probe"
cloud = {{ topic = "verge/{{thing}}/probe" }}

[mqtt]
host = "127.0.0.1"
port = {port}
reconnect_max_s = 1
keep_alive_s = 5
{extra}
tls = {{ ca = "{ca}", cert = "{cert}", key = "{key}" }}
"#,
        ca = certs.path("ca.pem").display(),
        cert = certs.path(&format!("{client}.pem")).display(),
        key = certs.path(&format!("{client}.key")).display(),
    )
}
