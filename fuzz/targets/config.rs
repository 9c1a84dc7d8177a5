//! The daemon's configuration parser (`Config::parse`, what `Config::load`
//! runs on a file's text), TOML or JSON by the first byte, with or without
//! command-line overrides. A configuration it accepts must be one the daemon
//! can run: every path absolute, every name it refers to there, and values
//! the daemon turns into sizes and permits within range.
#![no_main]

use std::path::{Path, PathBuf};

use verge_device::config::{Config, Overrides};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&flags, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let path = Path::new(if flags & 1 == 1 {
        "/etc/verge/verge.json"
    } else {
        "/etc/verge/verge.toml"
    });
    let overrides = if flags & 2 == 2 {
        Overrides {
            thing_name: Some("fuzz-thing".into()),
            state_dir: Some(PathBuf::from("/var/lib/verge")),
            artifacts_dir: (flags & 4 == 4).then(|| PathBuf::from("artifacts")),
        }
    } else {
        Overrides::default()
    };
    let Ok(config) = Config::parse(path, text, &overrides) else {
        return;
    };

    assert!(config.state_dir.is_some());
    assert!(!config.routes.is_empty());
    for m in config.models.values() {
        assert!(
            m.path.is_absolute(),
            "model path {:?} left relative",
            m.path
        );
    }
    for a in config.components.values() {
        assert!(
            a.path.is_absolute(),
            "component path {:?} left relative",
            a.path
        );
    }
    for (name, route) in &config.routes {
        assert!(
            config.components.contains_key(&route.component),
            "route {name}"
        );
        assert!(route.deadline_ms > 0 && route.memory_mb > 0);
        // The daemon's limits for the route: memory_mb << 20 bytes, a
        // semaphore of `concurrency` permits (tokio panics above MAX_PERMITS).
        assert!(
            route.memory_mb.checked_mul(1 << 20).is_some(),
            "route {name}: memory_mb {} is more bytes than a usize holds",
            route.memory_mb
        );
        if let Some(c) = route.concurrency {
            assert!(
                c <= usize::MAX >> 3,
                "route {name}: concurrency {c} is more than a semaphore holds"
            );
        }
    }
    for spec in config.model_specs() {
        assert!(spec.engine.validate().is_ok());
    }
    assert!(config.outbox.max_bytes > 0 && config.api.max_body_bytes > 0);
    let _ = config.health.interval();
});
