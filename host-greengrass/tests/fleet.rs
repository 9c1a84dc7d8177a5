//! A fleet's life: upgrade and rollback end to end, and Greengrass's stop.
//!
//! Upgrade and rollback, as Greengrass does them on a device:
//! the daemon stopped (SIGTERM, SIGKILL 5 s later), the next version started
//! on the same `state_dir`, then the previous one again (the deployment's
//! `ROLLBACK`), then the next one once more. "The next version" is this tree
//! built with the test-only `schema-next` feature (an additive schema change
//! to both databases, and a version of its own): `./dev test` builds it and
//! names it in `$VERGE_DEVICE_NEXT`.
//!
//! With results queued in the outbox while the broker is down and keys in the
//! state, every phase checks that every key written so far reads back, and
//! at the end every queued result has reached the broker exactly once, in
//! the order the API answered, with its id. It prints the matrix.
//!
//! Greengrass's stop: with the outbox full and the broker down, and requests
//! stuck in components, the daemon exits before the nucleus's SIGKILL
//! ([`GREENGRASS_KILL_AFTER`]), keeping every result it acknowledged.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use verge_testkit::mqtt::{Broker, Subscriber, plain_mqtt_section};
use verge_testkit::scratch;
use verge_testkit::serve::{
    Daemon, GREENGRASS_KILL_AFTER, config, device_bin, free_port, wait_until,
};

/// The next version's binary, or `None` (the test then says why and passes,
/// unless `VERGE_REQUIRE_ALL` is set, as in the test command).
fn next_bin() -> Option<PathBuf> {
    match std::env::var_os("VERGE_DEVICE_NEXT") {
        Some(p) => Some(p.into()),
        None if std::env::var_os("VERGE_REQUIRE_ALL").is_some() => {
            panic!("VERGE_DEVICE_NEXT is not set: ./dev test builds the schema-next verge-device")
        }
        None => {
            eprintln!(
                "skipped: set VERGE_DEVICE_NEXT to a verge-device built with --features schema-next"
            );
            None
        }
    }
}

fn version_of(bin: &Path) -> String {
    let out = Command::new(bin).arg("--version").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("verge-device ")
        .to_string()
}

/// A database's schema version and the verge version that last wrote it.
fn on_disk(db: &Path) -> (u32, String) {
    let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let version = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    let by = c
        .query_row(
            "SELECT value FROM verge_meta WHERE key = 'written_by'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    (version, by)
}

fn probe(d: &Daemon, route: &str, command: &str) -> serde_json::Value {
    let r = d.post(route, "", command.as_bytes());
    assert_eq!(r.status, 200, "{command} on {route}: {}", r.text());
    r.json()
}

/// Queues `n` results (the probe's echo on the cloud route): their ids, in order.
fn queue(d: &Daemon, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let reply = probe(d, "probe", "echo");
            reply["outbox"]["id"]
                .as_str()
                .unwrap_or_else(|| panic!("no outbox id: {reply}"))
                .to_string()
        })
        .collect()
}

struct Row {
    phase: &'static str,
    version: String,
    schema: (u32, u32),
    queued: usize,
    delivered: usize,
    keys: usize,
    stop: Duration,
}

#[test]
fn upgrade_rollback_and_upgrade_again_lose_nothing_and_send_once_in_order() {
    let Some(next) = next_bin() else { return };
    let previous = device_bin();
    let (v_prev, v_next) = (version_of(&previous), version_of(&next));
    assert_ne!(
        v_prev, v_next,
        "the next build must say a version of its own"
    );

    let dir = scratch("upgrade");
    let mut broker = Broker::new(&dir, None);
    // A persistent session, so the broker keeps what arrives while the
    // subscriber is away.
    broker.start();
    drop(Subscriber::start(broker.port, None, "verge/#"));
    broker.stop();
    let cfg = config(&dir, &plain_mqtt_section(broker.port));
    let state = dir.join("state");
    let schema = |file: &str| on_disk(&state.join(file)).0;

    let mut acked: Vec<String> = Vec::new();
    let mut delivered: Vec<String> = Vec::new();
    let mut keys: Vec<(String, String)> = Vec::new();
    let mut rows = Vec::new();
    // (phase, binary, broker up while it runs)
    let phases = [
        ("1. previous", &previous, false),
        ("2. upgrade", &next, true),
        ("3. rollback", &previous, true),
        ("4. upgrade again", &next, true),
    ];
    for (i, (phase, bin, drains)) in phases.into_iter().enumerate() {
        let before = if i == 0 { 0 } else { schema("outbox.db") };
        let mut command = Command::new(bin);
        command.arg("serve").arg("--config").arg(&cfg);
        let mut d = Daemon::start_command(command);
        let version = version_of(bin);

        // Every key written so far reads back, in a version that may not
        // have written it.
        for (k, v) in &keys {
            let got = probe(&d, "local", &format!("kv-get:{k}"));
            assert_eq!(
                got["respond"]["body"]["value"],
                v.as_str(),
                "{phase}: key {k}: {got}"
            );
        }
        let read_back = keys.len();
        // What the previous phases queued goes out now, through this version.
        let mut sent = 0;
        if drains {
            broker.start();
            let sub = Subscriber::start(broker.port, None, "verge/#");
            let want = acked.len();
            wait_until(
                &format!("{phase}: every queued result delivered"),
                Duration::from_secs(60),
                || delivered.len() + sub.ids("/probe").len() >= want,
            );
            wait_until("the outbox to empty", Duration::from_secs(30), || {
                d.metric("verge_outbox_depth_messages") == 0.0
            });
            std::thread::sleep(Duration::from_millis(300)); // duplicates still on their way
            let got = sub.ids("/probe");
            sent = got.len();
            delivered.extend(got);
            drop(sub);
            broker.stop();
        }
        // New results and keys, queued while the broker is down.
        let ids = queue(&d, 10);
        assert_eq!(
            d.metric("verge_outbox_depth_messages"),
            10.0,
            "{phase}: only this phase's results are queued"
        );
        acked.extend(ids);
        for j in 0..3 {
            let (k, v) = (format!("p{i}-k{j}"), format!("{version}/{j}"));
            probe(&d, "local", &format!("kv-set:{k}={v}"));
            keys.push((k, v));
        }
        let (stop, exited) = d.stop_as_greengrass();
        assert!(
            exited,
            "{phase}: SIGKILLed, still running 5 s after SIGTERM"
        );
        let after = schema("outbox.db");
        assert_eq!(
            schema("state.db"),
            after,
            "{phase}: both databases at one schema"
        );
        assert_eq!(on_disk(&state.join("outbox.db")).1, version);
        rows.push(Row {
            phase,
            version,
            schema: (before, after),
            queued: 10,
            delivered: sent,
            keys: read_back,
            stop,
        });
    }
    // The last phase's results, through the previous version once more.
    broker.start();
    let sub = Subscriber::start(broker.port, None, "verge/#");
    let mut command = Command::new(&previous);
    command.arg("serve").arg("--config").arg(&cfg);
    let mut d = Daemon::start_command(command);
    wait_until("the last results", Duration::from_secs(60), || {
        delivered.len() + sub.ids("/probe").len() >= acked.len()
    });
    wait_until("the outbox to empty", Duration::from_secs(30), || {
        d.metric("verge_outbox_depth_messages") == 0.0
    });
    std::thread::sleep(Duration::from_millis(300));
    delivered.extend(sub.ids("/probe"));
    d.stop_as_greengrass();

    let unique: HashSet<&String> = delivered.iter().collect();
    let lost = acked.iter().filter(|id| !unique.contains(id)).count();
    let duplicates = delivered.len() - unique.len();
    eprintln!("upgrade and rollback ({v_prev} ↔ {v_next}):");
    eprintln!(
        "| phase | version | outbox schema before → after | queued | delivered | keys read back | SIGTERM → exit |"
    );
    eprintln!("|---|---|---|---|---|---|---|");
    for r in &rows {
        eprintln!(
            "| {} | {} | {} → {} | {} | {} | {} | {} ms |",
            r.phase,
            r.version,
            r.schema.0,
            r.schema.1,
            r.queued,
            r.delivered,
            r.keys,
            r.stop.as_millis()
        );
    }
    eprintln!(
        "total: queued {}, delivered {}, duplicates {duplicates}, lost {lost}",
        acked.len(),
        delivered.len()
    );
    assert_eq!(lost, 0, "results lost");
    assert_eq!(duplicates, 0, "results sent twice");
    assert_eq!(delivered, acked, "results out of order");
    // The rollback kept the newer schema (additive: it reads and writes it).
    assert_eq!(rows[2].schema, (rows[1].schema.1, rows[1].schema.1));
    assert_eq!(rows[1].schema.1, rows[0].schema.1 + 1);
    std::fs::remove_dir_all(&dir).ok();
}

/// POSTs `body` and reads until the connection closes: what came back.
fn unanswered(addr: std::net::SocketAddr, path: &str, body: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Rows in the outbox, and their bytes.
fn outbox_rows(db: &Path) -> (u64, u64) {
    let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    c.query_row(
        "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM outbox",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

#[test]
fn a_full_outbox_a_broker_down_and_stuck_requests_still_stop_before_greengrass_kills() {
    let dir = scratch("stop");
    // Nothing listens on the broker's port; `slow` lets a call run a minute.
    let extra = plain_mqtt_section(free_port())
        + "[routes.slow]\ncomponent = \"probe\"\ndeadline_ms = 60000\n";
    let cfg = config(&dir, &extra);
    let db = dir.join("state/outbox.db");
    let mut d = Daemon::start(&cfg);
    d.stop_as_greengrass();

    // The outbox filled to its default bound (64 MiB) in one transaction:
    // what a week offline leaves.
    let (topic, payload) = ("verge/test-thing/probe", vec![b'x'; 4096]);
    let bytes = (topic.len() + payload.len()) as u64;
    let rows = (64 << 20) / bytes;
    {
        let mut c = Connection::open(&db).unwrap();
        let tx = c.transaction().unwrap();
        let mut insert = tx
            .prepare("INSERT INTO outbox (id, topic, payload, bytes) VALUES (?1, ?2, ?3, ?4)")
            .unwrap();
        for i in 0..rows {
            insert
                .execute(rusqlite::params![
                    format!("fill-{i}"),
                    topic,
                    payload,
                    bytes
                ])
                .unwrap();
        }
        drop(insert);
        tx.commit().unwrap();
    }
    let (_, filled) = outbox_rows(&db);

    // Idle, full, broker down.
    let t = std::time::Instant::now();
    let mut command = Command::new(device_bin());
    command.arg("serve").arg("--config").arg(&cfg);
    let mut d = Daemon::start_command(command);
    let ready = t.elapsed();
    let acked = queue(&d, 20);
    let (idle_stop, exited) = d.stop_as_greengrass();
    assert!(exited, "SIGKILLed with a full outbox");

    // Busy: two calls stuck in the component, results still arriving.
    let mut d = Daemon::start(&cfg);
    let addr = d.addr;
    let stuck: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || unanswered(addr, "/v1/infer/slow", b"loop")))
        .collect();
    wait_until("both calls running", Duration::from_secs(10), || {
        d.metric("verge_requests_in_flight") >= 2.0
    });
    let more = queue(&d, 20);
    let (busy_stop, exited) = d.stop_as_greengrass();
    assert!(
        exited,
        "SIGKILLed {GREENGRASS_KILL_AFTER:?} after SIGTERM with calls in flight"
    );
    for s in stuck {
        assert_eq!(
            s.join().unwrap(),
            "",
            "a call cut by the stop gets no answer"
        );
    }

    // Every acknowledged result is still queued (the oldest fillers made room:
    // the policy is drop-oldest).
    let c = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    for id in acked.iter().chain(&more) {
        let n: u64 = c
            .query_row("SELECT COUNT(*) FROM outbox WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(n, 1, "result {id} lost at the stop");
    }
    let (left, bytes) = outbox_rows(&db);
    eprintln!(
        "stop with a full outbox ({rows} messages, {:.1} MiB) and the broker down: ready in {} ms; \
         SIGTERM → exit idle {} ms, with 2 calls stuck {} ms (Greengrass kills at {} ms); \
         {left} messages ({:.1} MiB) kept",
        filled as f64 / (1 << 20) as f64,
        ready.as_millis(),
        idle_stop.as_millis(),
        busy_stop.as_millis(),
        GREENGRASS_KILL_AFTER.as_millis(),
        bytes as f64 / (1 << 20) as f64,
    );
    std::fs::remove_dir_all(&dir).ok();
}
