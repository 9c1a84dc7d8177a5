//! Outcomes and call errors as JSON, the form every host interface prints.

use serde_json::{Map, Value, json};

use crate::runtime::{CallError, Outcome};

/// A generated body: JSON stays JSON, text stays text, anything else is base64.
fn body(content_type: &str, bytes: &[u8]) -> Value {
    if content_type.starts_with("application/json")
        && let Ok(v) = serde_json::from_slice::<Value>(bytes)
    {
        return v;
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Value::String(text.to_string()),
        Err(_) => json!({ "base64": base64(bytes) }),
    }
}

fn pairs(list: &[(String, String)]) -> Value {
    Value::Object(
        list.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<Map<_, _>>(),
    )
}

pub fn outcome(o: &Outcome) -> Value {
    match o {
        Outcome::Respond(r) => json!({
            "respond": {
                "status": r.status,
                "content_type": r.content_type,
                "headers": pairs(&r.headers),
                "body": body(&r.content_type, &r.body),
            }
        }),
        Outcome::Annotate(list) => json!({ "annotate": pairs(list) }),
        Outcome::Defer(reason) => json!({ "defer": reason }),
    }
}

pub fn error(e: &CallError) -> Value {
    json!({ "error": { "kind": e.kind(), "message": e.to_string() } })
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64(plain.as_bytes()), coded);
        }
    }
}
