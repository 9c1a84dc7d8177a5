//! Outcomes and call errors as JSON, the form every host interface prints.

use base64::prelude::{BASE64_STANDARD, Engine as _};
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
        Err(_) => json!({ "base64": BASE64_STANDARD.encode(bytes) }),
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

/// Run results as an aligned text table: the input, then the fields of each
/// outcome (a JSON response body's fields, annotations, a deferral or an
/// error), then the time.
pub fn table(rows: &[Value]) -> String {
    let mut columns: Vec<String> = vec!["input".into()];
    let cells: Vec<Vec<(String, String)>> = rows
        .iter()
        .map(|row| {
            let mut cells = vec![(
                "input".to_string(),
                short_path(row["input"].as_str().unwrap_or("")),
            )];
            let fields: Vec<(String, &Value)> = if let Some(r) = row.get("respond") {
                let mut f = vec![("status".to_string(), &r["status"])];
                match r["body"].as_object() {
                    Some(o) => f.extend(o.iter().map(|(k, v)| (k.clone(), v))),
                    None => f.push(("body".into(), &r["body"])),
                }
                f
            } else if let Some(Value::Object(a)) = row.get("annotate") {
                a.iter().map(|(k, v)| (k.clone(), v)).collect()
            } else if let Some(d) = row.get("defer") {
                vec![("defer".into(), d)]
            } else {
                vec![("error".into(), &row["error"]["message"])]
            };
            for (k, v) in fields {
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n
                        .as_f64()
                        .filter(|f| f.fract() != 0.0)
                        .map_or(n.to_string(), |f| format!("{f:.4}")),
                    other => other.to_string(),
                };
                cells.push((k, text));
            }
            cells.push((
                "ms".into(),
                format!("{:.1}", row["ms"].as_f64().unwrap_or(0.0)),
            ));
            for (k, _) in &cells {
                if !columns.contains(k) {
                    columns.push(k.clone());
                }
            }
            cells
        })
        .collect();
    // `ms` last.
    columns.retain(|c| c != "ms");
    columns.push("ms".into());
    let grid: Vec<Vec<String>> = cells
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| {
                    row.iter()
                        .find(|(k, _)| k == c)
                        .map_or(String::new(), |(_, v)| v.clone())
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            grid.iter()
                .map(|r| r[i].chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
                .min(48)
        })
        .collect();
    let line = |cells: &[String]| -> String {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, &w)| {
                let c: String = c.chars().take(w).collect();
                format!("{c:<w$}")
            })
            .collect();
        format!("| {} |\n", parts.join(" | "))
    };
    let mut out = line(&columns);
    out += &line(&widths.iter().map(|&w| "-".repeat(w)).collect::<Vec<_>>());
    for row in &grid {
        out += &line(row);
    }
    out
}

/// The last two components of a path: enough to recognise it in a table.
fn short_path(p: &str) -> String {
    let parts: Vec<&str> = p.rsplit('/').take(2).collect();
    parts.into_iter().rev().collect::<Vec<_>>().join("/")
}
