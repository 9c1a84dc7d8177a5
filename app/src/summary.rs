//! What `verge build` prints: per placement, what runs there, its size
//! against the quota, the engine, and an estimated Lambda@Edge cost.

use std::path::Path;

use crate::build::{Plan, Written};
use crate::edge_run;
use crate::manifest::App;

/// Lambda@Edge in us-east-1, as of October 2025 (aws.amazon.com/lambda/pricing):
/// per million requests, and per GB-second of duration, billed per 1 ms.
const PER_MILLION_REQUESTS: f64 = 0.60;
const PER_GB_SECOND: f64 = 0.000_050_01;

/// The cost of a million requests at `warm_ms` (rounded up to the billed ms) and `memory_mb`.
pub fn cost_per_million(warm_ms: f64, memory_mb: u32) -> f64 {
    let billed_s = warm_ms.ceil().max(1.0) / 1000.0;
    PER_MILLION_REQUESTS + 1e6 * billed_s * (f64::from(memory_mb) / 1024.0) * PER_GB_SECOND
}

fn kb(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MB", bytes as f64 / f64::from(1 << 20))
    } else {
        format!("{:.0} KB", bytes as f64 / 1024.0)
    }
}

pub fn table(app: &App, plan: &Plan, written: &Written, measure: usize) -> String {
    let node = if measure > 0 {
        edge_run::node_version()
    } else {
        None
    };
    let mut rows: Vec<[String; 7]> = Vec::new();
    let mut notes = Vec::new();
    if let Some(d) = &plan.device {
        for r in &d.routes {
            let c = &app.components[&r.component];
            let mem = c
                .device
                .as_ref()
                .and_then(|t| t.get("memory_mb"))
                .and_then(|v| v.as_integer())
                .unwrap_or(256);
            rows.push([
                format!("device route {}", r.route),
                r.component.clone(),
                d.engines(),
                "-".into(),
                format!("{mem} MB"),
                "-".into(),
                "-".into(),
            ]);
        }
        notes.push(format!(
            "device: {} of artifacts for {} ({} {})",
            kb(written.device_artifacts_bytes),
            d.binaries
                .iter()
                .map(|(a, _)| a.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            app.device_component(),
            app.version
        ));
    }
    for e in &plan.edge {
        let c = &app.components[&e.component];
        let limit = e.trigger.limits().zip_bytes;
        let zip = e.package.zip.len() as u64;
        let warm = match (&node, &c.sample) {
            (None, _) if measure == 0 => Err("not measured (--measure 0)".to_string()),
            (None, _) => Err("not measured: no node here".to_string()),
            (_, None) => Err(format!(
                "not measured: component '{}' has no sample",
                e.component
            )),
            (Some(_), Some(sample)) => match app.resolve(sample) {
                Err(err) => Err(err),
                Ok(path) => edge_run::invoke(
                    &e.package.zip,
                    &[(path, c.content_type.clone())],
                    measure + 1,
                )
                .map_err(|err| format!("{err:#}"))
                .and_then(|r| {
                    r.first()
                        .and_then(|i| i.warm_ms)
                        .ok_or_else(|| "no warm call".to_string())
                }),
            },
        };
        let (ms, cost) = match &warm {
            Ok(ms) => (
                format!("{ms:.2} ms"),
                format!("${:.4}", cost_per_million(*ms, e.memory_mb)),
            ),
            Err(why) => {
                notes.push(format!("{}: {why}", e.dir));
                (
                    "-".into(),
                    format!("≥ ${:.4}", cost_per_million(1.0, e.memory_mb)),
                )
            }
        };
        rows.push([
            format!(
                "{}{}",
                e.trigger.event_type(),
                e.path.as_ref().map_or(String::new(), |p| format!(" {p}"))
            ),
            e.component.clone(),
            e.engine.as_str().into(),
            format!(
                "{} of {} ({:.0} %)",
                kb(zip),
                kb(limit),
                zip as f64 * 100.0 / limit as f64
            ),
            format!("{} MB", e.memory_mb),
            ms,
            cost,
        ]);
    }
    let mut out = format!("{} {}\n", app.name, app.version);
    out.push_str(&crate::table::render(
        [
            "placement",
            "component",
            "engine",
            "zip (quota)",
            "memory",
            "warm",
            "$ per 1M requests",
        ],
        &rows,
    ));
    if let Some(v) = &node
        && plan
            .edge
            .iter()
            .any(|e| app.components[&e.component].sample.is_some())
    {
        out.push_str(&format!(
            "warm: median of {measure} calls after the first, each package unzipped and run on this machine with node {v} (Lambda's CPU differs; measure there for a bill). Cost: ${PER_MILLION_REQUESTS} per million requests + ${PER_GB_SECOND} per GB-s, billed per ms (us-east-1, Oct 2025)\n"
        ));
    }
    for n in notes {
        out.push_str(&format!("{n}\n"));
    }
    out
}

pub fn next_steps(plan: &Plan, written: &Written, out: &Path) {
    if let Some(recipe) = &written.recipe {
        let d = plan.device.as_ref().expect("a device plan");
        println!(
            "device: upload {}/device/artifacts to {}, then",
            out.display(),
            d.artifacts_uri
        );
        println!(
            "  aws greengrassv2 create-component-version --inline-recipe fileb://{}",
            recipe.display()
        );
        match &written.deployment {
            Some(p) => println!(
                "  aws greengrassv2 create-deployment --cli-input-json file://{}",
                p.display()
            ),
            None => println!("  (pass --thing-group ARN for a deployment document)"),
        }
    }
    if let Some(t) = &written.template {
        println!(
            "edge: upload {}/edge to an S3 bucket in us-east-1 (keys DIR/function.zip), then create the stack from {} with CodeBucket and OriginDomainName ({} function(s))",
            out.display(),
            t.display(),
            plan.edge.len()
        );
    }
}
