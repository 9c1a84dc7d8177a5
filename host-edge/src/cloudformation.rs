//! A CloudFormation template that deploys a package: the function (in
//! us-east-1, as Lambda@Edge requires), a published version, and a CloudFront
//! distribution whose default cache behaviour runs it on the chosen trigger.

use serde_json::{Value, json};

use crate::quota::Trigger;

pub struct Function<'a> {
    pub name: &'a str,
    pub trigger: Trigger,
    pub include_body: bool,
    pub memory_mb: u32,
    pub timeout_s: u32,
    pub zip_sha256: &'a str,
}

pub fn template(f: &Function<'_>) -> Value {
    json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": format!(
            "verge: {} on CloudFront {} (package sha256 {}). Deploy in us-east-1.",
            f.name, f.trigger.event_type(), f.zip_sha256
        ),
        "Parameters": {
            "CodeBucket": { "Type": "String", "Description": "S3 bucket (us-east-1) holding function.zip" },
            "CodeKey": { "Type": "String", "Default": "function.zip" },
            "OriginDomainName": { "Type": "String", "Description": "The origin CloudFront forwards to" }
        },
        "Rules": {
            "UsEast1": {
                "Assertions": [{
                    "Assert": { "Fn::Equals": [{ "Ref": "AWS::Region" }, "us-east-1"] },
                    "AssertDescription": "Lambda@Edge functions are created in us-east-1"
                }]
            }
        },
        "Resources": {
            "EdgeRole": {
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
            },
            "EdgeFunction": {
                "Type": "AWS::Lambda::Function",
                "Properties": {
                    "Description": format!("verge {} ({})", f.name, f.trigger.event_type()),
                    "Runtime": "nodejs22.x",
                    "Architectures": ["x86_64"],
                    "Handler": "index.handler",
                    "MemorySize": f.memory_mb,
                    "Timeout": f.timeout_s,
                    "Role": { "Fn::GetAtt": ["EdgeRole", "Arn"] },
                    "Code": { "S3Bucket": { "Ref": "CodeBucket" }, "S3Key": { "Ref": "CodeKey" } }
                }
            },
            "EdgeFunctionVersion": {
                "Type": "AWS::Lambda::Version",
                "Properties": {
                    "FunctionName": { "Ref": "EdgeFunction" },
                    "Description": format!("package sha256 {}", f.zip_sha256)
                }
            },
            "Distribution": {
                "Type": "AWS::CloudFront::Distribution",
                "Properties": {
                    "DistributionConfig": {
                        "Enabled": true,
                        "Origins": [{
                            "Id": "origin",
                            "DomainName": { "Ref": "OriginDomainName" },
                            "CustomOriginConfig": { "OriginProtocolPolicy": "https-only" }
                        }],
                        "DefaultCacheBehavior": {
                            "TargetOriginId": "origin",
                            "ViewerProtocolPolicy": "redirect-to-https",
                            "AllowedMethods": ["GET", "HEAD", "OPTIONS", "PUT", "PATCH", "POST", "DELETE"],
                            // Managed policies: CachingDisabled, AllViewerExceptHostHeader.
                            "CachePolicyId": "4135ea2d-6df8-44a3-9df3-4b5a84be39ad",
                            "OriginRequestPolicyId": "b689b0a8-53d0-40ab-baf2-68738e2966ac",
                            "LambdaFunctionAssociations": [{
                                "EventType": f.trigger.event_type(),
                                "IncludeBody": f.include_body,
                                "LambdaFunctionARN": { "Ref": "EdgeFunctionVersion" }
                            }]
                        }
                    }
                }
            }
        },
        "Outputs": {
            "FunctionVersionArn": { "Value": { "Ref": "EdgeFunctionVersion" } },
            "DistributionDomainName": { "Value": { "Fn::GetAtt": ["Distribution", "DomainName"] } }
        }
    })
}
