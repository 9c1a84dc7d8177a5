//! The durable databases across versions: what verge-device 0.1 wrote
//! (fixtures, schema 0) opens with this binary and keeps every key and every
//! queued message; a database a newer verge-device wrote opens when its
//! schema says it may, and is otherwise refused, naming both versions, with
//! the file left exactly as it was (see `state::Schema` for the rule).

use std::path::{Path, PathBuf};

use rusqlite::Connection;
use verge_device::outbox::{Outbox, Policy};
use verge_device::state::{SqliteStore, StateStore};
use verge_testkit::scratch;

fn fixture(name: &str, dir: &Path) -> PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let to = dir.join(name);
    std::fs::copy(&from, &to).unwrap();
    to
}

fn version(path: &Path) -> (u32, String, String) {
    let db = Connection::open(path).unwrap();
    let meta = |k: &str| {
        db.query_row("SELECT value FROM verge_meta WHERE key = ?1", [k], |r| {
            r.get(0)
        })
        .unwrap()
    };
    let v = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    (v, meta("readable_from"), meta("written_by"))
}

fn outbox(path: &Path) -> Result<Outbox, String> {
    Outbox::open(path, 1 << 20, 1 << 16, Policy::RejectNew).map_err(|e| e.to_string())
}

#[test]
fn what_version_0_wrote_opens_and_keeps_every_key_and_message() {
    let dir = scratch("formats-v0");
    let state = fixture("state-v0.db", &dir);
    let store = SqliteStore::open(&state).unwrap();
    assert_eq!(
        store.get("probe", "default", "hits").unwrap().unwrap(),
        b"41"
    );
    assert_eq!(
        store.get("file-type", "seen", "last").unwrap().unwrap(),
        b"\x00\x01binary"
    );
    drop(store);
    let (v, readable_from, by) = version(&state);
    assert_eq!((v, readable_from.as_str()), (1, "1"));
    assert_eq!(by, env!("CARGO_PKG_VERSION"));

    let path = fixture("outbox-v0.db", &dir);
    let o = outbox(&path).unwrap();
    let queued = o.after(0, 10).unwrap();
    let ids: Vec<&str> = queued.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["m2", "m3"]);
    assert!(queued.windows(2).all(|w| w[0].seq < w[1].seq));
    // A new message goes after them, never reusing the sent one's seq.
    o.push("m4", "verge/t1/file-type", b"{}").unwrap();
    let all = o.after(0, 10).unwrap();
    assert_eq!(all.last().unwrap().id, "m4");
    assert!(all.last().unwrap().seq > 3);
    drop(o);
    // Opening again changes nothing.
    assert_eq!(outbox(&path).unwrap().after(0, 10).unwrap(), all);
    assert_eq!(version(&path).0, 1);
    std::fs::remove_dir_all(&dir).ok();
}

/// Makes `path` look as a newer verge-device left it.
fn from_the_future(path: &Path, schema: u32, readable_from: u32) {
    let db = Connection::open(path).unwrap();
    db.pragma_update(None, "user_version", schema).unwrap();
    db.execute(
        "INSERT OR REPLACE INTO verge_meta (key, value) VALUES ('readable_from', ?1), ('written_by', '9.9.9')",
        [readable_from.to_string()],
    )
    .unwrap();
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_newer_schema_opens_when_it_allows_and_is_refused_untouched_when_not() {
    let dir = scratch("formats-newer");
    let path = dir.join("outbox.db");
    let o = outbox(&path).unwrap();
    o.push("a", "t", b"{}").unwrap();
    drop(o);

    // Schema 2 that version 1 may still use (it only added): opens, and
    // stays schema 2.
    from_the_future(&path, 2, 1);
    let o = outbox(&path).unwrap();
    assert_eq!(o.after(0, 10).unwrap()[0].id, "a");
    drop(o);
    assert_eq!(version(&path).0, 2);

    // Schema 3 readable from 3 only: refused, naming both, nothing changed
    // (no migration, no "moved aside as corrupt").
    from_the_future(&path, 3, 3);
    let before = files(&dir);
    let refused = outbox(&path).err().unwrap();
    for says in [
        "schema 3",
        "9.9.9",
        "(schema 1)",
        "readable from schema 3",
        "left as it is",
    ] {
        assert!(refused.contains(says), "{says}: {refused}");
    }
    assert_eq!(files(&dir), before);
    let state = dir.join("state.db");
    SqliteStore::open(&state).unwrap();
    from_the_future(&state, 3, 3);
    let refused = SqliteStore::open(&state).err().unwrap().to_string();
    assert!(
        refused.contains("the state database has schema 3"),
        "{refused}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
