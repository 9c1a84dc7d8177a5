#!/usr/bin/env python3
"""The aarch64 build of verge-device, under qemu-user, against the x86_64 build.

    python3 tests/aarch64_smoke.py --native BIN --aarch64 BIN --qemu-root DIR \
        --component file_type.wasm --model magika=model.onnx \
        --onnxruntime-lib X86_LIB --onnxruntime-lib-aarch64 ARM_LIB FILE...

1. `run` over FILE... on tract and on ONNX Runtime (each build with its own
   architecture's libonnxruntime): the aarch64 outcomes must be the x86_64
   ones, line for line: the same labels, statuses and headers, and scores
   within 1e-4 (the engines' NEON and AVX kernels round differently: about
   1e-6 here, printed).
2. With --tflite-component: `run` of that component with its TensorFlow Lite
   model (the engine chosen by the file), each build with its own
   architecture's libtensorflowlite_c (XNNPack on NEON and on AVX): the same
   outcomes, numbers within 0.01 (pixels of a face's box, scores).
3. `serve` (aarch64, tract) on a free loopback port: /readyz answers 200 within
   a bounded wait, one request gives the outcome `run` gave for that file, and
   SIGTERM ends it with exit code 0.

A smoke, not the suite: a few files, one daemon, bounded waits (qemu runs
wasmtime's compiler and the engines at a fraction of native speed). Needs only
Python's standard library.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def qemu(args: argparse.Namespace) -> list[str]:
    return ["qemu-aarch64", "-L", args.qemu_root]


def run(cmd: list[str], env: dict | None = None) -> list[dict]:
    started = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, **(env or {})})
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} … exited {p.returncode}:\n{p.stderr[-2000:]}")
    lines = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    print(f"  {len(lines)} outcomes in {time.monotonic() - started:.1f} s: {' '.join(cmd[:3])}")
    return lines


def outcomes(binary: list[str], args, backend: str, lib: str | None) -> list[dict]:
    cmd = [*binary, "run", args.component, "--backend", backend, "--format", "json"]
    for m in args.model:
        cmd += ["--model", m]
    if lib:
        cmd += ["--onnxruntime-lib", lib]
    for f in args.files:
        cmd += ["--input", f]
    return run(cmd)


def outcome(line: dict) -> dict:
    """The outcome itself: without the time it took, the input's name or the outbox's receipt."""
    return {k: v for k, v in line.items() if k not in ("ms", "input", "outbox")}


TOLERANCE = 1e-4


def difference(a, b) -> float | None:
    """The largest difference between two numbers in the same places of a
    and b, or None when they differ in anything else."""
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
            return abs(a - b)
        return None
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return None
        parts = [difference(a[k], b[k]) for k in a]
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return None
        parts = [difference(x, y) for x, y in zip(a, b)]
    else:
        return 0.0 if a == b else None
    return None if None in parts else max(parts, default=0.0)


def tflite_outcomes(binary: list[str], args, lib: str) -> list[dict]:
    cmd = [*binary, "run", args.tflite_component, "--format", "json", "--model", args.tflite_model,
           "--tensorflowlite-lib", lib]
    for f in args.tflite_input:
        cmd += ["--input", f]
    return run(cmd)


def compare(what: str, native: list[dict], arm: list[dict], tolerance: float = TOLERANCE) -> int:
    bad, largest = 0, 0.0
    if len(native) != len(arm):
        print(f"  {what}: {len(native)} outcomes on x86_64, {len(arm)} on aarch64")
        return 1
    for a, b in zip(native, arm):
        d = difference(outcome(a), outcome(b))
        if d is None or d > tolerance:
            bad += 1
            print(f"  {what}: differs:\n    x86_64  {json.dumps(a)[:300]}\n    aarch64 {json.dumps(b)[:300]}")
        else:
            largest = max(largest, d)
    print(f"  {what}: {len(native) - bad} of {len(native)} the same (largest score difference {largest:.2g})")
    return bad


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def serve(args, expected: dict) -> int:
    """The aarch64 daemon: ready, one request, a clean stop."""
    port = free_port()
    name, model = args.model[0].split("=", 1)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp, "verge.toml")
        config.write_text(
            f'state_dir = "{tmp}/state"\n'
            f'[api]\nlisten = "127.0.0.1:{port}"\nworkers = 1\n'
            f'[models.{name}]\npath = "{model}"\nsha256 = "{sha256(model)}"\n'
            f'[components.file-type]\npath = "{args.component}"\nsha256 = "{sha256(args.component)}"\n'
            f'[routes.file-type]\ncomponent = "file-type"\ndeadline_ms = 120000\n'
        )
        log = open(Path(tmp, "serve.log"), "w+")
        started = time.monotonic()
        daemon = subprocess.Popen([*qemu(args), args.aarch64, "serve", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 600
            while True:
                if daemon.poll() is not None:
                    log.seek(0)
                    raise SystemExit(f"serve exited {daemon.returncode} before it was ready:\n{log.read()[-2000:]}")
                try:
                    if urllib.request.urlopen(f"{base}/readyz", timeout=5).status == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("serve was not ready within 600 s")
                time.sleep(0.5)
            print(f"  serve (aarch64): /readyz 200 after {time.monotonic() - started:.1f} s")
            body = Path(args.files[0]).read_bytes()
            req = urllib.request.Request(f"{base}/v1/infer/file-type", data=body, method="POST")
            with urllib.request.urlopen(req, timeout=300) as r:
                got = json.loads(r.read())
            d = difference(outcome(got), outcome(expected))
            same = d is not None and d <= TOLERANCE
            print(f"  serve (aarch64): POST /v1/infer/file-type {'gave' if same else 'differs from'} run's outcome for {args.files[0]}")
            if not same:
                print(f"    serve {json.dumps(got)[:300]}\n    run   {json.dumps(expected)[:300]}")
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(timeout=120)
            print(f"  serve (aarch64): SIGTERM → exit {code}")
            return int(not same) + int(code != 0)
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--native", required=True)
    p.add_argument("--aarch64", required=True)
    p.add_argument("--qemu-root", required=True, help="the aarch64 sysroot (Debian: /usr/aarch64-linux-gnu)")
    p.add_argument("--component", required=True)
    p.add_argument("--model", action="append", required=True)
    p.add_argument("--onnxruntime-lib", required=True)
    p.add_argument("--onnxruntime-lib-aarch64", required=True)
    p.add_argument("--tflite-component", help="a component whose model is TensorFlow Lite's")
    p.add_argument("--tflite-model", help="NAME=PATH.tflite")
    p.add_argument("--tensorflowlite-lib")
    p.add_argument("--tensorflowlite-lib-aarch64")
    p.add_argument("--tflite-input", action="append", default=[])
    p.add_argument("files", nargs="+")
    args = p.parse_args()
    arm = [*qemu(args), args.aarch64]
    bad = 0
    native_tract = outcomes([args.native], args, "tract", None)
    bad += compare("tract", native_tract, outcomes(arm, args, "tract", None))
    bad += compare(
        "onnxruntime",
        outcomes([args.native], args, "onnxruntime", args.onnxruntime_lib),
        outcomes(arm, args, "onnxruntime", args.onnxruntime_lib_aarch64),
    )
    if args.tflite_component:
        bad += compare(
            "tensorflowlite",
            tflite_outcomes([args.native], args, args.tensorflowlite_lib),
            tflite_outcomes(arm, args, args.tensorflowlite_lib_aarch64),
            tolerance=0.01,
        )
    bad += serve(args, native_tract[0])
    print(f"aarch64 smoke: {'passed' if bad == 0 else f'{bad} problems'}")
    return int(bad != 0)


if __name__ == "__main__":
    sys.exit(main())
