#!/usr/bin/env python3
"""fraud-score written in Rust, JavaScript (componentize-qjs) and Python (componentize-py), side by side.

Per language, on the device host (`verge-device serve`, ONNX Runtime's library when given, else
tract): the component's size (raw, gzip), its first compile (the daemon's "component loaded" with
an empty cache), a restart (start → ready, and the component's load from the compile cache), and
warm requests through the local API (one fresh instance per request, as the daemon runs every
call): p50 and p99 of --requests sequential calls. At the edge (`verge-edge pack`, compact engine,
origin-request; shims/lambda-edge/src/invoke.mjs on the pinned Node): the zip's size, the first
call of a fresh Node process (cold: module load, compile, instantiate) and the warm median.
Appends JSON Lines to --rows (section "languages", Rust the baseline) and prints a table.

  python3 bench/languages.py --rows /tmp/rows.jsonl [--requests 200] [--onnxruntime-lib LIB]
"""

import argparse
import gzip
import hashlib
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LANGUAGES = (("rust", "fraud_score"), ("javascript", "fraud_score_js"), ("python", "fraud_score_py"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha256(p):
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def serve(device, config, state):
    """Starts the daemon; returns (process, start→ready ms, its log lines so far)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(device), "serve", "--config", str(config), "--state-dir", str(state)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(json.loads(line))
        if lines[-1].get("msg") == "ready":
            return proc, (time.perf_counter() - t0) * 1000, lines
    raise SystemExit(f"the daemon exited before ready: {lines[-3:]}")


def stop(proc):
    proc.terminate()
    proc.wait(10)


def post(port, route, body):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    t = time.perf_counter()
    c.request("POST", f"/v1/infer/{route}", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    if r.status != 200:
        raise SystemExit(f"{route}: HTTP {r.status}: {data[:200]!r}")
    return (time.perf_counter() - t) * 1000, json.loads(data)


def device_figures(args, name, wasm, model, tmp):
    port = free_port()
    lines = [f'[api]\nlisten = "127.0.0.1:{port}"', f'[models.fraud-score]\npath = "{model}"\nsha256 = "{sha256(model)}"']
    if args.onnxruntime_lib:
        lines.append(f'[onnxruntime]\nlibrary = "{args.onnxruntime_lib}"')
    lines.append(f'[components.{name}]\npath = "{wasm}"\nsha256 = "{sha256(wasm)}"\n[routes.{name}]\ncomponent = "{name}"')
    config = tmp / f"{name}.toml"
    config.write_text("\n".join(lines) + "\n")
    state = tmp / f"state-{name}"
    figures = {}
    for run in ("first", "restart"):
        proc, ready_ms, log = serve(args.device, config, state)
        loaded = next(l for l in log if l.get("msg") == "component loaded")
        if run == "first":
            assert loaded["source"] == "compiled", loaded
            figures["device: first compile"] = loaded["ms"]
        else:
            assert loaded["source"] == "cache", loaded
            figures["device: restart, start→ready"] = ready_ms
            figures["device: restart, load from cache"] = loaded["ms"]
            body = (ROOT / "examples/shop/inputs/tx-late-risky.json").read_bytes()
            for _ in range(10):
                post(port, name, body)
            ms = sorted(post(port, name, body)[0] for _ in range(args.requests))
            figures["device: warm request p50"] = ms[len(ms) // 2]
            figures["device: warm request p99"] = ms[max(0, int(len(ms) * 0.99) - 1)]
        stop(proc)
    return figures


def edge_figures(args, name, wasm, model, tmp):
    out = tmp / f"pack-{name}"
    subprocess.run([str(args.edge), "pack", "--component", str(wasm), "--model", f"fraud-score={model}",
                    "--engine", "compact", "--trigger", "origin-request", "--include-body", "--out", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    unzipped = tmp / f"unzipped-{name}"
    with zipfile.ZipFile(out / "function.zip") as z:
        z.extractall(unzipped)
    body = ROOT / "examples/shop/inputs/tx-late-risky.json"
    request = json.dumps({"inputs": [{"file": str(body), "content_type": "application/json"}], "repeat": args.requests})
    colds, warms = [], []
    for _ in range(3):  # fresh Node processes: the cold call is a process's first
        done = subprocess.run([args.node, str(ROOT / "shims/lambda-edge/src/invoke.mjs"), str(unzipped)],
                              input=request, capture_output=True, text=True, check=True)
        r = json.loads(done.stdout.splitlines()[0])
        colds.append(r["cold_ms"])
        warms.append(r["warm_ms"])
    return {
        "edge: zip": (out / "function.zip").stat().st_size / (1 << 20),
        "edge: cold call": statistics.median(colds),
        "edge: warm call": statistics.median(warms),
    }


def main():
    env = os.environ.get
    cache = Path(env("VERGE_CACHE", Path.home() / ".cache/verge"))
    target = Path(env("CARGO_TARGET_DIR", cache / "target"))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", required=True)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--device", default=target / "release/verge-device")
    p.add_argument("--edge", default=target / "release/verge-edge")
    p.add_argument("--node", default=env("VERGE_NODE", "node"))
    p.add_argument("--wasm-dir", default=env("VERGE_WASM_DIR", target / "wasm32-wasip2/component"))
    p.add_argument("--model", default=Path(env("VERGE_MODELS_DIR", ROOT / "models/.cache")) / "fraud-score/model.onnx")
    p.add_argument("--onnxruntime-lib", help="run the model on ONNX Runtime on the device")
    args = p.parse_args()
    model = Path(args.model).absolute()
    tmp = Path(tempfile.mkdtemp(prefix="verge-languages-"))
    table = {}
    for language, name in LANGUAGES:
        wasm = Path(args.wasm_dir) / f"{name}.wasm"
        raw = wasm.read_bytes()
        figures = {"size": len(raw) / (1 << 20), "size, gzip": len(gzip.compress(raw, 9)) / (1 << 20)}
        figures |= device_figures(args, name, wasm, model, tmp)
        figures |= edge_figures(args, name, wasm, model, tmp)
        table[language] = figures
        print(f"{language} done", file=sys.stderr)
    unit = lambda m: "MB" if "size" in m or "zip" in m else "ms"
    engine = "onnxruntime" if args.onnxruntime_lib else "tract"
    with open(args.rows, "a") as out:
        for language, figures in table.items():
            for metric, value in figures.items():
                out.write(json.dumps({
                    "section": "languages", "workload": f"fraud-score (device model on {engine})",
                    "system": language, "metric": metric, "unit": unit(metric), "samples": [round(value, 4)],
                    "baseline": language == "rust", "better": "lower",
                }) + "\n")
    metrics = list(table["rust"])
    print(f"\nfraud-score by language (device model on {engine}); × Rust in brackets", file=sys.stderr)
    print(f"{'':<34}" + "".join(f"{l:>22}" for l in table), file=sys.stderr)
    for m in metrics:
        base = table["rust"][m]
        ratio = lambda v: f"({v / base:>5.1f}×)" if base else "       "
        cells = "".join(f"{table[l][m]:>11.2f} {unit(m):<2} {ratio(table[l][m])}" for l in table)
        print(f"{m:<34}{cells}", file=sys.stderr)


if __name__ == "__main__":
    main()
