//! `verge check`: each input through the device host and through every edge
//! package the manifest builds, side by side; a difference is exit 1.
//!
//! Each edge function is compared with the device host running the same
//! component with the same settings (a viewer function in a cascade has other
//! thresholds than the device's route; compared with those it would differ by
//! design). The device's own route is shown too. Outcomes agree when they are
//! the same kind with the same status, headers and body, numbers (also those
//! inside strings, like a score in a header) within the tolerance.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::Value;
use verge_device::config::Config;
use verge_device::nn::{EngineSpec, Graphs, ModelSpec};
use verge_device::report;
use verge_device::runtime::{Deployment, Limits, Placement, Request, Runtime};
use verge_edge::package::ModelSource;
use wasmtime::component::Component;

use crate::build::Plan;
use crate::edge_run;
use crate::manifest::App;

pub struct Options {
    pub inputs: Vec<PathBuf>,
    /// Only these components (default: every one).
    pub components: Vec<String>,
    pub tolerance: f64,
    pub engine: EngineSpec,
}

struct Row {
    input: String,
    component: String,
    placement: String,
    outcome: Value,
    verdict: Option<Vec<String>>,
}

/// Prints the table; true when every edge outcome agrees with the device's.
pub fn check(app: &App, plan: &Plan, opts: &Options) -> Result<bool> {
    // The device host, in this process: every model of the checked components.
    let chosen = |name: &String| opts.components.is_empty() || opts.components.contains(name);
    for c in &opts.components {
        anyhow::ensure!(
            app.components.contains_key(c),
            "--component {c}: the manifest has no such component"
        );
    }
    let mut specs = Vec::new();
    for (name, c) in app.components.iter().filter(|(n, _)| chosen(n)) {
        for m in &c.models {
            if specs.iter().any(|s: &ModelSpec| &s.name == m) {
                continue;
            }
            let source = &app.models[m].path;
            if !matches!(ModelSource::parse(source), Ok(ModelSource::File(_))) {
                anyhow::bail!(
                    "component '{name}': model '{m}' is a URL; the device host needs the file"
                );
            }
            let path = app.resolve(source).map_err(anyhow::Error::msg)?;
            specs.push(ModelSpec {
                name: m.clone(),
                path,
                engine: opts.engine.clone(),
            });
        }
    }
    // Read once, up front: an unreadable input is an error, not an empty body.
    let bodies: Vec<Vec<u8>> = opts
        .inputs
        .iter()
        .map(|f| std::fs::read(f).with_context(|| format!("reading input {}", f.display())))
        .collect::<Result<_>>()?;
    let runtime = Runtime::new(Graphs::load(&specs)?)?;
    let mut rows = Vec::new();
    let mut agree = true;
    for (name, c) in app.components.iter().filter(|(n, _)| chosen(n)) {
        let path = app.resolve(&c.path).map_err(anyhow::Error::msg)?;
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let component = Component::new(runtime.engine(), &bytes)
            .map_err(|e| anyhow::anyhow!("{} is not a valid component: {e:#}", path.display()))?;
        let prepared = runtime.prepare(&component)?;
        let device = |settings: &BTreeMap<String, String>, limits: Limits| -> Vec<Value> {
            let settings: Vec<(String, String)> = settings
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let deployment = Deployment::new(Placement::Device, limits, &settings);
            bodies
                .iter()
                .map(|body| {
                    let request = Request {
                        content_type: c.content_type.clone(),
                        body: body.clone(),
                        attributes: Vec::new(),
                        truncated: false,
                    };
                    match runtime.call(&prepared, &deployment, &request) {
                        Ok(o) => report::outcome(&o),
                        Err(e) => report::error(&e),
                    }
                })
                .collect()
        };
        let mut per_input: Vec<Vec<Row>> = opts.inputs.iter().map(|_| Vec::new()).collect();
        if let Some(route) = plan
            .device
            .as_ref()
            .and_then(|d| d.routes.iter().find(|r| &r.component == name))
        {
            let limits = route_limits(
                &plan.device.as_ref().expect("a device").config,
                &route.route,
            )
            .map_err(anyhow::Error::msg)?;
            for (i, o) in device(&route.settings, limits).into_iter().enumerate() {
                per_input[i].push(Row {
                    input: opts.inputs[i].display().to_string(),
                    component: name.clone(),
                    placement: format!("device route {}", route.route),
                    outcome: o,
                    verdict: None,
                });
            }
        }
        let inputs: Vec<(PathBuf, String)> = opts
            .inputs
            .iter()
            .map(|f| (f.clone(), c.content_type.clone()))
            .collect();
        for e in plan.edge.iter().filter(|e| &e.component == name) {
            let reference = device(&e.settings, Limits::default());
            let edge = edge_run::invoke(&e.package.zip, &inputs, 1)
                .with_context(|| format!("running edge/{}", e.dir))?;
            for (i, (got, want)) in edge.into_iter().zip(reference).enumerate() {
                let mut diffs = Vec::new();
                // Both failing agree: the edge knows a failure only from the
                // shim's log line, not its kind, and words it without the prefix.
                if !(want.get("error").is_some() && got.outcome.get("error").is_some()) {
                    differences(&want, &got.outcome, opts.tolerance, "", &mut diffs);
                }
                agree &= diffs.is_empty();
                per_input[i].push(Row {
                    input: opts.inputs[i].display().to_string(),
                    component: name.clone(),
                    placement: format!("{} ({})", e.trigger.event_type(), e.engine.as_str()),
                    outcome: got.outcome,
                    verdict: Some(diffs),
                });
            }
        }
        rows.extend(per_input.into_iter().flatten());
    }
    print!("{}", table(&rows));
    let compared = rows.iter().filter(|r| r.verdict.is_some()).count();
    let differ = rows
        .iter()
        .filter(|r| r.verdict.as_ref().is_some_and(|d| !d.is_empty()))
        .count();
    println!(
        "{} input(s), {compared} edge outcome(s) compared with the device host on the same settings: {}",
        opts.inputs.len(),
        if differ == 0 {
            "all the same".to_string()
        } else {
            format!("{differ} differ")
        }
    );
    Ok(agree)
}

/// Where `a` and `b` differ, as `path: a vs b` lines.
pub fn differences(a: &Value, b: &Value, tol: f64, at: &str, out: &mut Vec<String>) {
    let here = || {
        if at.is_empty() {
            "outcome".to_string()
        } else {
            at.to_string()
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => differences(p, q, tol, &path, out),
                    (Some(p), None) => {
                        out.push(format!("{path}: device {} vs edge (none)", short(p)))
                    }
                    (None, Some(q)) => {
                        out.push(format!("{path}: device (none) vs edge {}", short(q)))
                    }
                    (None, None) => {}
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                differences(p, q, tol, &format!("{at}[{i}]"), out);
            }
        }
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            if (x - y).abs().partial_cmp(&tol).is_none_or(|o| o.is_gt()) {
                out.push(format!("{}: device {x} vs edge {y}", here()));
            }
        }
        (Value::String(x), Value::String(y)) if same_text(x, y, tol) => {}
        _ if a == b => {}
        _ => out.push(format!(
            "{}: device {} vs edge {}",
            here(),
            short(a),
            short(b)
        )),
    }
}

/// Equal, or equal but for numbers within `tol` (a score printed in a header or a reason).
fn same_text(a: &str, b: &str, tol: f64) -> bool {
    if a == b {
        return true;
    }
    let (ta, tb) = (tokens(a), tokens(b));
    ta.len() == tb.len()
        && ta
            .iter()
            .zip(&tb)
            .all(|(x, y)| match (x.parse::<f64>(), y.parse::<f64>()) {
                (Ok(p), Ok(q)) => (p - q).abs() <= tol,
                _ => x == y,
            })
}

/// Runs of number characters and runs of the rest.
fn tokens(s: &str) -> Vec<&str> {
    let numeric = |c: char| c.is_ascii_digit() || matches!(c, '.' | '-' | 'e' | 'E' | '+');
    let mut out = Vec::new();
    let mut start = 0;
    let mut kind = None;
    for (i, c) in s.char_indices() {
        let k = numeric(c);
        if kind.is_some_and(|p| p != k) {
            out.push(&s[start..i]);
            start = i;
        }
        kind = Some(k);
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

/// An outcome in a few words.
fn summary(o: &Value) -> String {
    let pairs = |m: &Value| {
        m.as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(&v.to_string())))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    let s = if let Some(r) = o.get("respond") {
        let body = match &r["body"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        format!("respond {} {body}", r["status"])
    } else if let Some(a) = o.get("annotate") {
        format!("annotate {}", pairs(a))
    } else if let Some(d) = o.get("defer") {
        format!("defer: {}", d.as_str().unwrap_or(""))
    } else {
        format!(
            "error {}: {}",
            o["error"]["kind"].as_str().unwrap_or("?"),
            o["error"]["message"].as_str().unwrap_or("")
        )
    };
    if s.chars().count() > 72 {
        format!("{}…", s.chars().take(72).collect::<String>())
    } else {
        s
    }
}

fn table(rows: &[Row]) -> String {
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                std::path::Path::new(&r.input)
                    .file_name()
                    .map_or(r.input.clone(), |f| f.to_string_lossy().into()),
                r.component.clone(),
                r.placement.clone(),
                summary(&r.outcome),
                match &r.verdict {
                    None => "(reference)".into(),
                    Some(d) if d.is_empty() => "same".into(),
                    Some(d) => format!("DIFFERS: {}", d.join("; ")),
                },
            ]
        })
        .collect();
    crate::table::render(
        [
            "input",
            "component",
            "placement",
            "outcome",
            "vs device, same settings",
        ],
        &cells,
    )
}

/// A route's call bounds as the daemon derives them.
fn route_limits(config: &Config, route: &str) -> Result<Limits, String> {
    let r = config
        .routes
        .get(route)
        .ok_or_else(|| format!("route '{route}': not in the device configuration"))?;
    Ok(r.limits(config.api.max_body_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_within_the_tolerance_agree_also_inside_strings() {
        let mut d = Vec::new();
        differences(
            &json!({ "annotate": { "x-fraud-score": "0.1234567" } }),
            &json!({ "annotate": { "x-fraud-score": "0.1234569" } }),
            1e-4,
            "",
            &mut d,
        );
        assert!(d.is_empty(), "{d:?}");
        differences(
            &json!({ "defer": "score 0.31 between 0.2 and 0.5" }),
            &json!({ "defer": "score 0.41 between 0.2 and 0.5" }),
            1e-4,
            "",
            &mut d,
        );
        assert_eq!(d.len(), 1, "{d:?}");
    }

    #[test]
    fn kinds_statuses_and_missing_keys_differ() {
        let mut d = Vec::new();
        differences(
            &json!({ "respond": { "status": 403 } }),
            &json!({ "annotate": {} }),
            1e-4,
            "",
            &mut d,
        );
        assert_eq!(d.len(), 2, "{d:?}");
        d.clear();
        differences(
            &json!({ "respond": { "status": 403, "body": { "score": 0.9 } } }),
            &json!({ "respond": { "status": 200, "body": { "score": 0.9 } } }),
            1e-4,
            "",
            &mut d,
        );
        assert_eq!(d, ["respond.status: device 403 vs edge 200"]);
    }
}
