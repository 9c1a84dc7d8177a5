// fraud-score in JavaScript: the Rust component's twin (components/fraud-score),
// with the same settings (`model`, `low`, `high`) and the same outcomes:
// a score under `low` annotates, at or over `high` answers 403, in between
// defers to the origin.
import { annotate, defer, formatF32, handle, internal, invalid, json, Model, settings, Tensor } from "verge-sdk";

// The model's inputs, in its order (FEATURES in models/fraud_score.py).
const FEATURES = ["amount", "hour", "distance_km", "merchant_risk", "card_age_days", "txn_last_24h", "foreign", "card_present"];

function parseFeatures(req) {
  const text = req.text();
  if (text.trim() === "") throw invalid(`empty body: expected a JSON object with the features ${FEATURES.join(", ")}`);
  const value = req.json();
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw invalid('expected a JSON object of named features, e.g. {"amount": 12.5, ...}');
  }
  return Float32Array.from(FEATURES, (name) => {
    if (!(name in value)) throw invalid(`missing feature '${name}'`);
    const v = value[name];
    const x = typeof v === "number" ? Math.fround(v) : typeof v === "boolean" ? Number(v) : undefined;
    if (x === undefined) throw invalid(`feature '${name}' must be a number, got ${JSON.stringify(v)}`);
    if (!Number.isFinite(x)) throw invalid(`feature '${name}' must be a finite number, got ${v}`);
    return x;
  });
}

export const handler = handle((req) => {
  const features = parseFeatures(req);
  const low = Math.fround(settings.number("low", 0.3));
  const high = Math.fround(settings.number("high", 0.8));
  if (!(low >= 0 && low <= 1 && high >= 0 && high <= 1 && low <= high)) {
    throw internal(`settings low = ${formatF32(low)}, high = ${formatF32(high)}: need 0 <= low <= high <= 1`);
  }
  const model = Model.load(settings.string("model", "fraud-score"));
  const outputs = model.run({ features: new Tensor([1, FEATURES.length], features) });
  const score = outputs.get("probabilities").expectDims([1, 2]).as("FP32")[1];
  const s = formatF32(score);
  if (score >= high) {
    return json(403, `{"decision":"block","fraud_score":${s},"threshold":${formatF32(high)}}`, [["x-fraud-score", s]]);
  }
  if (score < low) return annotate([["x-fraud-score", s]]);
  return defer(`fraud score ${s} is between ${formatF32(low)} and ${formatF32(high)}: the origin decides`);
});
