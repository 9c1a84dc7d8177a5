//! `fraud-score`: a transaction's features as JSON in, the model's fraud
//! probability out, and a decision from two thresholds:
//!
//! * score < `low`: let the request go on, annotated with `x-fraud-score`;
//! * score >= `high`: answer 403 with the score as JSON;
//! * in between: defer to the origin, which can look further.
//!
//! The model (`models/fraud_score.py`) is a scikit-learn random forest trained
//! on synthetic transactions, converted to one ONNX `TreeEnsembleClassifier`.
//!
//! Deployment settings (`wasi:config`): `model` (graph name, default
//! `fraud-score`), `low` (default 0.3), `high` (default 0.8).

use serde_json::Value;
use verge_sdk::{Error, Handler, Model, Outcome, Request, Tensor, json_number, settings};

/// The model's inputs, in its order (`FEATURES` in `models/fraud_score.py`).
pub const FEATURES: [&str; 8] = [
    "amount",
    "hour",
    "distance_km",
    "merchant_risk",
    "card_age_days",
    "txn_last_24h",
    "foreign",
    "card_present",
];

pub const DEFAULT_LOW: f32 = 0.3;
pub const DEFAULT_HIGH: f32 = 0.8;

/// The feature vector from a JSON object of named numbers (booleans count as 0/1).
pub fn parse_features(body: &[u8]) -> Result<[f32; FEATURES.len()], Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::invalid(format!(
            "empty body: expected a JSON object with the features {}",
            FEATURES.join(", ")
        )));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Error::invalid(format!("the body is not JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(Error::invalid(
            "expected a JSON object of named features, e.g. {\"amount\": 12.5, ...}",
        ));
    };
    let mut out = [0f32; FEATURES.len()];
    for (slot, name) in out.iter_mut().zip(FEATURES) {
        let v = map
            .get(name)
            .ok_or_else(|| Error::invalid(format!("missing feature '{name}'")))?;
        *slot = match v {
            Value::Number(n) => n.as_f64().unwrap_or(f64::NAN) as f32,
            Value::Bool(b) => f32::from(u8::from(*b)),
            other => {
                return Err(Error::invalid(format!(
                    "feature '{name}' must be a number, got {other}"
                )));
            }
        };
        if !slot.is_finite() {
            return Err(Error::invalid(format!(
                "feature '{name}' must be a finite number, got {v}"
            )));
        }
    }
    Ok(out)
}

/// The thresholds, checked.
pub fn thresholds(low: f32, high: f32) -> Result<(f32, f32), Error> {
    if !(0.0..=1.0).contains(&low) || !(0.0..=1.0).contains(&high) || low > high {
        return Err(Error::internal(format!(
            "settings low = {low}, high = {high}: need 0 <= low <= high <= 1"
        )));
    }
    Ok((low, high))
}

/// The outcome for a fraud probability.
pub fn decide(score: f32, low: f32, high: f32) -> Outcome {
    // f32's shortest representation, not the f64 widening's 17 digits.
    let s = if score.is_finite() {
        format!("{score}")
    } else {
        json_number(f64::NAN)
    };
    if score >= high {
        Outcome::json(
            403,
            format!("{{\"decision\":\"block\",\"fraud_score\":{s},\"threshold\":{high}}}"),
        )
        .with_header("x-fraud-score", s)
    } else if score < low {
        Outcome::annotate([("x-fraud-score", s)])
    } else {
        Outcome::defer(format!(
            "fraud score {s} is between {low} and {high}: the origin decides"
        ))
    }
}

pub struct FraudScore;

impl Handler for FraudScore {
    fn handle(req: Request) -> Result<Outcome, Error> {
        let features = parse_features(&req.body)?;
        let (low, high) = thresholds(
            settings::get_or("low", DEFAULT_LOW)?,
            settings::get_or("high", DEFAULT_HIGH)?,
        )?;
        let model = Model::load(&settings::get_or("model", "fraud-score".to_string())?)?;
        let input = Tensor::new(&[1, FEATURES.len() as u32], &features)?;
        let outputs = model.run(&[("features", input)])?;
        let proba = outputs
            .get("probabilities")?
            .expect_dims(&[Some(1), Some(2)])?;
        Ok(decide(proba.values::<f32>()?[1], low, high))
    }
}

verge_sdk::export!(FraudScore);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_by_name() {
        let f = parse_features(
            br#"{"card_present": true, "amount": 12.5, "hour": 3, "distance_km": 0,
                "merchant_risk": 0.5, "card_age_days": 100, "txn_last_24h": 2, "foreign": false,
                "extra": "ignored"}"#,
        )
        .unwrap();
        assert_eq!(f, [12.5, 3.0, 0.0, 0.5, 100.0, 2.0, 0.0, 1.0]);
    }

    #[test]
    fn bad_inputs_are_named() {
        let msg = |b: &[u8]| match parse_features(b) {
            Err(Error::InvalidInput(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(msg(b"").contains("empty body"));
        assert!(msg(b"[1,2]").contains("JSON object"));
        assert!(msg(b"{nope").contains("not JSON"));
        assert_eq!(msg(br#"{"amount": 1}"#), "missing feature 'hour'");
        assert!(msg(br#"{"amount": "12"}"#).contains("'amount' must be a number"));
    }

    #[test]
    fn handler_runs_natively_up_to_the_model() {
        let req = |b: &[u8]| Request {
            body: b.to_vec(),
            ..Request::default()
        };
        assert!(matches!(
            FraudScore::handle(req(b"{}")),
            Err(Error::InvalidInput(m)) if m == "missing feature 'amount'"
        ));
        let ok = br#"{"amount": 1, "hour": 1, "distance_km": 1, "merchant_risk": 0.1,
            "card_age_days": 1, "txn_last_24h": 1, "foreign": 0, "card_present": 1}"#;
        assert!(matches!(
            FraudScore::handle(req(ok)),
            Err(Error::Internal(m)) if m.contains("wasi:nn")
        ));
    }

    #[test]
    fn thresholds_pick_the_outcome() {
        assert!(matches!(decide(0.1, 0.3, 0.8), Outcome::Annotate(a) if a[0].0 == "x-fraud-score"));
        assert!(matches!(decide(0.5, 0.3, 0.8), Outcome::Defer(r) if r.contains("between")));
        assert!(matches!(decide(0.8, 0.3, 0.8), Outcome::Respond(r) if r.status == 403));
        assert!(thresholds(0.9, 0.2).is_err());
        assert!(thresholds(0.2, 0.9).is_ok());
    }
}
