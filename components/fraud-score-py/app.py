"""fraud-score in Python: the Rust component's twin (components/fraud-score), with the same
settings (`model`, `low`, `high`) and the same outcomes: a score under `low` annotates, at or over
`high` answers 403, in between defers to the origin."""

import array
import math

from verge_sdk import Model, Tensor, annotate, defer, format_f32, handle, internal, invalid, json, settings

# The model's inputs, in its order (FEATURES in models/fraud_score.py).
FEATURES = ["amount", "hour", "distance_km", "merchant_risk", "card_age_days", "txn_last_24h", "foreign",
            "card_present"]


def features(req):
    if req.text().strip() == "":
        raise invalid(f"empty body: expected a JSON object with the features {', '.join(FEATURES)}")
    value = req.json()
    if not isinstance(value, dict):
        raise invalid('expected a JSON object of named features, e.g. {"amount": 12.5, ...}')
    out = array.array("f")
    for name in FEATURES:
        if name not in value:
            raise invalid(f"missing feature '{name}'")
        v = value[name]
        if isinstance(v, bool):
            out.append(float(v))
        elif isinstance(v, (int, float)):
            out.append(float(v))
        else:
            raise invalid(f"feature '{name}' must be a number, got {json_text(v)}")
        if not math.isfinite(out[-1]):
            raise invalid(f"feature '{name}' must be a finite number, got {v}")
    return out


def json_text(v):
    import json as j
    return j.dumps(v, separators=(",", ":"))


def score_request(req):
    x = features(req)
    low, high = (array.array("f", [settings.number(k, d)])[0] for k, d in (("low", 0.3), ("high", 0.8)))
    if not (0 <= low <= 1 and 0 <= high <= 1 and low <= high):
        raise internal(f"settings low = {format_f32(low)}, high = {format_f32(high)}: need 0 <= low <= high <= 1")
    model = Model.load(settings.string("model", "fraud-score"))
    outputs = model.run({"features": Tensor([1, len(FEATURES)], x)})
    score = outputs.get("probabilities").expect_dims([1, 2]).as_type("FP32")[1]
    s = format_f32(score)
    if score >= high:
        return json(403, f'{{"decision":"block","fraud_score":{s},"threshold":{format_f32(high)}}}',
                    [("x-fraud-score", s)])
    if score < low:
        return annotate([("x-fraud-score", s)])
    return defer(f"fraud score {s} is between {format_f32(low)} and {format_f32(high)}: the origin decides")


Handler = handle(score_request)
