//! Lambda@Edge quotas per CloudFront trigger (AWS, "Quotas" and
//! "Restrictions on edge functions" in the CloudFront Developer Guide).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    ViewerRequest,
    OriginRequest,
    OriginResponse,
    ViewerResponse,
}

const KB: u64 = 1024;
const MB: u64 = 1024 * 1024;

impl Trigger {
    pub const ALL: [Trigger; 4] = [
        Trigger::ViewerRequest,
        Trigger::OriginRequest,
        Trigger::OriginResponse,
        Trigger::ViewerResponse,
    ];

    /// CloudFront's `EventType` name.
    pub fn event_type(self) -> &'static str {
        match self {
            Trigger::ViewerRequest => "viewer-request",
            Trigger::OriginRequest => "origin-request",
            Trigger::OriginResponse => "origin-response",
            Trigger::ViewerResponse => "viewer-response",
        }
    }

    pub fn is_viewer(self) -> bool {
        matches!(self, Trigger::ViewerRequest | Trigger::ViewerResponse)
    }

    /// `ViewerRequest`: for CloudFormation logical IDs.
    pub fn camel_case(self) -> &'static str {
        match self {
            Trigger::ViewerRequest => "ViewerRequest",
            Trigger::OriginRequest => "OriginRequest",
            Trigger::OriginResponse => "OriginResponse",
            Trigger::ViewerResponse => "ViewerResponse",
        }
    }

    pub fn is_request(self) -> bool {
        matches!(self, Trigger::ViewerRequest | Trigger::OriginRequest)
    }

    pub fn limits(self) -> Limits {
        if self.is_viewer() {
            Limits {
                zip_bytes: MB,
                memory_mb: (128, 128),
                timeout_s: 5,
                body_bytes: 40 * KB,
                response_bytes: 40 * KB,
            }
        } else {
            Limits {
                zip_bytes: 50 * MB,
                memory_mb: (128, 10_240),
                timeout_s: 30,
                body_bytes: MB,
                response_bytes: MB,
            }
        }
    }
}

/// The Lambda runtime a function is created on (AWS Lambda, "Lambda runtimes";
/// CloudFront's "Restrictions on edge functions" lists Node.js 22 for
/// Lambda@Edge). Packs need Node 22's Wasm (multi-memory, extended-const).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub enum Runtime {
    #[default]
    #[serde(rename = "nodejs22.x")]
    Nodejs22,
    #[serde(rename = "nodejs24.x")]
    Nodejs24,
}

impl Runtime {
    /// Lambda's identifier (`nodejs22.x`).
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Nodejs22 => "nodejs22.x",
            Runtime::Nodejs24 => "nodejs24.x",
        }
    }
}

impl std::str::FromStr for Runtime {
    type Err = String;

    fn from_str(s: &str) -> Result<Runtime, String> {
        match s {
            "nodejs22.x" => Ok(Runtime::Nodejs22),
            "nodejs24.x" => Ok(Runtime::Nodejs24),
            "nodejs20.x" => Err("nodejs20.x is deprecated by Lambda since 2026-04-30: creating functions on it is blocked since 2026-08-31 and updating them since 2026-09-30 (and Node 20 cannot run a pack's Wasm); use nodejs22.x".into()),
            other => Err(format!("runtime '{other}' is not one a pack runs on: nodejs22.x (the default) or nodejs24.x")),
        }
    }
}

impl TryFrom<String> for Runtime {
    type Error = String;

    fn try_from(s: String) -> Result<Runtime, String> {
        s.parse()
    }
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one trigger allows.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Limits {
    /// Compressed deployment package.
    pub zip_bytes: u64,
    /// Function memory, inclusive range.
    pub memory_mb: (u32, u32),
    /// Function timeout.
    pub timeout_s: u32,
    /// Request body exposed with include-body; beyond it, `inputTruncated`.
    pub body_bytes: u64,
    /// A generated response, headers and body.
    pub response_bytes: u64,
}

/// A setting that does not fit the trigger: the figure and the limit.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Misfit {
    #[error("the package is {size} bytes compressed; {trigger} allows {limit} bytes ({})", mb(*.limit))]
    Zip {
        trigger: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("memory {memory} MB is outside {trigger}'s {min}–{max} MB")]
    Memory {
        trigger: &'static str,
        memory: u32,
        min: u32,
        max: u32,
    },
    #[error("timeout {timeout} s is over {trigger}'s {limit} s")]
    Timeout {
        trigger: &'static str,
        timeout: u32,
        limit: u32,
    },
    #[error("{trigger} cannot include a body: CloudFront exposes bodies to request triggers only")]
    Body { trigger: &'static str },
}

fn mb(bytes: u64) -> String {
    format!("{} MB", bytes / MB)
}

/// Checks the function settings against the trigger, before anything is built.
pub fn check_settings(
    trigger: Trigger,
    memory_mb: u32,
    timeout_s: u32,
    include_body: bool,
) -> Result<(), Misfit> {
    match settings_misfits(trigger, memory_mb, timeout_s, include_body)
        .into_iter()
        .next()
    {
        Some(m) => Err(m),
        None => Ok(()),
    }
}

/// Every way the function settings miss the trigger (the dry run reports them all).
pub fn settings_misfits(
    trigger: Trigger,
    memory_mb: u32,
    timeout_s: u32,
    include_body: bool,
) -> Vec<Misfit> {
    let l = trigger.limits();
    let name = trigger.event_type();
    let mut misfits = Vec::new();
    if memory_mb < l.memory_mb.0 || memory_mb > l.memory_mb.1 {
        misfits.push(Misfit::Memory {
            trigger: name,
            memory: memory_mb,
            min: l.memory_mb.0,
            max: l.memory_mb.1,
        });
    }
    if timeout_s == 0 || timeout_s > l.timeout_s {
        misfits.push(Misfit::Timeout {
            trigger: name,
            timeout: timeout_s,
            limit: l.timeout_s,
        });
    }
    if include_body && !trigger.is_request() {
        misfits.push(Misfit::Body { trigger: name });
    }
    misfits
}

/// Checks the compressed package size against the trigger.
pub fn check_zip(trigger: Trigger, size: u64) -> Result<(), Misfit> {
    let limit = trigger.limits().zip_bytes;
    if size > limit {
        return Err(Misfit::Zip {
            trigger: trigger.event_type(),
            size,
            limit,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewer_and_origin_limits() {
        assert!(check_zip(Trigger::ViewerRequest, MB).is_ok());
        let e = check_zip(Trigger::ViewerRequest, MB + 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the package is 1048577 bytes compressed; viewer-request allows 1048576 bytes (1 MB)"
        );
        assert!(check_zip(Trigger::OriginRequest, 50 * MB).is_ok());
        assert!(check_zip(Trigger::OriginResponse, 50 * MB + 1).is_err());
        assert!(check_settings(Trigger::ViewerResponse, 128, 5, false).is_ok());
        assert_eq!(
            check_settings(Trigger::ViewerRequest, 256, 5, false)
                .unwrap_err()
                .to_string(),
            "memory 256 MB is outside viewer-request's 128–128 MB"
        );
        assert!(check_settings(Trigger::ViewerRequest, 128, 6, false).is_err());
        assert!(check_settings(Trigger::OriginRequest, 10_240, 30, true).is_ok());
        assert!(check_settings(Trigger::OriginRequest, 10_241, 30, true).is_err());
        assert!(check_settings(Trigger::OriginRequest, 512, 31, true).is_err());
        assert!(check_settings(Trigger::OriginResponse, 512, 30, true).is_err());
        assert_eq!(
            settings_misfits(Trigger::ViewerResponse, 1024, 30, true).len(),
            3
        );
        assert!(settings_misfits(Trigger::OriginRequest, 1024, 30, true).is_empty());
    }

    #[test]
    fn runtimes_lambda_accepts_and_node_20_refused_with_its_dates() {
        assert_eq!("nodejs22.x".parse(), Ok(Runtime::Nodejs22));
        assert_eq!(
            "nodejs24.x".parse::<Runtime>().unwrap().as_str(),
            "nodejs24.x"
        );
        assert_eq!(Runtime::default().as_str(), "nodejs22.x");
        let e = "nodejs20.x".parse::<Runtime>().unwrap_err();
        assert!(
            e.contains("2026-04-30") && e.contains("2026-08-31") && e.contains("2026-09-30"),
            "{e}"
        );
        assert!(
            "python3.13"
                .parse::<Runtime>()
                .unwrap_err()
                .contains("nodejs22.x")
        );
        assert_eq!(
            serde_json::to_string(&Runtime::Nodejs24).unwrap(),
            "\"nodejs24.x\""
        );
    }
}
