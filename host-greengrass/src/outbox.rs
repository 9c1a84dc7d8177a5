//! The durable outbox: results bound for the cloud, kept in SQLite until the
//! cloud acknowledges them.
//!
//! A push is committed with `synchronous=FULL` (fsync) before it returns, so
//! a caller that got its answer can rely on the message surviving a crash or
//! a power loss. Messages keep their order (`seq`) and their unique id, which
//! is inside the payload, so a message sent again after a crash can be told
//! apart from a new one. The outbox is bounded in bytes (topic + payload).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, TransactionBehavior, params};
use serde_json::json;
use tokio::sync::Notify;

use serde::{Deserialize, Serialize};

use crate::log;

/// `[outbox]`: how much may wait for the cloud, and what gives when it is full.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Bytes queued at most (topics and payloads; default 64 MiB).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    #[serde(default = "default_policy")]
    pub policy: Policy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Make room by dropping the oldest messages.
    DropOldest,
    /// Keep what is queued; refuse the new message.
    RejectNew,
}

fn default_max_bytes() -> u64 {
    64 << 20
}
fn default_policy() -> Policy {
    Policy::DropOldest
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_bytes: default_max_bytes(),
            policy: default_policy(),
        }
    }
}

impl Settings {
    pub fn check(&self) -> Result<(), String> {
        if self.max_bytes == 0 {
            return Err("outbox.max_bytes must be positive".into());
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox store: {0}")]
    Store(String),
    #[error(
        "outbox full: {queued} of {max} bytes queued, this message needs {needed} (policy reject-new)"
    )]
    Full { queued: u64, needed: u64, max: u64 },
    #[error("message of {needed} bytes is over the {max} byte limit of one message")]
    TooLarge { needed: u64, max: u64 },
}

impl From<rusqlite::Error> for OutboxError {
    fn from(e: rusqlite::Error) -> Self {
        OutboxError::Store(e.to_string())
    }
}

/// One queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its place in the queue: increasing, never reused.
    pub seq: u64,
    pub id: String,
    pub topic: String,
    pub payload: Vec<u8>,
}

/// Counters for `/metrics`, readable without the lock.
#[derive(Debug, Default)]
pub struct Stats {
    pub depth: AtomicU64,
    pub bytes: AtomicU64,
    pub dropped_messages: AtomicU64,
    pub dropped_bytes: AtomicU64,
    pub rejected_messages: AtomicU64,
    pub rejected_bytes: AtomicU64,
}

pub struct Outbox {
    conn: Mutex<Connection>,
    max_bytes: u64,
    /// Largest single message (the uplink's packet bound).
    max_message: u64,
    policy: Policy,
    stats: Stats,
    /// Woken on every push, so the sender need not poll.
    pushed: Notify,
}

fn size(topic: &str, payload: &[u8]) -> u64 {
    (topic.len() + payload.len()) as u64
}

/// A fresh message id: 128 random bits as hex.
pub fn new_id() -> Result<String, OutboxError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| OutboxError::Store(format!("random id: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `outbox.db`'s schema (see [`crate::state::Schema`] for the rule a change follows).
const SCHEMA: crate::state::Schema = crate::state::Schema {
    name: "outbox",
    migrations: &[
        // 1: the schema of verge-device 0.1, before versions were recorded.
        "CREATE TABLE IF NOT EXISTS outbox (
             seq INTEGER PRIMARY KEY AUTOINCREMENT,
             id TEXT NOT NULL UNIQUE,
             topic TEXT NOT NULL,
             payload BLOB NOT NULL,
             bytes INTEGER NOT NULL
         );",
    ],
    next: "ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;",
    readable_from: 1,
};

impl Outbox {
    pub fn open(
        path: &Path,
        max_bytes: u64,
        max_message: u64,
        policy: Policy,
    ) -> Result<Outbox, OutboxError> {
        let conn = crate::state::open_durable(path, &SCHEMA).map_err(OutboxError::Store)?;
        let (depth, bytes): (u64, u64) = conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM outbox",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let outbox = Outbox {
            conn: Mutex::new(conn),
            max_bytes,
            max_message: max_message.min(max_bytes),
            policy,
            stats: Stats::default(),
            pushed: Notify::new(),
        };
        outbox.stats.depth.store(depth, Ordering::Relaxed);
        outbox.stats.bytes.store(bytes, Ordering::Relaxed);
        // Queued under an uplink that carried more (mqtt, then greengrass-ipc):
        // kept on disk, never sent through this one, so they block nothing.
        let conn = outbox.conn();
        let (over, over_bytes): (u64, u64) = conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM outbox WHERE bytes > ?1",
            [outbox.max_message],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        drop(conn);
        if over > 0 {
            log::warn(
                "outbox messages larger than this uplink carries stay in the outbox, unsent",
                json!({ "messages": over, "bytes": over_bytes, "max_message": outbox.max_message }),
            );
        }
        Ok(outbox)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // SQLite rolls back whatever a panicking holder left open.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Disk the outbox may still need to fill up to `max_bytes`: what is not
    /// queued yet, a quarter more for SQLite's pages and index, and the
    /// write-ahead log SQLite keeps until a checkpoint (1,000 pages, 4 MiB).
    pub fn disk_reserve(&self) -> u64 {
        let left = self
            .max_bytes
            .saturating_sub(self.stats.bytes.load(Ordering::Relaxed));
        left + left / 4 + (4 << 20)
    }

    /// Commits a message durably, applying the policy when the outbox is full.
    pub fn push(&self, id: &str, topic: &str, payload: &[u8]) -> Result<u64, OutboxError> {
        let needed = size(topic, payload);
        let reject = |e: OutboxError| {
            self.stats.rejected_messages.fetch_add(1, Ordering::Relaxed);
            self.stats
                .rejected_bytes
                .fetch_add(needed, Ordering::Relaxed);
            log::warn(
                "outbox rejected a message",
                json!({ "id": id, "topic": topic, "bytes": needed, "reason": e.to_string() }),
            );
            Err(e)
        };
        if needed > self.max_message {
            return reject(OutboxError::TooLarge {
                needed,
                max: self.max_message,
            });
        }
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut queued = self.stats.bytes.load(Ordering::Relaxed);
        let mut dropped = Vec::new();
        if queued + needed > self.max_bytes {
            if self.policy == Policy::RejectNew {
                drop(tx);
                return reject(OutboxError::Full {
                    queued,
                    needed,
                    max: self.max_bytes,
                });
            }
            let mut oldest =
                tx.prepare_cached("SELECT seq, id, bytes FROM outbox ORDER BY seq LIMIT 64")?;
            while queued + needed > self.max_bytes {
                let batch = oldest
                    .query_map([], |r| Ok((r.get::<_, u64>(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<Result<Vec<(u64, String, u64)>, _>>()?;
                if batch.is_empty() {
                    break;
                }
                for (seq, old_id, bytes) in batch {
                    if queued + needed <= self.max_bytes {
                        break;
                    }
                    tx.execute("DELETE FROM outbox WHERE seq = ?1", [seq])?;
                    queued -= bytes;
                    dropped.push((old_id, bytes));
                }
            }
        }
        tx.execute(
            "INSERT INTO outbox (id, topic, payload, bytes) VALUES (?1, ?2, ?3, ?4)",
            params![id, topic, payload, needed],
        )?;
        let seq = tx.last_insert_rowid() as u64;
        tx.commit()?;
        drop(conn);

        let dropped_bytes: u64 = dropped.iter().map(|(_, b)| b).sum();
        self.stats.depth.fetch_add(1, Ordering::Relaxed);
        self.stats
            .depth
            .fetch_sub(dropped.len() as u64, Ordering::Relaxed);
        self.stats.bytes.store(queued + needed, Ordering::Relaxed);
        if !dropped.is_empty() {
            self.stats
                .dropped_messages
                .fetch_add(dropped.len() as u64, Ordering::Relaxed);
            self.stats
                .dropped_bytes
                .fetch_add(dropped_bytes, Ordering::Relaxed);
            log::warn(
                "outbox full: dropped the oldest messages (policy drop-oldest)",
                json!({
                    "dropped": dropped.len(),
                    "bytes": dropped_bytes,
                    "ids": dropped.iter().map(|(id, _)| id).collect::<Vec<_>>(),
                }),
            );
        }
        self.pushed.notify_one();
        Ok(seq)
    }

    /// Up to `limit` messages after `seq`, oldest first.
    pub fn after(&self, seq: u64, limit: usize) -> Result<Vec<Message>, OutboxError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, id, topic, payload FROM outbox WHERE seq > ?1 AND bytes <= ?3 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![seq, limit as i64, self.max_message], |r| {
                Ok(Message {
                    seq: r.get(0)?,
                    id: r.get(1)?,
                    topic: r.get(2)?,
                    payload: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Removes acknowledged messages (those already dropped are ignored).
    pub fn remove(&self, seqs: &[u64]) -> Result<(), OutboxError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut removed = 0;
        let mut freed = 0;
        {
            let mut stmt =
                tx.prepare_cached("DELETE FROM outbox WHERE seq = ?1 RETURNING bytes")?;
            for seq in seqs {
                let bytes: Option<u64> = stmt.query_map([seq], |r| r.get(0))?.next().transpose()?;
                if let Some(b) = bytes {
                    removed += 1;
                    freed += b;
                }
            }
        }
        tx.commit()?;
        self.stats.depth.fetch_sub(removed, Ordering::Relaxed);
        self.stats.bytes.fetch_sub(freed, Ordering::Relaxed);
        Ok(())
    }

    /// Waits until something is pushed (returns at once if a push came since
    /// the last wait).
    pub async fn pushed(&self) {
        self.pushed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("verge-outbox-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn messages_over_a_smaller_uplinks_bound_stay_unsent_and_block_nothing() {
        let d = dir("smaller");
        let path = d.join("outbox.db");
        let big = Outbox::open(&path, 1 << 20, 1 << 16, Policy::RejectNew).unwrap();
        big.push("large", "t", &[b'x'; 9000]).unwrap();
        big.push("small", "t", b"{}").unwrap();
        drop(big);
        // Reopened for an uplink that carries 7,000 bytes (greengrass-ipc).
        let small = Outbox::open(&path, 1 << 20, 7000, Policy::RejectNew).unwrap();
        let ids: Vec<String> = small
            .after(0, 10)
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, ["small"]);
        assert_eq!(
            small.stats().depth.load(Ordering::Relaxed),
            2,
            "kept on disk"
        );
        drop(small);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_corrupt_outbox_is_moved_aside_and_started_anew() {
        let d = dir("corrupt");
        let path = d.join("outbox.db");
        // Not a database at all, then a database whose pages are damaged.
        std::fs::write(&path, b"this is not an SQLite database, it is garbage").unwrap();
        let before = crate::state::MOVED_ASIDE.load(Ordering::Relaxed);
        let outbox = Outbox::open(&path, 1 << 20, 1 << 16, Policy::DropOldest).unwrap();
        outbox.push("a", "t", b"payload").unwrap();
        drop(outbox);
        assert!(crate::state::MOVED_ASIDE.load(Ordering::Relaxed) > before);
        let aside: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().to_string()))
            .filter(|n| n.starts_with("outbox.db.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert_eq!(
            std::fs::read(d.join(&aside[0])).unwrap(),
            b"this is not an SQLite database, it is garbage",
            "kept as it was, for recovery"
        );
        // The fresh one kept its message; now damage it past the header.
        let mut bytes = std::fs::read(&path).unwrap();
        if bytes.len() < 8192 {
            let reopened = Outbox::open(&path, 1 << 20, 1 << 16, Policy::DropOldest).unwrap();
            assert_eq!(reopened.stats.depth.load(Ordering::Relaxed), 1);
            drop(reopened);
            bytes = std::fs::read(&path).unwrap();
        }
        let len = bytes.len();
        for b in &mut bytes[100..len.min(4096)] {
            *b = 0xff;
        }
        std::fs::write(&path, &bytes).unwrap();
        let _ = std::fs::remove_file(d.join("outbox.db-wal"));
        let fresh = Outbox::open(&path, 1 << 20, 1 << 16, Policy::DropOldest).unwrap();
        assert_eq!(fresh.stats.depth.load(Ordering::Relaxed), 0);
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn keeps_order_and_ids_across_reopening() {
        let d = dir("order");
        let path = d.join("outbox.db");
        let o = Outbox::open(&path, 1 << 20, 1 << 20, Policy::RejectNew).unwrap();
        let ids: Vec<String> = (0..5).map(|_| new_id().unwrap()).collect();
        for (i, id) in ids.iter().enumerate() {
            o.push(id, "t", format!("m{i}").as_bytes()).unwrap();
        }
        let first = o.after(0, 2).unwrap();
        o.remove(&[first[0].seq]).unwrap();
        drop(o);
        let o = Outbox::open(&path, 1 << 20, 1 << 20, Policy::RejectNew).unwrap();
        assert_eq!(o.stats().depth.load(Ordering::Relaxed), 4);
        let rest = o.after(0, 10).unwrap();
        assert_eq!(
            rest.iter().map(|m| &m.id).collect::<Vec<_>>(),
            ids[1..].iter().collect::<Vec<_>>()
        );
        assert_eq!(rest[0].payload, b"m1");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn applies_its_policy_when_full() {
        let d = dir("policy");
        // Each message: topic "t" (1) + payload (9) = 10 bytes; room for 3.
        let o = Outbox::open(&d.join("a.db"), 35, 35, Policy::DropOldest).unwrap();
        for i in 0..5 {
            o.push(&format!("id{i}"), "t", b"123456789").unwrap();
        }
        let left: Vec<String> = o.after(0, 10).unwrap().into_iter().map(|m| m.id).collect();
        assert_eq!(left, ["id2", "id3", "id4"]);
        assert_eq!(o.stats().dropped_messages.load(Ordering::Relaxed), 2);
        assert_eq!(o.stats().dropped_bytes.load(Ordering::Relaxed), 20);
        assert_eq!(o.stats().bytes.load(Ordering::Relaxed), 30);

        let o = Outbox::open(&d.join("b.db"), 35, 35, Policy::RejectNew).unwrap();
        for i in 0..3 {
            o.push(&format!("id{i}"), "t", b"123456789").unwrap();
        }
        assert!(matches!(
            o.push("id3", "t", b"123456789"),
            Err(OutboxError::Full { .. })
        ));
        assert!(matches!(
            o.push("big", "t", &[0; 100]),
            Err(OutboxError::TooLarge { .. })
        ));
        assert_eq!(o.stats().rejected_messages.load(Ordering::Relaxed), 2);
        assert_eq!(o.stats().depth.load(Ordering::Relaxed), 3);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
