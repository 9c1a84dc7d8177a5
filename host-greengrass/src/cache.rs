//! Components compiled once: a precompiled artifact on disk, keyed by the
//! component's sha256 and the engine's compatibility hash (wasmtime version,
//! settings, target), so a restart deserialises instead of compiling.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::log;

#[derive(Debug, thiserror::Error)]
#[error("component {name}: {message}")]
pub struct CacheError {
    name: String,
    message: String,
}

/// Where a component came from, for logs and start-up figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cache,
    Compiled,
}

pub struct ComponentCache {
    dir: PathBuf,
    engine_key: String,
}

impl ComponentCache {
    pub fn new(engine: &Engine, dir: &Path) -> std::io::Result<ComponentCache> {
        std::fs::create_dir_all(dir)?;
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(ComponentCache {
            dir: dir.into(),
            engine_key: format!("{:016x}", h.finish()),
        })
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!(
            "{}-{}.cwasm",
            sha256.to_ascii_lowercase(),
            self.engine_key
        ))
    }

    /// The compiled component for `bytes` (whose digest is `sha256`, already
    /// checked): from the cache, or compiled and then cached.
    pub fn load(
        &self,
        engine: &Engine,
        name: &str,
        sha256: &str,
        bytes: &[u8],
    ) -> Result<(Component, Source), CacheError> {
        let path = self.path(sha256);
        if path.exists() {
            // SAFETY: the file is one this cache wrote with
            // `Component::serialize`, under a name that binds it to the
            // component's digest and this engine's settings, in the daemon's
            // own state directory; wasmtime checks its header again.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => return Ok((c, Source::Cache)),
                Err(e) => log::warn(
                    "precompiled component unusable, compiling again",
                    serde_json::json!({ "component": name, "path": path, "error": format!("{e:#}") }),
                ),
            }
        }
        let fail = |message: String| CacheError {
            name: name.into(),
            message,
        };
        let component = Component::new(engine, bytes)
            .map_err(|e| fail(format!("not a valid component: {e:#}")))?;
        // A failed write only costs the next start a compilation.
        match component.serialize() {
            Ok(bytes) => {
                let tmp = path.with_extension("tmp");
                if let Err(e) =
                    std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &path))
                {
                    log::warn(
                        "could not cache the precompiled component",
                        serde_json::json!({ "component": name, "error": e.to_string() }),
                    );
                }
            }
            Err(e) => log::warn(
                "could not serialise the component",
                serde_json::json!({ "component": name, "error": format!("{e:#}") }),
            ),
        }
        Ok((component, Source::Compiled))
    }
}
