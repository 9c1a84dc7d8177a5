//! Per-component budgets for durable state: a [`StateStore`] in front of
//! another, refusing a write that would take a namespace over its bytes (keys
//! plus values) or its number of keys. The component sees the refusal as a
//! `wasi:keyvalue` error; every refusal is counted (`/metrics`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;

use super::{StateError, StateStore};

/// What one component's state may hold (`[state]` in the daemon's configuration).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
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
}

impl QuotaStore {
    /// Refusals are added to `refusals` (the daemon's metric).
    pub fn new(inner: Arc<dyn StateStore>, quota: StateQuota, refusals: Arc<AtomicU64>) -> Self {
        QuotaStore {
            inner,
            quota,
            refusals,
        }
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
            None
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
}
