//! CloudFormation templates that deploy packages: the functions (in
//! us-east-1, as Lambda@Edge requires) with one shared role, a published
//! version of each, and one CloudFront distribution whose default cache
//! behaviour runs each version on its trigger.
//!
//! [`stack`] is the one implementation; [`template`] (what `pack` writes) is
//! a stack of one. Several functions on one cache behaviour are the cascade:
//! e.g. a small model answering clear cases at the viewer, a larger engine
//! looking further at the origin.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::quota::{self, Misfit, Runtime, Trigger};
use crate::sha256;

/// One packed function, as the template deploys it.
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    /// The component's name (its file stem).
    pub name: String,
    pub trigger: Trigger,
    pub include_body: bool,
    pub memory_mb: u32,
    pub timeout_s: u32,
    pub runtime: Runtime,
    pub zip_sha256: String,
    /// The default of the function's S3 key parameter.
    pub code_key: String,
    /// Where it comes from, for messages: the pack's folder.
    pub source: String,
    /// The cache behaviour's path pattern (`/api/search*`); none: the default one.
    pub path: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("a stack needs at least one package")]
    Empty,
    #[error(
        "{first} and {second} are both for {trigger} on {behaviour}: a cache behaviour runs at most one function per event type"
    )]
    SameTrigger {
        trigger: &'static str,
        behaviour: String,
        first: String,
        second: String,
    },
    #[error(
        "path pattern '{0}': CloudFront wants 1 to 255 characters of A-Z a-z 0-9 _ - . * $ / ~ \" ' @ : +, and not '*' alone (that is the default behaviour)"
    )]
    PathPattern(String),
    #[error("{}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {why}", path.display())]
    Package { path: PathBuf, why: String },
    #[error("{}: {misfit}", path.display())]
    Misfit { path: PathBuf, misfit: Misfit },
}

/// What the stack reads of a package's verge.json.
#[derive(Deserialize)]
struct Manifest {
    component: ManifestComponent,
    trigger: Trigger,
    include_body: bool,
    memory_mb: u32,
    timeout_s: u32,
    /// Packs made before the setting existed ran on nodejs22.x.
    #[serde(default)]
    runtime: Runtime,
}

#[derive(Deserialize)]
struct ManifestComponent {
    name: String,
}

impl Function {
    /// A pack's output folder: `function.zip`, whose own `verge.json` gives the
    /// settings (and must equal the folder's `verge.json`, when there is one:
    /// the template must describe the code it deploys). The package is checked
    /// against its trigger's quotas again. Its S3 key defaults to `function.zip`.
    pub fn from_package(dir: &Path) -> Result<Function, StackError> {
        let zip_path = dir.join("function.zip");
        let read = |path: &Path| {
            std::fs::read(path).map_err(|error| StackError::Read {
                path: path.into(),
                error,
            })
        };
        let zip = read(&zip_path)?;
        let bad = |why: String| StackError::Package {
            path: zip_path.clone(),
            why,
        };
        let inner = {
            let mut archive = zip::ZipArchive::new(std::io::Cursor::new(&zip))
                .map_err(|e| bad(format!("not a zip: {e}")))?;
            let mut file = archive
                .by_name("verge.json")
                .map_err(|_| bad("no verge.json inside: not made by verge-edge pack".into()))?;
            let mut text = Vec::new();
            file.read_to_end(&mut text)
                .map_err(|e| bad(format!("reading verge.json: {e}")))?;
            text
        };
        let parse = |text: &[u8]| serde_json::from_slice::<Value>(text);
        let inner = parse(&inner).map_err(|e| bad(format!("its verge.json: {e}")))?;
        let beside = dir.join("verge.json");
        if beside.exists() {
            let outer = parse(&read(&beside)?).map_err(|e| StackError::Package {
                path: beside.clone(),
                why: e.to_string(),
            })?;
            if outer != inner {
                return Err(StackError::Package {
                    path: beside,
                    why: "differs from the verge.json inside function.zip: re-pack".into(),
                });
            }
        }
        let m: Manifest =
            serde_json::from_value(inner).map_err(|e| bad(format!("its verge.json: {e}")))?;
        let misfit = |misfit| StackError::Misfit {
            path: zip_path.clone(),
            misfit,
        };
        quota::check_settings(m.trigger, m.memory_mb, m.timeout_s, m.include_body)
            .map_err(misfit)?;
        quota::check_zip(m.trigger, zip.len() as u64).map_err(misfit)?;
        let name = Path::new(&m.component.name)
            .file_stem()
            .map_or(m.component.name.clone(), |s| s.to_string_lossy().into());
        Ok(Function {
            name,
            trigger: m.trigger,
            include_body: m.include_body,
            memory_mb: m.memory_mb,
            timeout_s: m.timeout_s,
            runtime: m.runtime,
            zip_sha256: sha256(&zip),
            code_key: "function.zip".into(),
            source: dir.display().to_string(),
            path: None,
        })
    }
}

/// The template for one function, as `pack` writes it: a stack of one.
pub fn template(f: &Function) -> Value {
    stack(std::slice::from_ref(f)).expect("one function repeats no trigger")
}

/// One template for several functions on one cache behaviour, at most one per
/// event type. Logical IDs and the S3 key parameters carry the trigger
/// (`EdgeFunctionViewerRequest`, `CodeKeyViewerRequest`) when there are
/// several; a stack of one keeps the plain names (`EdgeFunction`, `CodeKey`).
pub fn stack(functions: &[Function]) -> Result<Value, StackError> {
    if functions.is_empty() {
        return Err(StackError::Empty);
    }
    // Cache behaviours, the default first, then each path pattern as first
    // named; in each, the functions in trigger order.
    let mut behaviours: Vec<(Option<&str>, BTreeMap<usize, &Function>)> =
        vec![(None, BTreeMap::new())];
    for f in functions {
        if let Some(p) = &f.path {
            check_path_pattern(p)?;
        }
        let at = match behaviours.iter().position(|(p, _)| *p == f.path.as_deref()) {
            Some(i) => i,
            None => {
                behaviours.push((f.path.as_deref(), BTreeMap::new()));
                behaviours.len() - 1
            }
        };
        let order = Trigger::ALL
            .iter()
            .position(|t| *t == f.trigger)
            .unwrap_or(0);
        if let Some(first) = behaviours[at].1.insert(order, f) {
            return Err(StackError::SameTrigger {
                trigger: f.trigger.event_type(),
                behaviour: f
                    .path
                    .as_ref()
                    .map_or("the default cache behaviour".into(), |p| {
                        format!("the cache behaviour for {p}")
                    }),
                first: first.source.clone(),
                second: f.source.clone(),
            });
        }
    }
    let one = functions.len() == 1;
    let mut parameters = Map::new();
    parameters.insert(
        "CodeBucket".into(),
        json!({
            "Type": "String",
            "Description": if one {
                "S3 bucket (us-east-1) holding the package"
            } else {
                "S3 bucket (us-east-1) holding the packages"
            }
        }),
    );
    let mut resources = Map::new();
    resources.insert(
        "EdgeRole".into(),
        json!({
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [{
                        "Effect": "Allow",
                        "Principal": { "Service": ["lambda.amazonaws.com", "edgelambda.amazonaws.com"] },
                        "Action": "sts:AssumeRole"
                    }]
                },
                "ManagedPolicyArns": ["arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"]
            }
        }),
    );
    let mut outputs = Map::new();
    let mut described = Vec::new();
    // Logical IDs: plain for one function, the trigger for one behaviour,
    // and `Path<N>` before it for the N-th path pattern.
    let mut associations: Vec<Vec<Value>> = vec![Vec::new(); behaviours.len()];
    for (b, f) in behaviours
        .iter()
        .enumerate()
        .flat_map(|(b, (_, fs))| fs.values().map(move |f| (b, *f)))
    {
        let suffix = match (one, b) {
            (true, _) => String::new(),
            (false, 0) => f.trigger.camel_case().to_string(),
            (false, b) => format!("Path{b}{}", f.trigger.camel_case()),
        };
        let (key, function, version) = (
            format!("CodeKey{suffix}"),
            format!("EdgeFunction{suffix}"),
            format!("EdgeFunctionVersion{suffix}"),
        );
        let event = f.trigger.event_type();
        parameters.insert(
            key.clone(),
            json!({
                "Type": "String",
                "Default": f.code_key,
                "Description": format!("S3 key of {}'s package for {event} (sha256 {})", f.name, f.zip_sha256)
            }),
        );
        resources.insert(
            function.clone(),
            json!({
                "Type": "AWS::Lambda::Function",
                "Properties": {
                    "Description": format!("verge {} ({event})", f.name),
                    "Runtime": f.runtime.as_str(),
                    "Architectures": ["x86_64"],
                    "Handler": "index.handler",
                    "MemorySize": f.memory_mb,
                    "Timeout": f.timeout_s,
                    "Role": { "Fn::GetAtt": ["EdgeRole", "Arn"] },
                    "Code": { "S3Bucket": { "Ref": "CodeBucket" }, "S3Key": { "Ref": key } }
                }
            }),
        );
        resources.insert(
            version.clone(),
            json!({
                "Type": "AWS::Lambda::Version",
                "Properties": {
                    "FunctionName": { "Ref": function },
                    "Description": format!("package sha256 {}", f.zip_sha256)
                }
            }),
        );
        outputs.insert(
            format!("FunctionVersionArn{suffix}"),
            json!({ "Value": { "Ref": version } }),
        );
        associations[b].push(json!({
            "EventType": event,
            "IncludeBody": f.include_body,
            "LambdaFunctionARN": { "Ref": version }
        }));
        described.push(format!(
            "{} on CloudFront {event}{} (package sha256 {})",
            f.name,
            f.path
                .as_ref()
                .map_or(String::new(), |p| format!(" for {p}")),
            f.zip_sha256
        ));
    }
    parameters.insert(
        "OriginDomainName".into(),
        json!({ "Type": "String", "Description": "The origin CloudFront forwards to" }),
    );
    let behaviour = |associations: &[Value]| {
        json!({
            "TargetOriginId": "origin",
            "ViewerProtocolPolicy": "redirect-to-https",
            "AllowedMethods": ["GET", "HEAD", "OPTIONS", "PUT", "PATCH", "POST", "DELETE"],
            // Managed policies: CachingDisabled, AllViewerExceptHostHeader.
            "CachePolicyId": "4135ea2d-6df8-44a3-9df3-4b5a84be39ad",
            "OriginRequestPolicyId": "b689b0a8-53d0-40ab-baf2-68738e2966ac",
            "LambdaFunctionAssociations": associations
        })
    };
    let mut config = json!({
        "Enabled": true,
        "Origins": [{
            "Id": "origin",
            "DomainName": { "Ref": "OriginDomainName" },
            "CustomOriginConfig": { "OriginProtocolPolicy": "https-only" }
        }],
        "DefaultCacheBehavior": behaviour(&associations[0]),
    });
    if behaviours.len() > 1 {
        let paths: Vec<Value> = behaviours
            .iter()
            .zip(&associations)
            .skip(1)
            .map(|((path, _), a)| {
                let mut b = behaviour(a);
                b["PathPattern"] = json!(path);
                b
            })
            .collect();
        config["CacheBehaviors"] = Value::Array(paths);
    }
    resources.insert(
        "Distribution".into(),
        json!({
            "Type": "AWS::CloudFront::Distribution",
            "Properties": { "DistributionConfig": config }
        }),
    );
    outputs.insert(
        "DistributionDomainName".into(),
        json!({ "Value": { "Fn::GetAtt": ["Distribution", "DomainName"] } }),
    );
    Ok(json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": format!("verge: {}. Deploy in us-east-1.", described.join(", ")),
        "Parameters": parameters,
        "Rules": {
            "UsEast1": {
                "Assertions": [{
                    "Assert": { "Fn::Equals": [{ "Ref": "AWS::Region" }, "us-east-1"] },
                    "AssertDescription": "Lambda@Edge functions are created in us-east-1"
                }]
            }
        },
        "Resources": resources,
        "Outputs": outputs
    }))
}

/// CloudFront's rules for a cache behaviour's path pattern.
fn check_path_pattern(p: &str) -> Result<(), StackError> {
    let ok = !p.is_empty()
        && p.len() <= 255
        && p != "*"
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.*$/~\"'@:+&".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StackError::PathPattern(p.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function(name: &str, trigger: Trigger) -> Function {
        Function {
            name: name.into(),
            trigger,
            include_body: trigger.is_request(),
            memory_mb: 128,
            timeout_s: 5,
            runtime: Runtime::Nodejs22,
            zip_sha256: "ab".repeat(32),
            code_key: format!("{}.zip", trigger.event_type()),
            source: format!("out/{name}-{}", trigger.event_type()),
            path: None,
        }
    }

    #[test]
    fn a_stack_of_one_keeps_the_plain_names() {
        let t = template(&function("fraud_score", Trigger::OriginRequest));
        let r = &t["Resources"];
        assert_eq!(
            r["EdgeFunction"]["Properties"]["Code"]["S3Key"]["Ref"],
            "CodeKey"
        );
        assert_eq!(t["Parameters"]["CodeKey"]["Default"], "origin-request.zip");
        let assoc = &r["Distribution"]["Properties"]["DistributionConfig"]["DefaultCacheBehavior"]
            ["LambdaFunctionAssociations"];
        assert_eq!(
            assoc,
            &json!([{ "EventType": "origin-request", "IncludeBody": true,
                      "LambdaFunctionARN": { "Ref": "EdgeFunctionVersion" } }])
        );
        assert_eq!(
            t["Description"],
            format!(
                "verge: fraud_score on CloudFront origin-request (package sha256 {}). Deploy in us-east-1.",
                "ab".repeat(32)
            )
        );
    }

    #[test]
    fn a_cascade_shares_the_role_and_the_cache_behaviour() {
        // Given origin first: the template follows CloudFront's event order.
        let t = stack(&[
            function("fraud_score", Trigger::OriginRequest),
            function("fraud_score", Trigger::ViewerRequest),
        ])
        .unwrap();
        let r = t["Resources"].as_object().unwrap();
        let mut names: Vec<&str> = r.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "Distribution",
                "EdgeFunctionOriginRequest",
                "EdgeFunctionVersionOriginRequest",
                "EdgeFunctionVersionViewerRequest",
                "EdgeFunctionViewerRequest",
                "EdgeRole",
            ]
        );
        for f in ["EdgeFunctionOriginRequest", "EdgeFunctionViewerRequest"] {
            assert_eq!(r[f]["Properties"]["Role"]["Fn::GetAtt"][0], "EdgeRole");
        }
        assert_eq!(
            r["EdgeFunctionViewerRequest"]["Properties"]["Code"]["S3Key"]["Ref"],
            "CodeKeyViewerRequest"
        );
        let assoc = r["Distribution"]["Properties"]["DistributionConfig"]["DefaultCacheBehavior"]
            ["LambdaFunctionAssociations"]
            .as_array()
            .unwrap();
        let events: Vec<&str> = assoc
            .iter()
            .map(|a| a["EventType"].as_str().unwrap())
            .collect();
        assert_eq!(events, ["viewer-request", "origin-request"]);
        assert_eq!(
            assoc[0]["LambdaFunctionARN"]["Ref"],
            "EdgeFunctionVersionViewerRequest"
        );
        let p = t["Parameters"].as_object().unwrap();
        let params: Vec<&str> = p.keys().map(String::as_str).collect();
        assert_eq!(
            params,
            [
                "CodeBucket",
                "CodeKeyViewerRequest",
                "CodeKeyOriginRequest",
                "OriginDomainName"
            ]
        );
        assert!(t["Outputs"]["FunctionVersionArnViewerRequest"].is_object());
    }

    #[test]
    fn two_functions_for_one_event_are_refused() {
        let e = stack(&[
            function("fraud_score", Trigger::ViewerRequest),
            function("file_type", Trigger::ViewerRequest),
        ])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "out/fraud_score-viewer-request and out/file_type-viewer-request are both for viewer-request on the default cache behaviour: a cache behaviour runs at most one function per event type"
        );
        assert!(matches!(stack(&[]), Err(StackError::Empty)));
    }

    #[test]
    fn paths_get_cache_behaviours_of_their_own() {
        let on = |name: &str, trigger, path: &str| Function {
            path: Some(path.into()),
            ..function(name, trigger)
        };
        let t = stack(&[
            on("fraud_score", Trigger::OriginRequest, "/checkout/*"),
            on("fraud_score", Trigger::ViewerRequest, "/checkout/*"),
            on("text_embed", Trigger::OriginRequest, "/search*"),
        ])
        .unwrap();
        let config = &t["Resources"]["Distribution"]["Properties"]["DistributionConfig"];
        assert_eq!(
            config["DefaultCacheBehavior"]["LambdaFunctionAssociations"],
            json!([])
        );
        let b = config["CacheBehaviors"].as_array().unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[0]["PathPattern"], "/checkout/*");
        let events: Vec<&Value> = b[0]["LambdaFunctionAssociations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| &a["EventType"])
            .collect();
        assert_eq!(events, [&json!("viewer-request"), &json!("origin-request")]);
        assert_eq!(
            b[1]["LambdaFunctionAssociations"][0]["LambdaFunctionARN"],
            json!({ "Ref": "EdgeFunctionVersionPath2OriginRequest" })
        );
        // One event twice on one path is refused; a path CloudFront rejects too.
        let e = stack(&[
            on("a", Trigger::OriginRequest, "/x/*"),
            on("b", Trigger::OriginRequest, "/x/*"),
        ])
        .unwrap_err();
        assert!(
            e.to_string().contains("on the cache behaviour for /x/*"),
            "{e}"
        );
        assert!(matches!(
            stack(&[on("a", Trigger::OriginRequest, "*")]),
            Err(StackError::PathPattern(_))
        ));
        assert!(matches!(
            stack(&[on("a", Trigger::OriginRequest, "/a b")]),
            Err(StackError::PathPattern(_))
        ));
    }
}
