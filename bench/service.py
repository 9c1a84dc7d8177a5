#!/usr/bin/env python3
"""Benchmark `verge-device serve` (file-type) beside a plain Python Magika HTTP server, or beside itself.

Per repetition: start both (fresh state dir), measure start→ready and idle RSS, then for each
concurrency level run a warm-up and a closed-loop load (C threads, keep-alive HTTP/1.1, back to
back, --seconds) on one system then the other (the order alternates between repetitions, so drift
hits both), sampling RSS; then stop both. Appends JSON Lines to --rows and prints a summary to
stderr. Exits non-zero on any failure, error response included.

  python3 bench/service.py --rows /tmp/rows.jsonl [--reps 3 --seconds 5 | --quick]

With --baseline unbatched the baseline is the same daemon without --batch (what batching buys, in
the same run); --workload image-classify serves EfficientNet-Lite0 on photographs (that baseline only).
Python 3 stdlib only; the baseline (bench/magika_server.py) runs in $VERGE_CACHE/venv.
"""

import argparse
import atexit
import hashlib
import http.client
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LEVELS = (1, 2, 8, 32)
VERGE, MAGIKA_PY = "verge-device serve", "python magika http.server"


class Workload:
    """What the daemon serves: a component, its one model, the request bodies, and the label of
    an answer (to check that systems agree)."""

    def __init__(self, route, wasm, model_name, model, inputs, label):
        self.route, self.wasm, self.model_name, self.model = route, wasm, model_name, model
        self.inputs, self.label = inputs, label


def workloads(env, target):
    wasm_dir = Path(env("VERGE_WASM_DIR", target / "wasm32-wasip2/component"))
    models = Path(env("VERGE_MODELS_DIR", ROOT / "models/.cache"))
    return {
        # Real files of different kinds, cycled through: Rust, Markdown, TOML, wasm, an ELF head.
        "file-type": Workload(
            "file-type", wasm_dir / "file_type.wasm", "magika", models / "magika-standard-v3-3/model.onnx",
            lambda device, wasm: [ROOT / "host-greengrass/src/api.rs", ROOT / "README.md", ROOT / "Cargo.toml",
                                  ROOT / "models/manifest.toml", ROOT / "dev", wasm, device],
            lambda out: out["respond"]["body"]["label"] if "respond" in out else out["label"]),
        "image-classify": Workload(
            "image-classify", wasm_dir / "image_classify.wasm", "efficientnet-lite0",
            models / "efficientnet-lite0/model.onnx",
            lambda device, wasm: [models / "skimage-chelsea/chelsea.png", models / "skimage-coffee/coffee.png",
                                  models / "skimage-rocket/rocket.jpg"],
            lambda out: out["respond"]["body"]["top"][0]["label"]),
    }
READY_TIMEOUT_S = 60
children = []  # every process started, stopped at exit whatever happens


class Fail(Exception):
    pass


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


atexit.register(lambda: [stop(p) for p in children])
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so atexit runs


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_mb(pid, field):
    """VmRSS / VmHWM of a process, in MB (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None


class Server:
    """One system under test: how to start it, and where to send requests."""

    def __init__(self, name, argv_for, infer_path, ready_path, tmp):
        self.name, self.argv_for, self.tmp = name, argv_for, tmp
        self.infer_path, self.ready_path = infer_path, ready_path
        self.proc, self.starts = None, 0

    def start(self):
        """Starts the process and polls until ready; returns start→ready in ms."""
        self.starts += 1
        self.port = free_port()
        self.log = self.tmp / f"{self.name.split()[0]}-{self.port}-{self.starts}.log"
        argv = self.argv_for(self.port, self.tmp / f"state-{self.port}-{self.starts}")
        with open(self.log, "wb") as log:
            t0 = time.perf_counter()
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        children.append(self.proc)
        while time.perf_counter() - t0 < READY_TIMEOUT_S:
            if self.proc.poll() is not None:
                raise Fail(f"{self.name} exited ({self.proc.returncode}) before ready:\n{self.tail()}")
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                conn.request("GET", self.ready_path)
                if conn.getresponse().status == 200:
                    return (time.perf_counter() - t0) * 1000
            except (OSError, http.client.HTTPException):
                pass  # not listening yet
            finally:
                conn.close()
            time.sleep(0.005)
        raise Fail(f"{self.name} not ready after {READY_TIMEOUT_S} s:\n{self.tail()}")

    def alive(self):
        if self.proc.poll() is not None:
            raise Fail(f"{self.name} died ({self.proc.returncode}):\n{self.tail()}")

    def tail(self, n=15):
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def post(self, body):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("POST", self.infer_path, body, {"Content-Type": "application/octet-stream"})
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()


def load(server, bodies, conc, seconds):
    """Closed loop: `conc` threads, each on its own keep-alive connection, back to back.
    Returns (requests/s, sorted latencies in ms, error messages)."""
    lat, errors = [[] for _ in range(conc)], []
    headers = {"Content-Type": "application/octet-stream"}
    start = time.perf_counter()
    deadline = start + seconds

    def client(i):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        k = i  # threads start at different bodies
        while time.perf_counter() < deadline and len(errors) < 100:
            body = bodies[k % len(bodies)]
            k += 1
            t = time.perf_counter()
            try:
                conn.request("POST", server.infer_path, body, headers)
                r = conn.getresponse()
                data = r.read()
            except (OSError, http.client.HTTPException) as e:
                errors.append(f"{type(e).__name__}: {e}")
                conn.close()  # reconnects on the next request
                continue
            if r.status == 200:
                lat[i].append((time.perf_counter() - t) * 1000)
            else:
                errors.append(f"HTTP {r.status}: {data[:300]!r}")
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    if any(t.is_alive() for t in threads):
        errors.append("a client thread did not finish")
    done = sorted(x for per in lat for x in per)
    return len(done) / (time.perf_counter() - start), done, errors


def pct(sorted_ms, q):
    """Nearest-rank percentile."""
    return sorted_ms[max(0, math.ceil(q * len(sorted_ms)) - 1)] if sorted_ms else float("nan")


class RssSampler(threading.Thread):
    """Largest VmRSS seen while running, sampled every 20 ms."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0.0, threading.Event()

    def run(self):
        while not self.done.wait(0.02):
            self.peak = max(self.peak, proc_mb(self.pid, "VmRSS") or 0)


def verge_config(args, work, wasm, model, port, state, batch):
    q = json.dumps  # a JSON string is a valid TOML basic string
    lines = [f"state_dir = {q(str(state))}", "[api]", f'listen = "127.0.0.1:{port}"',
             f"[models.{work.model_name}]", f"path = {q(str(model))}", f'sha256 = "{sha256(model)}"']
    if args.backend:
        lines.append(f"backend = {q(args.backend)}")
    if batch:
        max_rows, wait_us = batch.split(":")
        lines.append(f"batch = {{ max = {int(max_rows)}, wait_us = {int(wait_us)} }}")
    lines += [f"[components.{work.route}]", f"path = {q(str(wasm))}", f'sha256 = "{sha256(wasm)}"',
              f"[routes.{work.route}]", f'component = "{work.route}"']
    if args.onnxruntime_lib:
        lines += ["[onnxruntime]", f"library = {q(args.onnxruntime_lib)}"]
    return "\n".join(lines) + "\n"


def main():
    env = os.environ.get
    cache = Path(env("VERGE_CACHE", Path.home() / ".cache/verge"))
    target = Path(env("CARGO_TARGET_DIR", cache / "target"))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", required=True, help="JSON Lines file to append to")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5, help="per load level and repetition")
    p.add_argument("--quick", action="store_true", help="smoke test: --reps 1 --seconds 1")
    p.add_argument("--device", default=target / "release/verge-device")
    works = workloads(env, target)
    p.add_argument("--workload", choices=works, default="file-type")
    p.add_argument("--wasm", help="the component (default: the workload's)")
    p.add_argument("--model", help="its model (default: the workload's)")
    p.add_argument("--baseline", choices=("magika-python", "unbatched"), default="magika-python",
                   help="python magika (file-type only), or this daemon without --batch")
    p.add_argument("--levels", default=",".join(map(str, LEVELS)), help="concurrency levels, e.g. 1,8")
    p.add_argument("--python", default=cache / "venv/bin/python", help="python with magika (baseline)")
    p.add_argument("--backend", help='e.g. "onnxruntime": [models.magika] backend')
    p.add_argument("--onnxruntime-lib", help="libonnxruntime.so: [onnxruntime] library")
    p.add_argument("--batch", metavar="MAX:WAIT_US", help="[models.magika] batch = { max, wait_us }")
    args = p.parse_args()
    if args.quick:
        args.reps, args.seconds = 1, 1.0
    if args.backend == "onnxruntime" and not args.onnxruntime_lib:
        p.error("--backend onnxruntime needs --onnxruntime-lib PATH")
    work = works[args.workload]
    if args.baseline == "unbatched" and not args.batch:
        p.error("--baseline unbatched compares against --batch: give it")
    if args.baseline == "magika-python" and args.workload != "file-type":
        p.error("the Python Magika server answers file-type only: --baseline unbatched")
    levels = [int(c) for c in args.levels.split(",")]
    # absolute(), not resolve(): the venv's python is a symlink that must stay one
    device, wasm, model, python = (Path(x).absolute() for x in (
        args.device, args.wasm or work.wasm, args.model or work.model, args.python))
    server_py = ROOT / "bench/magika_server.py"
    inputs = work.inputs(device, wasm)
    needed = [device, wasm, model] + ([python, server_py] if args.baseline == "magika-python" else [])
    for f in needed + inputs:
        if not f.is_file():
            raise Fail(f"missing: {f} (build with ./dev build; models: python3 models/fetch.py; "
                       "or pass --device/--wasm/--model/--python)")
    bodies = [f.read_bytes()[: 64 << 10] if f == device else f.read_bytes() for f in inputs]
    warmup = min(1.0, max(0.3, args.seconds / 5))

    tmp = Path(tempfile.mkdtemp(prefix="verge-service-bench-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    def verge_name(batch):
        return VERGE + "".join(f" ({x})" for x in (args.backend, batch and f"batch {batch}") if x)

    def verge_argv(batch):
        def argv(port, state):
            cfg = tmp / f"verge-{port}.toml"
            cfg.write_text(verge_config(args, work, wasm, model, port, state, batch))
            return [str(device), "serve", "--config", str(cfg)]
        return argv

    infer = f"/v1/infer/{work.route}"
    systems = [Server(verge_name(args.batch), verge_argv(args.batch), infer, "/readyz", tmp)]
    if args.baseline == "unbatched":
        systems.append(Server(verge_name(None), verge_argv(None), infer, "/readyz", tmp))
    else:
        systems.append(Server(MAGIKA_PY, lambda port, _: [str(python), str(server_py), "--port", str(port)],
                              "/", "/", tmp))
    # A workload label of its own for a comparison with itself, so the report's groups keep one baseline.
    label = work.route + (", batching" if args.baseline == "unbatched" else "")
    samples = {}  # (system, metric) -> [one figure per repetition]

    def add(srv, metric, value):
        samples.setdefault((srv.name, metric), []).append(round(value, 3))

    for rep in range(args.reps):
        order = systems if rep % 2 == 0 else systems[::-1]
        try:
            for srv in order:
                add(srv, "start→ready", srv.start())
            time.sleep(0.5)  # let start-up work settle before the idle reading
            hwm_reset = {}
            for srv in order:
                add(srv, "RSS idle", proc_mb(srv.proc.pid, "VmRSS"))
                try:  # "5" resets VmHWM, so the end reading is the peak under load only
                    Path(f"/proc/{srv.proc.pid}/clear_refs").write_text("5")
                    hwm_reset[srv.name] = True
                except OSError:
                    hwm_reset[srv.name] = False
            if rep == 0:
                check_labels(systems, inputs, bodies, work.label)
            peaks = {srv.name: 0.0 for srv in order}
            for c in levels:
                for srv in order:
                    for phase, secs in (("warm-up", warmup), ("load", args.seconds)):
                        sampler = RssSampler(srv.proc.pid)
                        sampler.start()
                        rate, ms, errors = load(srv, bodies, c, secs)
                        sampler.done.set()
                        sampler.join()
                        srv.alive()
                        if errors:
                            raise Fail(f"{srv.name}, c={c} {phase}: {len(errors)} failed requests, "
                                       f"first: {errors[0]}\n{srv.tail()}")
                    peaks[srv.name] = max(peaks[srv.name], sampler.peak)
                    add(srv, f"req/s c={c}", rate)
                    add(srv, f"p50 c={c}", pct(ms, 0.50))
                    add(srv, f"p99 c={c}", pct(ms, 0.99))
            for srv in order:
                hwm = proc_mb(srv.proc.pid, "VmHWM") if hwm_reset[srv.name] else 0
                add(srv, "RSS peak under load", max(peaks[srv.name], hwm or 0))
        finally:
            for srv in order:
                if srv.proc:
                    stop(srv.proc)
        for srv in order:  # the daemon logs JSON lines: show anything above info
            for line in srv.log.read_text(errors="replace").splitlines():
                if '"level":"warn' in line or '"level":"error' in line:
                    print(f"  {srv.name} log: {line}", file=sys.stderr)
        print(f"repetition {rep + 1}/{args.reps} done", file=sys.stderr)

    write_rows(args.rows, samples, systems, label)


def check_labels(systems, inputs, bodies, label_of):
    """One request per body to each system; their labels should agree (reported, not fatal)."""
    agree = 0
    for f, body in zip(inputs, bodies):
        labels = []
        for srv in systems:
            status, data = srv.post(body)
            if status != 200:
                raise Fail(f"{srv.name}: HTTP {status} for {f.name}: {data[:300]!r}")
            out = json.loads(data)
            labels.append(label_of(out))
        agree += len(set(labels)) == 1
        if len(set(labels)) > 1:
            print(f"  note: labels differ for {f.name}: {labels}", file=sys.stderr)
    print(f"labels agree on {agree}/{len(bodies)} bodies", file=sys.stderr)


def write_rows(path, samples, systems, workload):
    unit = {"start→ready": "ms", "req/s": "req/s", "p50": "ms", "p99": "ms", "RSS": "MB"}
    better = {"req/s": "higher"}
    metrics = list(dict.fromkeys(m for _, m in samples))
    with open(path, "a") as out:
        for srv in systems:
            for m in metrics:
                kind = m.split()[0]
                out.write(json.dumps({
                    "section": "device-service", "workload": workload, "system": srv.name,
                    "metric": m, "unit": unit[kind], "samples": samples[(srv.name, m)],
                    "baseline": srv is systems[1], "better": better.get(kind, "lower"),
                }, ensure_ascii=False) + "\n")
    a, b = systems[0].name, systems[1].name
    print(f"\n{workload}: {a} against {b}", file=sys.stderr)
    print(f"{'metric (median)':<22}{'this':>27} {'baseline':>27} {'ratio':>7}", file=sys.stderr)
    for m in metrics:
        va, vb = statistics.median(samples[(a, m)]), statistics.median(samples[(b, m)])
        print(f"{m:<22}{va:>22.1f} {unit[m.split()[0]]:<5}{vb:>22.1f} {unit[m.split()[0]]:<5}"
              f"{va / vb if vb else float('nan'):>6.2f}x", file=sys.stderr)
    print(f"rows appended to {path}", file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except Fail as e:
        print(f"service bench failed: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
