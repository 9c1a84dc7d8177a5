//! Durable state in SQLite: WAL, `synchronous=FULL` so that a write the
//! component saw succeed survives a power loss.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{PAGE, StateError, StateStore, incremented, page};

pub struct SqliteStore(Mutex<Connection>);

/// Opens a durable database at `path` (WAL, `synchronous=FULL`, a busy
/// timeout) and runs `schema` on it. The error is a message for the caller's
/// own store error: an open failure names the path.
///
/// A database SQLite reports corrupt (or not a database at all) is moved
/// aside, with its WAL, to `<name>.corrupt-<unix seconds>` (kept for
/// recovery, logged, counted in [`MOVED_ASIDE`]) and a fresh one is started:
/// an unattended device comes back rather than failing every start, as
/// Greengrass's own disk spooler does with a corrupt database.
pub(crate) fn open_durable(path: &Path, schema: &str) -> Result<Connection, String> {
    match open_checked(path, schema) {
        Err(e) if corrupt(&e) => {
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

fn open_checked(path: &Path, schema: &str) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         PRAGMA synchronous=FULL;
         PRAGMA busy_timeout=5000;",
    )?;
    // quick_check reads every page once: corruption found now, not mid-write.
    let verdict: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if verdict != "ok" {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some(verdict),
        ));
    }
    conn.execute_batch(schema)?;
    Ok(conn)
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

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StateError> {
        let conn = open_durable(
            path,
            "CREATE TABLE IF NOT EXISTS kv (
                 ns TEXT NOT NULL, bucket TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
                 PRIMARY KEY (ns, bucket, key)
             ) WITHOUT ROWID;",
        )
        .map_err(StateError::Store)?;
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
