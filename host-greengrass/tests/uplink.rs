//! The outbox and its MQTT uplink against a real broker (Debian's mosquitto
//! on a loopback port, mutual TLS with certificates made here): results
//! queue while the broker is away and arrive once, in order, when it is back;
//! a crash loses nothing; a full outbox applies its policy; a client without
//! a valid certificate is refused.

use std::collections::HashSet;
use std::time::Duration;

use verge_testkit::mqtt::{Broker, Certs, Subscriber, mqtt_section, plain_mqtt_section};
use verge_testkit::scratch;
use verge_testkit::serve::{Daemon, config, wait_until};

/// Posts `n` requests to the cloud route; returns the outbox ids, in order.
fn post_many(d: &Daemon, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let r = d.post("probe", "", b"echo");
            assert_eq!(r.status, 200, "request {i}: {}", r.text());
            r.json()["outbox"]["id"]
                .as_str()
                .unwrap_or_else(|| panic!("no outbox id: {}", r.text()))
                .to_string()
        })
        .collect()
}

#[test]
fn results_queue_while_the_broker_is_down_and_arrive_once_in_order() {
    let dir = scratch("offline");
    let certs = Certs::generate(&dir);
    let mut broker = Broker::new(&dir, Some(&certs));
    // A subscriber with a persistent session, so the broker keeps what
    // arrives for it while it is away.
    broker.start();
    drop(Subscriber::start(broker.port, Some(&certs), "verge/#"));
    broker.stop();

    let extra = mqtt_section(broker.port, &certs, "client", "") + "[health]\ninterval_s = 1\n";
    let d = Daemon::start(&config(&dir, &extra));
    let ids = post_many(&d, 20);
    assert_eq!(d.metric("verge_outbox_depth_messages"), 20.0);
    assert_eq!(d.metric("verge_uplink_connected"), 0.0);

    broker.start();
    let sub = Subscriber::start(broker.port, Some(&certs), "verge/#");
    wait_until("all 20 results", Duration::from_secs(60), || {
        sub.ids("/probe").len() >= 20
    });
    wait_until("the outbox to empty", Duration::from_secs(30), || {
        d.metric("verge_outbox_depth_messages") == 0.0
    });
    // Once each, in the order the API answered.
    assert_eq!(sub.ids("/probe"), ids);
    let first = &sub.on("/probe")[0];
    assert_eq!(first["thing"], "test-thing");
    assert_eq!(first["route"], "probe");
    assert_eq!(first["outcome"]["respond"]["status"], 200);
    assert_eq!(d.metric("verge_uplink_connected"), 1.0);
    assert_eq!(d.metric("verge_uplink_published_total"), 20.0);

    // Health reports on verge/<thing>/health.
    wait_until("a health report", Duration::from_secs(30), || {
        !sub.on("verge/test-thing/health").is_empty()
    });
    let health = sub.on("verge/test-thing/health").pop().unwrap();
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(health["components_loaded"], 2);
    assert!(
        health["outbox_depth"].is_u64() && health["uptime_s"].is_u64(),
        "{health}"
    );

    // And while connected, new results go straight through.
    let more = post_many(&d, 3);
    wait_until("3 more", Duration::from_secs(30), || {
        sub.ids("/probe").len() >= 23
    });
    assert_eq!(sub.ids("/probe")[20..], more[..]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_crash_while_draining_loses_nothing_and_resends_keep_their_ids() {
    let dir = scratch("crash");
    let certs = Certs::generate(&dir);
    let mut broker = Broker::new(&dir, Some(&certs));
    broker.start();
    let sub = Subscriber::start(broker.port, Some(&certs), "verge/#");
    broker.stop();

    // One message in flight at a time: a slow drain to crash in the middle of.
    let extra = mqtt_section(broker.port, &certs, "client", "max_inflight = 1");
    let cfg = config(&dir, &extra);
    let mut d = Daemon::start(&cfg);
    let ids = post_many(&d, 150);
    broker.start();
    wait_until("the drain to start", Duration::from_secs(60), || {
        !sub.ids("/probe").is_empty()
    });
    d.kill9();
    let at_crash = sub.ids("/probe").len();

    let d = Daemon::start(&cfg);
    wait_until("every result", Duration::from_secs(120), || {
        sub.ids("/probe").iter().collect::<HashSet<_>>().len() >= ids.len()
    });
    wait_until("the outbox to empty", Duration::from_secs(30), || {
        d.metric("verge_outbox_depth_messages") == 0.0
    });
    let got = sub.ids("/probe");
    // Nothing lost, nothing invented: every id is one the API gave out.
    let expected: HashSet<&String> = ids.iter().collect();
    assert!(got.iter().all(|id| expected.contains(id)), "unknown ids");
    // Order of first arrival is the order of the API's answers; anything
    // more is a re-send of an id already seen (the cloud drops it).
    let mut seen = HashSet::new();
    let firsts: Vec<&String> = got.iter().filter(|id| seen.insert(*id)).collect();
    assert_eq!(firsts, ids.iter().collect::<Vec<_>>());
    eprintln!(
        "crash test: {at_crash} of {} delivered before the kill, {} duplicates after",
        ids.len(),
        got.len() - ids.len()
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_full_outbox_applies_its_policy_and_counts_it() {
    let dir = scratch("full");
    let certs = Certs::generate(&dir);
    let mut broker = Broker::new(&dir, Some(&certs));
    // The broker is down throughout the posting.
    let one = {
        // Size one message the way the daemon does: post to a roomy outbox.
        let extra = mqtt_section(broker.port, &certs, "client", "");
        let d = Daemon::start(&config(&dir.join("probe-size"), &extra));
        post_many(&d, 1);
        d.metric("verge_outbox_bytes")
    };
    let room = 5.0;
    let max = (one * room) as u64 + 10;

    let extra = mqtt_section(broker.port, &certs, "client", "")
        + &format!("[outbox]\nmax_bytes = {max}\npolicy = \"drop-oldest\"\n");
    let d = Daemon::start(&config(&dir.join("drop"), &extra));
    let ids = post_many(&d, 8);
    assert_eq!(d.metric("verge_outbox_depth_messages"), room);
    assert_eq!(d.metric("verge_outbox_dropped_messages_total"), 3.0);
    assert!(d.metric("verge_outbox_dropped_bytes_total") >= 3.0 * one - 3.0);
    // The log lines arrive through a reader thread: wait for them before counting.
    let dropped = "outbox full: dropped the oldest messages (policy drop-oldest)";
    wait_until("the drop log lines", Duration::from_secs(10), || {
        d.all(dropped).len() >= 3
    });
    assert!(d.all(dropped).len() == 3);
    // What remains is the newest, and that is what the cloud gets.
    broker.start();
    let sub = Subscriber::start(broker.port, Some(&certs), "verge/#");
    wait_until("the 5 kept", Duration::from_secs(60), || {
        sub.ids("/probe").len() >= 5
    });
    assert_eq!(sub.ids("/probe"), ids[3..]);
    drop(d);
    broker.stop();

    let extra = mqtt_section(broker.port, &certs, "client", "")
        + &format!("[outbox]\nmax_bytes = {max}\npolicy = \"reject-new\"\n");
    let d = Daemon::start(&config(&dir.join("reject"), &extra));
    post_many(&d, 5);
    for _ in 0..2 {
        let r = d.post("probe", "", b"echo");
        // The caller still gets its result, and learns from the status that it
        // will not reach the cloud.
        assert_eq!(r.status, 507, "{}", r.text());
        let v = r.json();
        assert_eq!(v["respond"]["status"], 200);
        assert!(
            v["outbox"]["error"]
                .as_str()
                .unwrap()
                .contains("reject-new"),
            "{v}"
        );
    }
    assert_eq!(d.metric("verge_outbox_depth_messages"), 5.0);
    assert_eq!(d.metric("verge_outbox_rejected_messages_total"), 2.0);
    assert_eq!(
        d.metric("verge_errors_total{route=\"probe\",kind=\"outbox\"}"),
        2.0
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_client_without_a_valid_certificate_is_refused() {
    let dir = scratch("refused");
    let certs = Certs::generate(&dir);
    let mut broker = Broker::new(&dir, Some(&certs));
    broker.start();
    let sub = Subscriber::start(broker.port, Some(&certs), "verge/#");

    // A certificate from a CA the broker does not trust.
    let extra = mqtt_section(broker.port, &certs, "rogue-client", "");
    let d = Daemon::start(&config(&dir.join("rogue"), &extra));
    let ids = post_many(&d, 2);
    wait_until(
        "refused connection attempts",
        Duration::from_secs(30),
        || d.all("uplink down, retrying").len() >= 2,
    );
    assert_eq!(d.metric("verge_uplink_connected"), 0.0);
    assert_eq!(d.metric("verge_uplink_connects_total"), 0.0);
    assert_eq!(d.metric("verge_outbox_depth_messages"), 2.0);
    assert!(sub.ids("/probe").is_empty());
    drop(d);

    // A broker the daemon's CA did not sign: refused from our side too.
    let text = mqtt_section(broker.port, &certs, "client", "");
    let text = text.replace(
        &certs.path("ca.pem").display().to_string(),
        &certs.path("rogue-ca.pem").display().to_string(),
    );
    let d = Daemon::start(&config(&dir.join("wrong-ca"), &text));
    post_many(&d, 1);
    wait_until(
        "refused connection attempts",
        Duration::from_secs(30),
        || d.all("uplink down, retrying").len() >= 2,
    );
    let why = d.all("uplink down, retrying")[0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(why.to_lowercase().contains("certificate"), "{why}");
    assert_eq!(d.metric("verge_uplink_connects_total"), 0.0);

    // The same daemon with a valid certificate gets through.
    let extra = mqtt_section(broker.port, &certs, "client", "");
    let d = Daemon::start(&config(&dir.join("rogue"), &extra));
    wait_until("the queued results", Duration::from_secs(60), || {
        sub.ids("/probe").len() >= 2
    });
    assert_eq!(sub.ids("/probe"), ids);
    drop(d);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn plain_tcp_to_a_local_broker_works_too() {
    let dir = scratch("plain");
    let mut broker = Broker::new(&dir, None);
    broker.start();
    let sub = Subscriber::start(broker.port, None, "verge/#");
    let d = Daemon::start(&config(&dir, &plain_mqtt_section(broker.port)));
    let ids = post_many(&d, 3);
    wait_until("3 results", Duration::from_secs(60), || {
        sub.ids("/probe").len() >= 3
    });
    assert_eq!(sub.ids("/probe"), ids);
    std::fs::remove_dir_all(&dir).ok();
}
