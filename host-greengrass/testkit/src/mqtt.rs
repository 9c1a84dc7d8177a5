//! A real MQTT broker for the daemon's uplink: Debian's mosquitto on a
//! loopback port, certificates made at test time with openssl, a subscriber
//! collecting what arrives, and the `[mqtt]` sections that point the daemon
//! at the broker. Every process is killed on drop; every wait is bounded.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::serve::{free_port, signal, wait_exit, wait_until};

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

/// For a JSON configuration (a recipe's `verge.json`): its `mqtt` pointed at
/// the broker on `port` with mutual TLS as `client`, the rest of it (the
/// client id, say) as it was; the same settings as [`mqtt_section`].
pub fn point_mqtt(config: &mut Value, port: u16, certs: &Certs, client: &str) {
    let mqtt = &mut config["mqtt"];
    mqtt["host"] = "127.0.0.1".into();
    mqtt["port"] = port.into();
    mqtt["reconnect_max_s"] = 1.into();
    mqtt["keep_alive_s"] = 5.into();
    mqtt["tls"] = serde_json::json!({
        "ca": certs.path("ca.pem"),
        "cert": certs.path(&format!("{client}.pem")),
        "key": certs.path(&format!("{client}.key")),
    });
}
