//! Component state behind `wasi:keyvalue`: a small [`StateStore`] trait, an
//! in-memory store (one-shot runs) and a durable SQLite store (the daemon).
//!
//! Every key lives in a namespace (one per component, chosen by the host) and
//! a bucket (chosen by the component through `store.open`), so components
//! never see each other's state.

use std::collections::BTreeMap;
use std::sync::Mutex;

pub mod quota;
mod sqlite;
pub(crate) mod wit;

pub use quota::{QuotaStore, StateQuota};
pub use sqlite::MOVED_ASIDE;
pub use sqlite::SqliteStore;
pub(crate) use sqlite::{Schema, open_durable};

/// How many keys one `list-keys` page holds.
pub const PAGE: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store: {0}")]
    Store(String),
    #[error("value of '{0}' is not a decimal counter")]
    NotACounter(String),
    #[error("counter '{0}' would overflow")]
    Overflow(String),
    /// Over the component's state budget (its message says which and how far).
    #[error("{0}")]
    Quota(String),
}

impl From<rusqlite::Error> for StateError {
    fn from(e: rusqlite::Error) -> Self {
        StateError::Store(e.to_string())
    }
}

/// A key-value store shared by every instance of a host. Calls are blocking:
/// the host runs components on blocking threads.
pub trait StateStore: Send + Sync {
    fn get(&self, ns: &str, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, StateError>;
    fn set(&self, ns: &str, bucket: &str, key: &str, value: &[u8]) -> Result<(), StateError>;
    fn delete(&self, ns: &str, bucket: &str, key: &str) -> Result<(), StateError>;
    fn exists(&self, ns: &str, bucket: &str, key: &str) -> Result<bool, StateError> {
        Ok(self.get(ns, bucket, key)?.is_some())
    }
    /// Keys in order, a page at a time; the cursor is how many to skip.
    fn list_keys(
        &self,
        ns: &str,
        bucket: &str,
        cursor: u64,
    ) -> Result<(Vec<String>, Option<u64>), StateError>;
    /// Adds `delta` to a counter kept as decimal text (as wasmtime-wasi-keyvalue
    /// keeps it), atomically; a missing key counts from 0.
    fn increment(&self, ns: &str, bucket: &str, key: &str, delta: u64) -> Result<u64, StateError>;
    /// What a namespace holds: bytes of buckets, keys and values, and its number of keys.
    fn usage(&self, ns: &str) -> Result<(u64, u64), StateError>;
    /// The length of a value, without reading it.
    fn value_len(&self, ns: &str, bucket: &str, key: &str) -> Result<Option<u64>, StateError> {
        Ok(self.get(ns, bucket, key)?.map(|v| v.len() as u64))
    }
}

/// The arithmetic of `increment`, shared by every store.
pub(crate) fn incremented(key: &str, old: Option<&[u8]>, delta: u64) -> Result<u64, StateError> {
    let old = match old {
        None => 0,
        Some(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|t| t.parse::<u64>().ok())
            .ok_or_else(|| StateError::NotACounter(key.into()))?,
    };
    old.checked_add(delta)
        .ok_or_else(|| StateError::Overflow(key.into()))
}

type Key = (String, String, String);

/// State in memory, for one-shot runs and tests.
#[derive(Default)]
pub struct MemoryStore(Mutex<BTreeMap<Key, Vec<u8>>>);

impl MemoryStore {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, Vec<u8>>> {
        // A poisoned map is still a consistent map: every write is one insert.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn key(ns: &str, bucket: &str, key: &str) -> Key {
    (ns.into(), bucket.into(), key.into())
}

impl StateStore for MemoryStore {
    fn get(&self, ns: &str, bucket: &str, k: &str) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.map().get(&key(ns, bucket, k)).cloned())
    }

    fn set(&self, ns: &str, bucket: &str, k: &str, value: &[u8]) -> Result<(), StateError> {
        self.map().insert(key(ns, bucket, k), value.to_vec());
        Ok(())
    }

    fn delete(&self, ns: &str, bucket: &str, k: &str) -> Result<(), StateError> {
        self.map().remove(&key(ns, bucket, k));
        Ok(())
    }

    fn list_keys(
        &self,
        ns: &str,
        bucket: &str,
        cursor: u64,
    ) -> Result<(Vec<String>, Option<u64>), StateError> {
        let map = self.map();
        let keys: Vec<String> = map
            .keys()
            .filter(|(n, b, _)| n == ns && b == bucket)
            .skip(cursor as usize)
            .take(PAGE + 1)
            .map(|(_, _, k)| k.clone())
            .collect();
        Ok(page(keys, cursor))
    }

    fn increment(&self, ns: &str, bucket: &str, k: &str, delta: u64) -> Result<u64, StateError> {
        let mut map = self.map();
        let entry = key(ns, bucket, k);
        let new = incremented(k, map.get(&entry).map(Vec::as_slice), delta)?;
        map.insert(entry, new.to_string().into_bytes());
        Ok(new)
    }

    fn usage(&self, ns: &str) -> Result<(u64, u64), StateError> {
        let map = self.map();
        let mine = map.iter().filter(|((n, _, _), _)| n == ns);
        Ok(mine.fold((0, 0), |(bytes, keys), ((_, b, k), v)| {
            (bytes + (b.len() + k.len() + v.len()) as u64, keys + 1)
        }))
    }
}

/// Cuts a fetch of up to `PAGE + 1` keys into a page and the next cursor.
pub(crate) fn page(mut keys: Vec<String>, cursor: u64) -> (Vec<String>, Option<u64>) {
    if keys.len() > PAGE {
        keys.truncate(PAGE);
        (keys, Some(cursor + PAGE as u64))
    } else {
        (keys, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(store: &dyn StateStore) {
        assert_eq!(store.get("a", "", "k").unwrap(), None);
        store.set("a", "", "k", b"v").unwrap();
        assert_eq!(store.get("a", "", "k").unwrap().as_deref(), Some(&b"v"[..]));
        // Namespaces and buckets are separate.
        assert_eq!(store.get("b", "", "k").unwrap(), None);
        assert_eq!(store.get("a", "other", "k").unwrap(), None);
        assert!(store.exists("a", "", "k").unwrap());
        assert_eq!(store.increment("a", "", "n", 2).unwrap(), 2);
        assert_eq!(store.increment("a", "", "n", 3).unwrap(), 5);
        assert!(matches!(
            store.increment("a", "", "k", 1),
            Err(StateError::NotACounter(_))
        ));
        store
            .set("a", "", "max", u64::MAX.to_string().as_bytes())
            .unwrap();
        assert!(matches!(
            store.increment("a", "", "max", 1),
            Err(StateError::Overflow(_))
        ));
        for i in 0..PAGE + 5 {
            store.set("p", "", &format!("{i:05}"), b"").unwrap();
        }
        let (first, next) = store.list_keys("p", "", 0).unwrap();
        assert_eq!((first.len(), next), (PAGE, Some(PAGE as u64)));
        let (rest, next) = store.list_keys("p", "", PAGE as u64).unwrap();
        assert_eq!((rest.len(), next), (5, None));
        assert_eq!(rest[0], format!("{PAGE:05}"));
        store.delete("a", "", "k").unwrap();
        assert!(!store.exists("a", "", "k").unwrap());
    }

    #[test]
    fn memory_store_keeps_namespaces_apart() {
        exercise(&MemoryStore::default());
    }

    #[test]
    fn sqlite_store_keeps_namespaces_apart_and_survives_reopening() {
        let dir = std::env::temp_dir().join(format!("verge-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.db");
        exercise(&SqliteStore::open(&path).unwrap());
        let again = SqliteStore::open(&path).unwrap();
        assert_eq!(again.increment("a", "", "n", 1).unwrap(), 6);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
