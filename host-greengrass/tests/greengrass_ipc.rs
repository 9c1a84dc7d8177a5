//! The daemon under a Greengrass nucleus, against AWS's own IPC mock server
//! (the `gg_test_*` mock in aws-greengrass-component-sdk): the real
//! `verge-device serve` connects over the real IPC socket protocol, reports
//! its state with UpdateState, drains its outbox with PublishToIoTCore at
//! QoS 1 in order, retries what the nucleus refuses, keeps what it never
//! answered through a hang-up and a kill -9, gives up on a nucleus that never
//! answers, and publishes a route's outcomes on local pub/sub. No nucleus
//! runs here: the mock checks every packet against what is expected, byte
//! for byte (but for the health reports' payloads, whose timestamps are not
//! known in advance).
//!
//! The mock is one per process and sets the IPC variables in this process's
//! environment, so this file is a test binary of its own with one test.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use verge_ipc_mock::Answer::{self, Accepted, Refused};
use verge_ipc_mock::Mock;
use verge_testkit::scratch;
use verge_testkit::serve::{Daemon, config, wait_until};

const TOPIC: &str = "verge/test-thing/probe";
const BOTH: &str = "verge/test-thing/both";
const QOS1: u8 = 1;
/// Seconds the mock waits for each expected packet.
const WAIT: u32 = 60;

/// The payload the outbox holds for message `id`, byte for byte.
fn queued(dir: &Path, id: &str) -> Option<Vec<u8>> {
    let db = rusqlite::Connection::open_with_flags(
        dir.join("state/outbox.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    db.query_row("SELECT payload FROM outbox WHERE id = ?1", [id], |r| {
        r.get(0)
    })
    .ok()
}

/// Posts to a cloud route; the outbox id and the payload as queued.
fn post(d: &Daemon, dir: &Path, route: &str, command: &[u8]) -> (String, Vec<u8>) {
    let r = d.post(route, "", command);
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["outbox"]["id"].as_str().unwrap().to_string();
    let payload = queued(dir, &id).expect("queued");
    (id, payload)
}

/// Starts the daemon under the mock: it connects, loads, then says RUNNING.
fn start(mock: &Mock, cfg: &Path) -> Daemon {
    let mut d = Daemon::spawn(cfg);
    mock.accept(WAIT).unwrap();
    d.wait_ready();
    mock.expect_update_state(1, "RUNNING", WAIT).unwrap();
    d
}

/// Starts the daemon again: the message it kept goes first (the same
/// bytes), then the health report, and the outbox empties.
fn restart_sending(mock: &Mock, cfg: &Path, kept: &[u8]) -> Daemon {
    let d = start(mock, cfg);
    mock.expect_publish(2, (TOPIC, kept, QOS1), Accepted, WAIT)
        .unwrap();
    mock.expect_any_publish(3, WAIT).unwrap();
    wait_until("the kept message to go", Duration::from_secs(30), || {
        d.metric("verge_outbox_depth_messages") == 0.0
    });
    d
}

#[test]
fn the_outbox_goes_through_the_nucleus_in_order_and_survives_it() {
    let dir = scratch("greengrass-ipc");
    let mock = Mock::setup(&dir.join("nucleus"), "verge-test-svcuid").unwrap();
    // No [mqtt] and no [uplink] type: under a nucleus the outbox goes through IPC.
    let extra = "[routes.probe]\ncomponent = \"probe\"\ncloud = { topic = \"verge/{thing}/probe\" }\n\n\
                 [routes.both]\ncomponent = \"probe\"\ncloud = { topic = \"verge/{thing}/both\" }\n\
                 local = { topic = \"verge/{thing}/both\" }\n\n\
                 [uplink]\nretry_max_s = 1\n\n[health]\ninterval_s = 3600\n";
    let cfg = config(&dir, extra);

    // 1. Connect, RUNNING, the first health report (QoS 0).
    let mut d = start(&mock, &cfg);
    mock.expect_any_publish(2, WAIT).unwrap();
    assert_eq!(d.metric("verge_uplink_info{type=\"greengrass-ipc\"}"), 1.0);

    // 2. Two results: the first taken, the second refused once (nucleus lite
    //    offline) and sent again, the same bytes, before anything after it.
    let (_, first) = post(&d, &dir, "probe", b"echo");
    let (_, second) = post(&d, &dir, "probe", b"echo");
    assert_ne!(first, second);
    mock.expect_publish(3, (TOPIC, &first, QOS1), Accepted, WAIT)
        .unwrap();
    let offline = Refused("ServiceError", "Failed to publish: not connected");
    mock.expect_publish(4, (TOPIC, &second, QOS1), offline, WAIT)
        .unwrap();
    mock.expect_publish(5, (TOPIC, &second, QOS1), Accepted, WAIT)
        .unwrap();
    wait_until("the outbox to empty", Duration::from_secs(30), || {
        d.metric("verge_outbox_depth_messages") == 0.0
    });
    assert_eq!(d.metric("verge_uplink_published_total"), 2.0);
    assert!(
        d.find("the nucleus did not take a message, retrying")
            .is_some()
    );

    // 3. Local pub/sub for device applications: the same bytes as to the
    //    cloud. The SDK makes one publish at a time, so while the nucleus has
    //    not answered one, the local publish waits for it, then goes before
    //    the outcome's own cloud publish, which waits for the one before it.
    let (_, waiting) = post(&d, &dir, "probe", b"echo");
    mock.expect_publish(6, (TOPIC, &waiting, QOS1), Answer::None, WAIT)
        .unwrap();
    let r = d.post("both", "", b"echo");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["local"]["topic"], BOTH);
    let id = r.json()["outbox"]["id"].as_str().unwrap().to_string();
    assert_eq!(r.json()["local"]["id"], id.as_str());
    let both = queued(&dir, &id).unwrap();
    mock.answer_publish(6, WAIT).unwrap();
    mock.expect_local_publish(7, BOTH, &both, WAIT).unwrap();
    mock.expect_publish(8, (BOTH, &both, QOS1), Accepted, WAIT)
        .unwrap();
    wait_until(
        "the local publish and the outbox",
        Duration::from_secs(30),
        || {
            d.metric("verge_local_published_total") == 1.0
                && d.metric("verge_outbox_depth_messages") == 0.0
        },
    );

    // 4. Larger than an IPC packet carries: refused at the outbox (507),
    //    nothing sent (the next expectation would see it).
    let r = d.post("probe", "", b"big:8000");
    assert_eq!(r.status, 507, "{}", r.text());
    assert!(r.text().contains("7000"), "{}", r.text());
    let r = d.post("both", "", b"big:8000");
    assert_eq!(r.status, 507, "{}", r.text());
    let local = r.json()["local"]["error"].as_str().unwrap().to_string();
    assert!(local.contains("7000"), "{local}");
    assert_eq!(d.metric("verge_local_failed_total"), 1.0);

    // 5. The nucleus goes away with a message unanswered: the SDK ends the
    //    process (exit 1, for Greengrass to restart it); the message stays.
    let (unanswered, third) = post(&d, &dir, "probe", b"echo");
    mock.expect_publish(9, (TOPIC, &third, QOS1), Answer::None, WAIT)
        .unwrap();
    mock.hang_up().unwrap();
    let status = d.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{status}");
    assert_eq!(queued(&dir, &unanswered).as_deref(), Some(&third[..]));

    // 6. Started again: the kept message goes first, same id, same bytes.
    let mut d = restart_sending(&mock, &cfg, &third);

    // 7. kill -9 with a message unanswered: sent again after the restart.
    let (_, fourth) = post(&d, &dir, "probe", b"echo");
    mock.expect_publish(4, (TOPIC, &fourth, QOS1), Answer::None, WAIT)
        .unwrap();
    d.kill9();
    let mut d = restart_sending(&mock, &cfg, &fourth);

    // 8. SIGTERM: a clean exit, and the connection closed with nothing more sent.
    assert!(d.terminate().success());
    mock.expect_disconnect(WAIT).unwrap();

    // 9. A start that fails (a component that does not compile) says ERRORED.
    let broken = dir.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    let bad = broken.join("probe.wasm");
    std::fs::write(&bad, b"\0asm\x0d\0\x01\0 not a component").unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap();
    let probe = text
        .lines()
        .skip_while(|l| *l != "[components.probe]")
        .take(3)
        .collect::<Vec<_>>()
        .join("\n");
    let patched = text.replace(
        &probe,
        &format!(
            "[components.probe]\npath = \"{}\"\nsha256 = \"{}\"",
            bad.display(),
            verge_testkit::sha256(&bad)
        ),
    );
    let cfg_broken = broken.join("verge.toml");
    std::fs::write(&cfg_broken, patched).unwrap();
    let mut d = Daemon::spawn(&cfg_broken);
    mock.accept(WAIT).unwrap();
    mock.expect_update_state(1, "ERRORED", WAIT).unwrap();
    assert_eq!(d.wait(Duration::from_secs(30)).code(), Some(1));
    assert!(d.find("fatal").is_some());
    mock.expect_disconnect(WAIT).unwrap();

    // 10. A nucleus that never answers the connect: the SDK gives up after
    //     10 s, and the daemon exits 1 saying so (Greengrass starts it again).
    let mut d = Daemon::spawn(&cfg);
    assert_eq!(d.wait(Duration::from_secs(60)).code(), Some(1));
    let fatal = d.find("fatal").unwrap();
    assert!(
        fatal["error"]
            .as_str()
            .unwrap()
            .contains("connecting to the Greengrass nucleus"),
        "{fatal}"
    );
    drop(mock);

    // 11. Outside a nucleus, the same configuration is refused, and says why.
    let out = Command::new(env!("CARGO_BIN_EXE_verge-device"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env_remove("AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT")
        .env_remove("SVCUID")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("needs a Greengrass nucleus"), "{said}");
}
