#!/usr/bin/env python3
"""One table from the benchmark's JSON lines: medians, spread, and ratios.

Each input line is one series of samples from one system:
  {"section", "workload", "system", "metric", "unit", "samples": [...], "baseline": bool, "better"}
MB is 2^20 bytes throughout, as the producers count it. The baseline of a (section, workload, metric) group is its row with "baseline": true; device
inference rows also get a ratio to ONNX Runtime (Python, default threads). Fields beyond these
are carried along unread (the soak's RSS row holds its whole curve in "curve"). Sizes of the
verge-device binary, each component .wasm and each packed zip are added here.

  python3 bench/report.py ROWS.jsonl [...] --sizes --json OUT.json > TABLE.md
"""
import argparse
import glob
import json
import os
import statistics
import sys

ORT = "onnxruntime, Python, default threads, model only"
ORDER = ["device-inference", "device-startup", "device-service", "soak", "edge", "sizes"]


def spread(xs):
    """p10–p90 with ten samples or more, else min–max."""
    xs = sorted(xs)
    if len(xs) >= 10:
        at = lambda q: xs[round((len(xs) - 1) * q)]
        return [at(0.1), at(0.9)]
    return [xs[0], xs[-1]]


def size_rows():
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.expanduser("~/.cache/verge/target")
    wasm = os.environ.get("VERGE_WASM_DIR") or os.path.join(target, "wasm32-wasip2", "component")
    packs = os.environ.get("VERGE_EDGE_PACKAGES") or os.path.expanduser("~/.cache/verge/edge-packages")
    files = [("verge-device binary", os.path.join(target, "release", "verge-device"))]
    files += [(f"{os.path.basename(p)}", p) for p in sorted(glob.glob(os.path.join(wasm, "*.wasm")))]
    files += [(f"{os.path.basename(os.path.dirname(p))}/function.zip", p)
              for p in sorted(glob.glob(os.path.join(packs, "*", "function.zip")))]
    for name, path in files:
        if os.path.exists(path):
            yield {"section": "sizes", "workload": name, "system": "verge", "metric": "size", "unit": "MB",
                   "samples": [os.path.getsize(path) / 2**20], "baseline": False, "better": "lower"}


def fmt(v, unit):
    if unit == "yes/no":
        return "yes" if v >= 0.5 else "no"
    if unit == "count":
        return f"{v:.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rows", nargs="+")
    ap.add_argument("--sizes", action="store_true", help="add the sizes of the built artifacts")
    ap.add_argument("--json", help="write the table's rows here as a JSON array")
    a = ap.parse_args()
    series = []
    for path in a.rows:
        with open(path) as f:
            series += [json.loads(line) for line in f if line.strip()]
    if a.sizes:
        series += list(size_rows())
    if not series:
        sys.exit("no rows")
    # The same series from two runs (a baseline measured beside each of two
    # configurations, say) is one series.
    merged = {}
    for s in series:
        key = (s["section"], s["workload"], s["system"], s["metric"])
        if key in merged:
            merged[key]["samples"] = merged[key]["samples"] + s["samples"]
        else:
            merged[key] = dict(s)
    series = list(merged.values())

    out = []
    for s in series:
        if not s["samples"]:
            sys.exit(f"no samples: {s}")
        out.append({k: s[k] for k in ("section", "workload", "system", "metric", "unit")} | {
            "value": statistics.median(s["samples"]), "spread": spread(s["samples"]), "n": len(s["samples"]),
            "baseline": bool(s.get("baseline")), "better": s.get("better", "lower")})
    groups = {}
    for r in out:
        groups.setdefault((r["section"], r["workload"], r["metric"]), []).append(r)
    for rows in groups.values():
        base = next((r for r in rows if r["baseline"]), None)
        ort = next((r for r in rows if r["system"] == ORT), None)
        for r in rows:
            r["ratio"] = r["value"] / base["value"] if base and base["value"] and r["unit"] != "yes/no" else None
            if r["section"] == "device-inference":
                r["ratio_onnxruntime"] = r["value"] / ort["value"] if ort and ort["value"] else None

    rank = {s: i for i, s in enumerate(ORDER)}
    out.sort(key=lambda r: (rank.get(r["section"], 99), r["section"], r["workload"], r["metric"], not r["baseline"]))
    print("| section | workload | metric | system | median | spread | unit | n | × baseline | × ONNX Runtime (Python) |")
    print("|---|---|---|---|---:|---|---|---:|---:|---:|")
    for r in out:
        lo, hi = r["spread"]
        ratio = "baseline" if r["baseline"] else (f"{r['ratio']:.2f}" if r["ratio"] is not None else "")
        ort = f"{r['ratio_onnxruntime']:.2f}" if r.get("ratio_onnxruntime") is not None else ""
        spread_s = "" if r["n"] == 1 else f"{fmt(lo, r['unit'])}–{fmt(hi, r['unit'])}"
        print(f"| {r['section']} | {r['workload']} | {r['metric']} | {r['system']} | {fmt(r['value'], r['unit'])} "
              f"| {spread_s} | {r['unit']} | {r['n']} | {ratio} | {ort} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
