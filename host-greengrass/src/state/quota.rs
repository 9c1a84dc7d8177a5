//! Per-component budgets for durable state: a [`StateStore`] in front of
//! another, refusing a write that would take a namespace over its bytes (keys
//! plus values) or its number of keys. The component sees the refusal as a
//! `wasi:keyvalue` error; every refusal is counted (`/metrics`). With a
//! [`DiskReserve`], it also refuses a write that would eat into the disk the
//! outbox may still need, so state cannot starve the outbox.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::{StateError, StateStore};

/// What one component's state may hold (`[state]` in the daemon's configuration).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StateQuota {
    /// Bytes of keys and values, per component (default 16 MiB).
    #[serde(default = "default_bytes")]
    pub max_bytes_per_component: u64,
    /// Keys, per component (default 10,000).
    #[serde(default = "default_keys")]
    pub max_keys_per_component: u64,
}

fn default_bytes() -> u64 {
    16 << 20
}
fn default_keys() -> u64 {
    10_000
}

impl Default for StateQuota {
    fn default() -> Self {
        StateQuota {
            max_bytes_per_component: default_bytes(),
            max_keys_per_component: default_keys(),
        }
    }
}

/// `inner`, with every namespace held to `quota`.
pub struct QuotaStore {
    inner: Arc<dyn StateStore>,
    quota: StateQuota,
    refusals: Arc<AtomicU64>,
    disk: Option<DiskReserve>,
}

/// Disk that state writes must leave free on the filesystem of `dir`: what
/// `reserve` says others (the outbox) may still need.
pub struct DiskReserve {
    dir: PathBuf,
    reserve: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl DiskReserve {
    pub fn new(dir: &Path, reserve: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        DiskReserve {
            dir: dir.to_path_buf(),
            reserve: Box::new(reserve),
        }
    }

    /// Why writing `len` more bytes would leave too little, if it would.
    fn refuses(&self, len: u64) -> Option<String> {
        let free = free_bytes(&self.dir).ok()?;
        let reserve = (self.reserve)();
        // SQLite writes a value twice (the WAL, then the database) before
        // the checkpoint frees the WAL's copy.
        let needed = len.saturating_mul(2).saturating_add(reserve);
        (free < needed).then(|| {
            format!(
                "disk: {free} bytes free where the state is, and the outbox keeps {reserve} of them for itself"
            )
        })
    }
}

/// Bytes an unprivileged process may still write on the filesystem of `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a valid C string; `stat` is written by a successful call.
    if unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    // The field types differ between targets (u32 on 32-bit ARM).
    #[allow(clippy::unnecessary_cast)]
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

impl QuotaStore {
    /// Refusals are added to `refusals` (the daemon's metric).
    pub fn new(inner: Arc<dyn StateStore>, quota: StateQuota, refusals: Arc<AtomicU64>) -> Self {
        QuotaStore {
            inner,
            quota,
            refusals,
            disk: None,
        }
    }

    /// Also refuses writes that would eat into `reserve`.
    pub fn with_disk_reserve(mut self, reserve: DiskReserve) -> Self {
        self.disk = Some(reserve);
        self
    }

    /// Refuses writing `key` = `len` bytes into `ns` when that goes over the quota.
    fn admit(&self, ns: &str, bucket: &str, key: &str, len: u64) -> Result<(), StateError> {
        let (bytes, keys) = self.inner.usage(ns)?;
        // Only the old value's length: a replaced value is not read.
        let old = self.inner.value_len(ns, bucket, key)?;
        let entry = |v: u64| key.len() as u64 + bucket.len() as u64 + v;
        let (bytes, keys) = match old {
            Some(v) => (bytes - entry(v).min(bytes) + entry(len), keys),
            None => (bytes + entry(len), keys + 1),
        };
        let q = &self.quota;
        let refusal = if bytes > q.max_bytes_per_component {
            Some(format!(
                "state quota: this write would make {bytes} bytes; a component may keep {}",
                q.max_bytes_per_component
            ))
        } else if keys > q.max_keys_per_component {
            Some(format!(
                "state quota: this write would make {keys} keys; a component may keep {}",
                q.max_keys_per_component
            ))
        } else {
            self.disk.as_ref().and_then(|d| d.refuses(len))
        };
        match refusal {
            Some(why) => {
                self.refusals.fetch_add(1, Ordering::Relaxed);
                Err(StateError::Quota(why))
            }
            None => Ok(()),
        }
    }
}

impl StateStore for QuotaStore {
    fn get(&self, ns: &str, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.inner.get(ns, bucket, key)
    }

    fn set(&self, ns: &str, bucket: &str, key: &str, value: &[u8]) -> Result<(), StateError> {
        self.admit(ns, bucket, key, value.len() as u64)?;
        self.inner.set(ns, bucket, key, value)
    }

    fn delete(&self, ns: &str, bucket: &str, key: &str) -> Result<(), StateError> {
        self.inner.delete(ns, bucket, key)
    }

    fn list_keys(
        &self,
        ns: &str,
        bucket: &str,
        cursor: u64,
    ) -> Result<(Vec<String>, Option<u64>), StateError> {
        self.inner.list_keys(ns, bucket, cursor)
    }

    fn increment(&self, ns: &str, bucket: &str, key: &str, delta: u64) -> Result<u64, StateError> {
        // A counter is at most 20 decimal digits.
        self.admit(ns, bucket, key, 20)?;
        self.inner.increment(ns, bucket, key, delta)
    }

    fn usage(&self, ns: &str) -> Result<(u64, u64), StateError> {
        self.inner.usage(ns)
    }

    fn value_len(&self, ns: &str, bucket: &str, key: &str) -> Result<Option<u64>, StateError> {
        self.inner.value_len(ns, bucket, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryStore;

    #[test]
    fn writes_over_the_budget_are_refused_and_counted() {
        let refusals = Arc::new(AtomicU64::new(0));
        let quota = StateQuota {
            max_bytes_per_component: 100,
            max_keys_per_component: 3,
        };
        let s = QuotaStore::new(Arc::new(MemoryStore::default()), quota, refusals.clone());
        s.set("a", "b", "k1", &[0; 40]).unwrap();
        // Replacing a value counts its new size only.
        s.set("a", "b", "k1", &[0; 80]).unwrap();
        let e = s.set("a", "b", "k2", &[0; 40]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "state quota: this write would make 126 bytes; a component may keep 100"
        );
        // Another component's namespace has its own budget.
        s.set("other", "b", "k2", &[0; 40]).unwrap();
        s.delete("a", "b", "k1").unwrap();
        for k in ["x", "y", "z"] {
            s.set("a", "b", k, b"1").unwrap();
        }
        let e = s.increment("a", "b", "w", 1).unwrap_err();
        assert!(
            e.to_string().contains("4 keys; a component may keep 3"),
            "{e}"
        );
        assert_eq!(refusals.load(Ordering::Relaxed), 2);
        assert_eq!(s.usage("a").unwrap(), (9, 3));
    }

    #[test]
    fn state_leaves_the_outbox_its_disk() {
        let dir = std::env::temp_dir();
        let free = free_bytes(&dir).unwrap();
        assert!(free > 0);
        let refusals = Arc::new(AtomicU64::new(0));
        let reserve = Arc::new(AtomicU64::new(0));
        let r = reserve.clone();
        let s = QuotaStore::new(
            Arc::new(MemoryStore::default()),
            StateQuota::default(),
            refusals.clone(),
        )
        .with_disk_reserve(DiskReserve::new(&dir, move || r.load(Ordering::Relaxed)));
        s.set("a", "b", "k", &[0; 100]).unwrap();
        // An outbox that may need all the free space: the write is refused.
        reserve.store(free, Ordering::Relaxed);
        let e = s.set("a", "b", "k", &[0; 100]).unwrap_err().to_string();
        assert!(e.contains("the outbox keeps"), "{e}");
        assert_eq!(refusals.load(Ordering::Relaxed), 1);
        // Reading and deleting still work.
        assert!(s.get("a", "b", "k").unwrap().is_some());
        s.delete("a", "b", "k").unwrap();
    }
}
