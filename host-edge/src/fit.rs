//! The dry run of `verge-edge pack`: for every trigger and every engine, the
//! package built in memory by [`package::build`] — the very bytes `pack`
//! would write — and whether it fits, and if not, why.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;
use serde_json::{Value, json};

use crate::package::{self, Engine, PackError, PackOptions};
use crate::quota::{self, Misfit, Trigger};

const KB: u64 = 1024;
const MB: u64 = 1024 * 1024;

/// One trigger × engine: the package's size and the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Fit {
    pub trigger: Trigger,
    pub engine: Engine,
    /// The zip `pack` would write; `None` when it could not be built.
    pub zip_bytes: Option<u64>,
    /// The engine recorded in the package: `none` for a component without
    /// inference (then the engine changes nothing).
    pub packed_engine: Option<String>,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Verdict {
    Fits,
    /// Built, but over the trigger's quotas: every reason.
    Misfit {
        reasons: Vec<String>,
    },
    /// Not built: the engine cannot run a model, or the inputs do not make a
    /// package; then the settings' misfits, if any.
    Refused {
        reasons: Vec<String>,
    },
    /// The engine's provider component or binding is not on this machine.
    NotAvailable {
        reason: String,
    },
}

impl Verdict {
    pub fn fits(&self) -> bool {
        *self == Verdict::Fits
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Fits => f.write_str("fits"),
            Verdict::Misfit { reasons } | Verdict::Refused { reasons } => {
                f.write_str(&reasons.join("; "))
            }
            Verdict::NotAvailable { reason } => write!(f, "not available: {reason}"),
        }
    }
}

/// Builds `base` for each trigger × engine ([`Trigger::ALL`] × [`Engine::EDGE`],
/// in that order), with the settings as given: a setting over a trigger's
/// limit is reported as the misfit it is, never clamped. `base`'s trigger,
/// engine and provider are replaced; `providers` gives each engine's provider
/// component, or why there is none. The builds run on the machine's cores.
pub fn dry_run(base: &PackOptions, providers: &[(Engine, Result<Vec<u8>, String>)]) -> Vec<Fit> {
    let jobs: Vec<(Trigger, Engine)> = Trigger::ALL
        .iter()
        .flat_map(|&t| Engine::EDGE.iter().map(move |&e| (t, e)))
        .collect();
    // The slowest builds first (the onnxruntime zip is ~17 MB of deflate).
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&i| match jobs[i].1 {
        Engine::Onnxruntime => 0,
        Engine::Tract => 1,
        Engine::Compact | Engine::Tensorflowlite => 2,
    });
    let results: Mutex<Vec<Option<Fit>>> = Mutex::new(vec![None; jobs.len()]);
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(jobs.len());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let (trigger, engine) = jobs[i];
                    let provider = providers
                        .iter()
                        .find(|(e, _)| *e == engine)
                        .map(|(_, p)| p.clone())
                        .unwrap_or_else(|| Err("no provider given".into()));
                    let fit = one(base, trigger, engine, provider);
                    results.lock().expect("no worker panics")[i] = Some(fit);
                }
            });
        }
    });
    results
        .into_inner()
        .expect("no worker panics")
        .into_iter()
        .map(|f| f.expect("every job ran"))
        .collect()
}

fn one(
    base: &PackOptions,
    trigger: Trigger,
    engine: Engine,
    provider: Result<Vec<u8>, String>,
) -> Fit {
    let mut fit = Fit {
        trigger,
        engine,
        zip_bytes: None,
        packed_engine: None,
        verdict: Verdict::Fits,
    };
    let provider = match provider {
        Ok(p) => p,
        Err(reason) => {
            fit.verdict = Verdict::NotAvailable { reason };
            return fit;
        }
    };
    let opts = PackOptions {
        trigger,
        engine,
        provider,
        ..base.clone()
    };
    let settings =
        quota::settings_misfits(trigger, opts.memory_mb, opts.timeout_s, opts.include_body);
    let mut reasons: Vec<String> = settings.iter().map(reason).collect();
    let package = match package::build(&opts) {
        Ok(p) => p,
        Err(PackError::EngineUnavailable(reason)) => {
            fit.verdict = Verdict::NotAvailable { reason };
            return fit;
        }
        Err(e) => {
            let refusal = match e {
                PackError::NotCompact {
                    model, problems, ..
                } => format!(
                    "model '{model}' uses what the compact engine does not run: {}",
                    problems.join("; ")
                ),
                e => e.to_string(),
            };
            reasons.insert(0, refusal);
            fit.verdict = Verdict::Refused { reasons };
            return fit;
        }
    };
    let size = package.zip.len() as u64;
    fit.zip_bytes = Some(size);
    fit.packed_engine = package.manifest["engine"]["name"]
        .as_str()
        .map(str::to_string);
    reasons.extend(quota::check_zip(trigger, size).err().as_ref().map(reason));
    if !reasons.is_empty() {
        fit.verdict = Verdict::Misfit { reasons };
    }
    fit
}

/// A misfit in the words of the command line that caused it.
fn reason(m: &Misfit) -> String {
    match *m {
        Misfit::Zip { size, limit, .. } => format!(
            "over the {} MB zip quota by {} KB",
            limit / MB,
            (size - limit).div_ceil(KB)
        ),
        Misfit::Memory {
            trigger,
            memory,
            min,
            max,
        } => {
            if memory > max {
                format!("--memory {memory} is over {trigger}'s {max} MB")
            } else {
                format!("--memory {memory} is under {trigger}'s {min} MB")
            }
        }
        Misfit::Timeout {
            trigger,
            timeout: 0,
            ..
        } => format!("--timeout 0: {trigger} needs at least 1 s"),
        Misfit::Timeout {
            trigger,
            timeout,
            limit,
        } => format!("--timeout {timeout} is over {trigger}'s {limit} s"),
        Misfit::Body { trigger } => {
            format!("--include-body: {trigger} gets no body (request triggers only)")
        }
    }
}

fn size(bytes: u64) -> String {
    if bytes < MB {
        format!("{:.1} KB", bytes as f64 / KB as f64)
    } else {
        format!("{:.1} MB", bytes as f64 / MB as f64)
    }
}

fn percent(f: &Fit) -> Option<f64> {
    f.zip_bytes
        .map(|b| b as f64 * 100.0 / f.trigger.limits().zip_bytes as f64)
}

/// The table the dry run prints; `marked` is the row `pack` itself would build.
pub fn table(fits: &[Fit], marked: Option<(Trigger, Engine)>) -> String {
    let rows: Vec<[String; 5]> = fits
        .iter()
        .map(|f| {
            let mark = if marked == Some((f.trigger, f.engine)) {
                "*"
            } else {
                " "
            };
            let mut verdict = f.verdict.to_string();
            if f.packed_engine.as_deref() == Some("none") {
                verdict.push_str(" (no wasi:nn: no engine packed)");
            }
            [
                format!("{mark}{}", f.trigger.event_type()),
                f.engine.as_str().to_string(),
                f.zip_bytes.map_or("-".into(), size),
                percent(f).map_or("-".into(), |p| format!("{p:.1} %")),
                verdict,
            ]
        })
        .collect();
    let header = [" trigger", "engine", "zip", "of quota", "verdict"].map(String::from);
    let mut width = [0; 4];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2],
            w3 = width[3],
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let n = fits.iter().filter(|f| f.verdict.fits()).count();
    out.push_str(&format!(
        "{n} of {} trigger × engine combinations fit",
        fits.len()
    ));
    if marked.is_some() {
        out.push_str("; * the one this pack command builds");
    }
    out.push('\n');
    out
}

/// The dry run as JSON: one object per row, sizes in bytes.
pub fn json(fits: &[Fit]) -> Value {
    let rows: Vec<Value> = fits
        .iter()
        .map(|f| {
            let mut row = json!({
                "trigger": f.trigger,
                "engine": f.engine,
                "zip_bytes": f.zip_bytes,
                "zip_quota_bytes": f.trigger.limits().zip_bytes,
                "quota_percent": percent(f).map(|p| (p * 10.0).round() / 10.0),
                "packed_engine": f.packed_engine,
                "fits": f.verdict.fits(),
                "verdict": f.verdict.to_string(),
            });
            if let (Value::Object(row), Value::Object(v)) = (&mut row, json!(f.verdict)) {
                row.extend(v);
            }
            row
        })
        .collect();
    Value::Array(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_name_the_flag_and_the_limit() {
        let r = |m| reason(&m);
        assert_eq!(
            r(quota::check_zip(Trigger::ViewerRequest, MB + 1).unwrap_err()),
            "over the 1 MB zip quota by 1 KB"
        );
        assert_eq!(
            r(quota::check_zip(Trigger::ViewerResponse, 2 * MB + 10 * KB).unwrap_err()),
            "over the 1 MB zip quota by 1034 KB"
        );
        let all = quota::settings_misfits(Trigger::ViewerResponse, 1024, 30, true);
        let all: Vec<String> = all.iter().map(reason).collect();
        assert_eq!(
            all,
            [
                "--memory 1024 is over viewer-response's 128 MB",
                "--timeout 30 is over viewer-response's 5 s",
                "--include-body: viewer-response gets no body (request triggers only)",
            ]
        );
        let low = quota::settings_misfits(Trigger::OriginRequest, 64, 0, false);
        let low: Vec<String> = low.iter().map(reason).collect();
        assert_eq!(
            low,
            [
                "--memory 64 is under origin-request's 128 MB",
                "--timeout 0: origin-request needs at least 1 s",
            ]
        );
    }

    #[test]
    fn table_lines_up_and_counts() {
        let fit = |trigger, engine, zip_bytes: Option<u64>, verdict| Fit {
            trigger,
            engine,
            zip_bytes,
            packed_engine: zip_bytes.map(|_| engine.as_str().to_string()),
            verdict,
        };
        let fits = [
            fit(
                Trigger::ViewerRequest,
                Engine::Compact,
                Some(300 * KB),
                Verdict::Fits,
            ),
            fit(
                Trigger::ViewerRequest,
                Engine::Onnxruntime,
                None,
                Verdict::NotAvailable {
                    reason: "no binding".into(),
                },
            ),
        ];
        let t = table(&fits, Some((Trigger::ViewerRequest, Engine::Compact)));
        assert_eq!(
            t,
            " trigger         engine            zip  of quota  verdict\n\
             *viewer-request  compact      300.0 KB    29.3 %  fits\n \
             viewer-request  onnxruntime         -         -  not available: no binding\n\
             1 of 2 trigger × engine combinations fit; * the one this pack command builds\n"
        );
        let j = json(&fits);
        assert_eq!(j[0]["status"], "fits");
        assert_eq!(j[0]["zip_bytes"], 300 * KB);
        assert_eq!(j[1]["status"], "not-available");
        assert_eq!(j[1]["reason"], "no binding");
        assert_eq!(j[1]["fits"], false);
    }
}
