//! Per-deployment settings (`wasi:config/store`), parsed to a type.
//!
//! A setting that is present but does not parse is the deployment's fault, not
//! the request's: it is an [`Error::Internal`] naming the key and the value.

use crate::Error;
use std::str::FromStr;

/// Parses the raw value of setting `key` (`None` when it is not set).
pub fn parse<T: FromStr>(key: &str, raw: Option<&str>) -> Result<Option<T>, Error>
where
    T::Err: std::fmt::Display,
{
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|e| {
            Error::internal(format!(
                "setting {key} = {v:?} is not a valid {}: {e}",
                std::any::type_name::<T>()
            ))
        }),
    }
}

/// A comma-separated list (items trimmed, empty items dropped).
pub fn list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Where settings come from: `wasi:config` in a component; nothing in a native
/// build (every setting unset, so defaults apply in unit tests).
#[cfg(target_arch = "wasm32")]
mod source {
    use crate::Error;
    use crate::bindings::wasi::config::store;

    fn config_error(key: &str, e: store::Error) -> Error {
        Error::internal(format!("reading setting {key}: {e:?}"))
    }

    pub fn get(key: &str) -> Result<Option<String>, Error> {
        store::get(key).map_err(|e| config_error(key, e))
    }

    pub fn get_all() -> Result<Vec<(String, String)>, Error> {
        store::get_all().map_err(|e| config_error("*", e))
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod source {
    use crate::Error;

    pub fn get(_key: &str) -> Result<Option<String>, Error> {
        Ok(None)
    }

    pub fn get_all() -> Result<Vec<(String, String)>, Error> {
        Ok(vec![])
    }
}

mod typed {
    use super::{parse, source};
    use crate::Error;
    use std::str::FromStr;

    /// The raw value of setting `key`.
    pub fn raw(key: &str) -> Result<Option<String>, Error> {
        source::get(key)
    }

    /// Setting `key` parsed as `T`, `None` when it is not set.
    pub fn get<T: FromStr>(key: &str) -> Result<Option<T>, Error>
    where
        T::Err: std::fmt::Display,
    {
        parse(key, raw(key)?.as_deref())
    }

    /// Setting `key` parsed as `T`, or `default` when it is not set.
    pub fn get_or<T: FromStr>(key: &str, default: T) -> Result<T, Error>
    where
        T::Err: std::fmt::Display,
    {
        Ok(get(key)?.unwrap_or(default))
    }

    /// Setting `key` parsed as `T` and within `range`, or `default` when it is not set.
    pub fn get_in<T>(key: &str, default: T, range: std::ops::RangeInclusive<T>) -> Result<T, Error>
    where
        T: FromStr + PartialOrd + std::fmt::Display,
        T::Err: std::fmt::Display,
    {
        let v = get_or(key, default)?;
        if !range.contains(&v) {
            return Err(Error::internal(format!(
                "setting {key} = {v}: expected {} to {}",
                range.start(),
                range.end()
            )));
        }
        Ok(v)
    }

    /// The `mode` setting of a component that answers or annotates: `respond`
    /// (the default) or `annotate`; true for `annotate`.
    pub fn annotate() -> Result<bool, Error> {
        match raw("mode")?.as_deref() {
            None | Some("respond") => Ok(false),
            Some("annotate") => Ok(true),
            Some(other) => Err(Error::internal(format!(
                "setting mode = {other:?}: expected \"respond\" or \"annotate\""
            ))),
        }
    }

    /// Every setting whose key starts with `prefix`, prefix removed, sorted by key.
    pub fn with_prefix(prefix: &str) -> Result<Vec<(String, String)>, Error> {
        let mut all: Vec<(String, String)> = source::get_all()?
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v)))
            .collect();
        all.sort();
        Ok(all)
    }
}

pub use typed::{annotate, get, get_in, get_or, raw, with_prefix};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_parsing() {
        assert_eq!(parse::<f32>("low", Some(" 0.25 ")).unwrap(), Some(0.25));
        assert_eq!(parse::<f32>("low", None).unwrap(), None);
        assert_eq!(parse::<u32>("k", Some("")).unwrap(), None);
        assert_eq!(parse::<bool>("b", Some("true")).unwrap(), Some(true));
        let e = parse::<f32>("high", Some("lots")).unwrap_err();
        assert!(
            matches!(&e, Error::Internal(m) if m.contains("high = \"lots\"") && m.contains("f32"))
        );
        assert_eq!(list(" a, b,,c "), vec!["a", "b", "c"]);
        // Natively nothing is set: defaults apply.
        assert_eq!(get_or("low", 0.5f32).unwrap(), 0.5);
        assert!(with_prefix("label.").unwrap().is_empty());
        assert_eq!(get_in("k", 5usize, 1..=20).unwrap(), 5);
        let e = get_in("k", 50usize, 1..=20).unwrap_err();
        assert!(matches!(&e, Error::Internal(m) if m == "setting k = 50: expected 1 to 20"));
        assert!(!annotate().unwrap());
    }
}
