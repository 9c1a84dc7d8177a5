//! Durable state in SQLite: WAL, `synchronous=FULL` so that a write the
//! component saw succeed survives a power loss.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{PAGE, StateError, StateStore, incremented, page};

pub struct SqliteStore(Mutex<Connection>);

/// A durable database's schema, versioned. `migrations[i]` takes a
/// database from version `i` to `i + 1`; version 0 is a new file, or one
/// written before versions were recorded (its tables were created with `IF
/// NOT EXISTS`, so migration 1 is their creation, again harmless).
///
/// The version is SQLite's `user_version`; `verge_meta` records
/// `readable_from` and `written_by` (the verge version that last opened it
/// for writing). **The rule for every schema change**, so that one rollback
/// step always works:
///
/// * never edit a released migration: add one, and a fixture of the
///   released schema in `tests/fixtures/` that the new binary must open;
/// * a change that only adds (a table, an index, a column with a default)
///   keeps `readable_from`: the previous binary reads and writes the new
///   database and never sees what it does not know;
/// * any other change sets `readable_from` to its own version: the previous
///   binary then refuses the database, naming both versions, and leaves the
///   file as it is (a rollback never loses queued messages to a misreading).
pub(crate) struct Schema {
    /// Which database, for messages.
    pub name: &'static str,
    pub migrations: &'static [&'static str],
    /// An additive change (it keeps `readable_from`) that only the test-only
    /// `schema-next` build applies, as version `migrations.len() + 1`: the
    /// next release, for the upgrade and rollback test (tests/upgrade.rs).
    pub next: &'static str,
    /// The oldest schema version whose code may read and write a database of
    /// the newest one.
    pub readable_from: u32,
}

impl Schema {
    fn version(&self) -> u32 {
        self.migrations().count() as u32
    }

    fn migrations(&self) -> impl Iterator<Item = &'static str> {
        let next = cfg!(feature = "schema-next").then_some(self.next);
        self.migrations.iter().copied().chain(next)
    }
}

/// Why a database did not open.
enum OpenError {
    Sqlite(rusqlite::Error),
    /// Written by a newer verge-device, in a schema this one cannot use.
    Newer(String),
}

impl From<rusqlite::Error> for OpenError {
    fn from(e: rusqlite::Error) -> Self {
        OpenError::Sqlite(e)
    }
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Sqlite(e) => write!(f, "{e}"),
            OpenError::Newer(why) => f.write_str(why),
        }
    }
}

/// Opens a durable database at `path` (WAL, `synchronous=FULL`, a busy
/// timeout) and brings it to `schema`'s version in one transaction. The
/// error is a message for the caller's own store error: an open failure
/// names the path.
///
/// A database SQLite reports corrupt (or not a database at all) is moved
/// aside, with its WAL, to `<name>.corrupt-<unix seconds>` (kept for
/// recovery, logged, counted in [`MOVED_ASIDE`]) and a fresh one is started:
/// an unattended device comes back rather than failing every start, as
/// Greengrass's own disk spooler does with a corrupt database.
pub(crate) fn open_durable(path: &Path, schema: &Schema) -> Result<Connection, String> {
    match open_checked(path, schema) {
        Err(OpenError::Sqlite(e)) if corrupt(&e) => {
            let aside = move_aside(path)?;
            crate::log::warn(
                "database corrupt: moved aside, starting a fresh one",
                serde_json::json!({ "path": path.display().to_string(), "moved_to": aside.display().to_string(), "error": e.to_string() }),
            );
            MOVED_ASIDE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            open_checked(path, schema).map_err(|e| format!("{}: {e}", path.display()))
        }
        other => other.map_err(|e| format!("{}: {e}", path.display())),
    }
}

/// Databases moved aside as corrupt since the process started.
pub static MOVED_ASIDE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn open_checked(path: &Path, schema: &Schema) -> Result<Connection, OpenError> {
    let mut conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         PRAGMA synchronous=FULL;
         PRAGMA busy_timeout=5000;",
    )?;
    // quick_check reads every page once: corruption found now, not mid-write.
    let verdict: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if verdict != "ok" {
        return Err(OpenError::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some(verdict),
        )));
    }
    migrate(&mut conn, schema)?;
    Ok(conn)
}

/// Brings the database to `schema`'s version (every migration and the
/// version record in one transaction), or refuses one a newer verge wrote
/// in a schema this binary cannot use; a refusal changes nothing.
fn migrate(conn: &mut Connection, schema: &Schema) -> Result<(), OpenError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS verge_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    )?;
    let meta = |key: &str| -> rusqlite::Result<Option<String>> {
        tx.query_row("SELECT value FROM verge_meta WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .optional()
    };
    let on_disk: u32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let ours = schema.version();
    if on_disk > ours {
        let readable_from = meta("readable_from")?
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(on_disk);
        if readable_from > ours {
            let by = meta("written_by")?.unwrap_or_else(|| "an unknown version".into());
            return Err(OpenError::Newer(format!(
                "the {} database has schema {on_disk} (written by verge-device {by}), which \
                 verge-device {} (schema {ours}) cannot use: it is readable from schema \
                 {readable_from} on. Run a newer verge-device; the file is left as it is",
                schema.name,
                crate::VERSION,
            )));
        }
    } else if on_disk < ours {
        for migration in schema.migrations().skip(on_disk as usize) {
            tx.execute_batch(migration)?;
        }
        tx.pragma_update(None, "user_version", ours)?;
        tx.execute(
            "INSERT OR REPLACE INTO verge_meta (key, value) VALUES ('readable_from', ?1)",
            [schema.readable_from.to_string()],
        )?;
    }
    // Written only when it changes: reopening what this version wrote
    // writes nothing (a daemon starts on a full disk, and serves).
    if meta("written_by")?.as_deref() != Some(crate::VERSION) {
        tx.execute(
            "INSERT OR REPLACE INTO verge_meta (key, value) VALUES ('written_by', ?1)",
            [crate::VERSION],
        )?;
    }
    tx.commit()?;
    Ok(())
}

fn corrupt(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

fn move_aside(path: &Path) -> Result<std::path::PathBuf, String> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = path
        .file_name()
        .map_or("db".into(), |n| n.to_string_lossy().to_string());
    let aside = path.with_file_name(format!("{name}.corrupt-{secs}"));
    for suffix in ["", "-wal", "-shm"] {
        let from = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        let to = std::path::PathBuf::from(format!("{}{suffix}", aside.display()));
        if from.exists() {
            std::fs::rename(&from, &to).map_err(|e| {
                format!(
                    "{} is corrupt and could not be moved aside: {e}",
                    path.display()
                )
            })?;
        }
    }
    Ok(aside)
}

/// `state.db`'s schema (see [`Schema`] for the rule a change follows).
const SCHEMA: Schema = Schema {
    name: "state",
    migrations: &[
        // 1: the schema of verge-device 0.1, before versions were recorded.
        "CREATE TABLE IF NOT EXISTS kv (
             ns TEXT NOT NULL, bucket TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
             PRIMARY KEY (ns, bucket, key)
         ) WITHOUT ROWID;",
    ],
    next: "ALTER TABLE kv ADD COLUMN written_ms INTEGER NOT NULL DEFAULT 0;",
    readable_from: 1,
};

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StateError> {
        let conn = open_durable(path, &SCHEMA).map_err(StateError::Store)?;
        Ok(SqliteStore(Mutex::new(conn)))
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // SQLite rolls back whatever a panicking holder left open.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl StateStore for SqliteStore {
    fn get(&self, ns: &str, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT value FROM kv WHERE ns = ?1 AND bucket = ?2 AND key = ?3")?
            .query_row(params![ns, bucket, key], |r| r.get(0))
            .optional()?)
    }

    fn set(&self, ns: &str, bucket: &str, key: &str, value: &[u8]) -> Result<(), StateError> {
        self.conn()
            .prepare_cached(
                "INSERT OR REPLACE INTO kv (ns, bucket, key, value) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![ns, bucket, key, value])?;
        Ok(())
    }

    fn delete(&self, ns: &str, bucket: &str, key: &str) -> Result<(), StateError> {
        self.conn()
            .prepare_cached("DELETE FROM kv WHERE ns = ?1 AND bucket = ?2 AND key = ?3")?
            .execute(params![ns, bucket, key])?;
        Ok(())
    }

    fn list_keys(
        &self,
        ns: &str,
        bucket: &str,
        cursor: u64,
    ) -> Result<(Vec<String>, Option<u64>), StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT key FROM kv WHERE ns = ?1 AND bucket = ?2 ORDER BY key LIMIT ?3 OFFSET ?4",
        )?;
        let keys = stmt
            .query_map(params![ns, bucket, (PAGE + 1) as i64, cursor as i64], |r| {
                r.get(0)
            })?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(page(keys, cursor))
    }

    fn increment(&self, ns: &str, bucket: &str, key: &str, delta: u64) -> Result<u64, StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let old: Option<Vec<u8>> = tx
            .query_row(
                "SELECT value FROM kv WHERE ns = ?1 AND bucket = ?2 AND key = ?3",
                params![ns, bucket, key],
                |r| r.get(0),
            )
            .optional()?;
        let new = incremented(key, old.as_deref(), delta)?;
        tx.execute(
            "INSERT OR REPLACE INTO kv (ns, bucket, key, value) VALUES (?1, ?2, ?3, ?4)",
            params![ns, bucket, key, new.to_string().into_bytes()],
        )?;
        tx.commit()?;
        Ok(new)
    }

    fn value_len(&self, ns: &str, bucket: &str, key: &str) -> Result<Option<u64>, StateError> {
        let len: Option<i64> = self
            .conn()
            .prepare_cached(
                "SELECT LENGTH(value) FROM kv WHERE ns = ?1 AND bucket = ?2 AND key = ?3",
            )?
            .query_row(params![ns, bucket, key], |r| r.get(0))
            .optional()?;
        Ok(len.map(|n| n as u64))
    }

    fn usage(&self, ns: &str) -> Result<(u64, u64), StateError> {
        let (bytes, keys): (i64, i64) = self
            .conn()
            .prepare_cached(
                "SELECT COALESCE(SUM(LENGTH(bucket) + LENGTH(key) + LENGTH(value)), 0), COUNT(*) FROM kv WHERE ns = ?1",
            )?
            .query_row(params![ns], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok((bytes as u64, keys as u64))
    }
}
