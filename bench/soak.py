#!/usr/bin/env python3
"""Soak `verge-device serve`: mixed requests while the broker and the daemon are restarted.

For --seconds (600 by default) a few client threads send a modest, paced mix of requests to the
daemon's API: file-type and fraud-score on routes whose outcomes go to the cloud, the same
components and the probe on local routes, and malformed requests that must get a 4xx. Meanwhile
the MQTT broker (Debian's mosquitto on a loopback port) is stopped every --broker-every seconds
and started again --broker-down seconds later on the same port with the same persistence file,
and the daemon is killed with SIGKILL twice (a third and two thirds of the way through, once while
the broker is down and once while it is up) and started again at once with the same state_dir.

An MQTT 3.1.1 subscriber (below, stdlib only) records every message the broker delivers. It cannot
lose one itself: it connects with clean_session=0 and subscribes at QoS 1 before the daemon
starts, so the broker queues every message for it while it is disconnected (mosquitto has
`persistence true`, and is stopped with SIGTERM, which makes it write its sessions and queues to
the persistence file, so they outlive the restart); it records a message before it sends the
PUBACK, so a message whose PUBACK was lost comes again (a duplicate with the same id), never not
at all. It runs in this process, so it is up from the first message to the last.

At the end the broker is up, the script waits (bounded) for the outbox to drain and for the
subscriber to hold every acknowledged id, then checks:
  * lost = acknowledged ids (HTTP 200 with an outbox id) not delivered: must be 0;
  * every duplicate repeats an id already delivered, with the same payload;
  * every delivered id was acknowledged, except at most one per request in flight when the daemon
    was killed (committed, but its answer never came);
  * each delivered message carries the outcome its HTTP answer had;
  * the last daemon process's RSS at the end is within --rss-growth (10 %) of its RSS after its
    warm-up (kill -9 resets RSS, so both readings are from the same process); each reading is
    the median VmRSS over one broker cycle (30 s), since RSS rises and falls with the restarts.
Exits non-zero if any check fails. Prints a summary (and the RSS curve) to stderr and appends
rows to --rows.

  python3 bench/soak.py --rows /tmp/rows.jsonl [--seconds 600]
"""

import argparse
import hashlib
import http.client
import json
import os
import random
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in bench/ from the import below
from service import Fail, children, free_port, pct, proc_mb, sha256, stop  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
THING = "soak"
CLOUD_ROUTES = ("file-type", "fraud-score")
TOPICS = [f"verge/{THING}/{r}" for r in CLOUD_ROUTES]
READY_TIMEOUT_S = 120
MAX_BODY = 1 << 20  # the daemon's max_body_bytes
TOO_LARGE = MAX_BODY + (100 << 10)


def log(msg):
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def digest(value):
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------ the broker

def mosquitto_binary():
    for p in (os.environ.get("VERGE_MOSQUITTO"), "/usr/sbin/mosquitto", shutil.which("mosquitto")):
        if p and Path(p).is_file():
            return p
    raise Fail("mosquitto not found (Debian package mosquitto; ./dev installs it)")


class Broker:
    """mosquitto on a loopback port with a persistence file, stopped and started again."""

    def __init__(self, tmp):
        self.port, self.dir = free_port(), tmp / "mosquitto"
        self.dir.mkdir()
        self.conf, self.proc, self.starts, self.stops = self.dir / "mosquitto.conf", None, 0, 0
        user = "user root\n" if os.geteuid() == 0 else ""  # as root it would switch to `mosquitto`
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {self.dir}/\n"
            # queue everything for the subscriber while it is away: no limit to hit
            "max_queued_messages 0\nmax_queued_bytes 0\n"
            f"log_dest file {self.dir}/mosquitto.log\n{user}")

    def start(self):
        self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(self.conf)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        children.append(self.proc)
        self.starts += 1
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Fail(f"mosquitto exited ({self.proc.returncode}) at start:\n{self.tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.02)
        raise Fail("mosquitto not listening after 20 s")

    def stop(self):
        """SIGTERM: mosquitto writes its sessions and queued messages to the persistence file."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            raise Fail("mosquitto did not stop within 20 s of SIGTERM")
        self.proc, self.stops = None, self.stops + 1

    def up(self):
        return self.proc is not None

    def alive(self):
        if self.proc is not None and self.proc.poll() is not None:
            raise Fail(f"mosquitto died ({self.proc.returncode}):\n{self.tail()}")

    def tail(self, n=15):
        p = self.dir / "mosquitto.log"
        return "\n".join(p.read_text(errors="replace").splitlines()[-n:]) if p.exists() else ""


# -------------------------------------------------------- an MQTT subscriber

def mqtt_str(s):
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def mqtt_packet(first, body):
    n, length = len(body), bytearray()
    while True:
        byte, n = n % 128, n // 128
        length.append(byte | (0x80 if n else 0))
        if not n:
            return bytes([first]) + bytes(length) + body


class Subscriber(threading.Thread):
    """MQTT 3.1.1, clean_session=0, QoS 1 on TOPICS; reconnects until stopped.
    `received` holds (time, topic, id, payload digest) per PUBLISH, duplicates included."""

    KEEP_ALIVE = 10

    def __init__(self, port, hard_stop, topics=TOPICS, client_id="verge-soak-subscriber"):
        super().__init__(daemon=True)
        self.topics, self.client_id = topics, client_id
        self.hard_stop = hard_stop  # a bound whatever happens (monotonic time)
        self.port, self.received, self.lock = port, [], threading.Lock()
        self.subscribed, self.done = threading.Event(), threading.Event()
        self.connects, self.unreadable, self.errors = 0, 0, []

    def run(self):
        while not self.done.is_set() and time.monotonic() < self.hard_stop:
            try:
                self.session()
            except (OSError, ValueError) as e:
                if len(self.errors) < 1000:
                    self.errors.append(f"{type(e).__name__}: {e}")
            self.done.wait(0.1)  # the broker is away: try again shortly

    def session(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            # CONNECT: protocol MQTT level 4, flags 0 (clean_session=0), keep-alive, client id
            s.sendall(mqtt_packet(0x10, mqtt_str("MQTT") + bytes([4, 0]) + struct.pack("!H", self.KEEP_ALIVE)
                                  + mqtt_str(self.client_id)))
            buf, last_sent = bytearray(), time.monotonic()
            s.settimeout(None)
            while not self.done.is_set() and time.monotonic() < self.hard_stop:
                if time.monotonic() - last_sent > self.KEEP_ALIVE / 2:
                    s.sendall(b"\xc0\x00")  # PINGREQ
                    last_sent = time.monotonic()
                if select.select([s], [], [], 0.5)[0]:
                    data = s.recv(1 << 16)
                    if not data:
                        raise OSError("broker closed the connection")
                    buf += data
                while (packet := self.take(buf)) is not None:
                    reply = self.handle(*packet)
                    if reply:
                        s.sendall(reply)
                        last_sent = time.monotonic()

    @staticmethod
    def take(buf):
        """One whole packet (first byte, body) off the front of buf, or None."""
        n, mult, i = 0, 1, 1
        while True:
            if i >= len(buf):
                return None
            n += (buf[i] & 0x7F) * mult
            mult *= 128
            i += 1
            if not buf[i - 1] & 0x80:
                break
            if i > 4:
                raise ValueError("bad remaining length")
        if len(buf) < i + n:
            return None
        first, body = buf[0], bytes(buf[i:i + n])
        del buf[:i + n]
        return first, body

    def handle(self, first, body):
        kind = first >> 4
        if kind == 2:  # CONNACK
            if body[1] != 0:
                raise OSError(f"broker refused the connection: code {body[1]}")
            self.connects += 1
            # SUBSCRIBE at every connect (a no-op for a session that has it)
            filters = b"".join(mqtt_str(t) + b"\x01" for t in self.topics)
            return mqtt_packet(0x82, struct.pack("!H", 1) + filters)
        if kind == 9:  # SUBACK
            if any(q != 1 for q in body[2:]):
                raise OSError(f"subscription not granted at QoS 1: {list(body[2:])}")
            self.subscribed.set()
            return None
        if kind == 3:  # PUBLISH
            qos = (first >> 1) & 3
            tlen = struct.unpack("!H", body[:2])[0]
            topic, rest = body[2:2 + tlen].decode(), body[2 + tlen:]
            pid, payload = (struct.unpack("!H", rest[:2])[0], rest[2:]) if qos else (None, rest)
            try:
                msg = json.loads(payload)
                mid, dig = msg["id"], digest(msg)
            except (ValueError, KeyError, TypeError):
                mid, dig = None, None
            with self.lock:  # recorded before the PUBACK goes
                if mid is None:
                    self.unreadable += 1
                else:
                    self.received.append((time.monotonic(), topic, mid, dig, msg))
            return b"\x40\x02" + struct.pack("!H", pid) if qos == 1 else None
        return None  # PINGRESP and the rest

    def snapshot(self):
        with self.lock:
            return list(self.received)


# ------------------------------------------------------------------ the daemon

WASM = ("file_type.wasm", "fraud_score.wasm", "probe.wasm")
MODELS = ("magika-standard-v3-3/model.onnx", "fraud-score/model.onnx")


def snapshot(a, into):
    """Copies the binary, components and models the soak runs: a build elsewhere in the tree
    during the ten minutes must not change what a restart starts."""
    files = [(a.device, into / "verge-device")] + [(a.wasm_dir / w, into / "wasm" / w) for w in WASM]
    files += [(a.models_dir / m, into / "models" / m) for m in MODELS]
    for src, dst in files:
        if not src.is_file():
            raise Fail(f"missing: {src} (build with ./dev build; models: python3 models/fetch.py)")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    a.device, a.wasm_dir, a.models_dir = into / "verge-device", into / "wasm", into / "models"


def daemon_config(a, port, state, broker_port):
    q = json.dumps  # a JSON string is a valid TOML basic string
    comp = dict(zip(("file-type", "fraud-score", "probe"), (a.wasm_dir / w for w in WASM)))
    models = dict(zip(("magika", "fraud-score"), (a.models_dir / m for m in MODELS)))
    lines = [f"thing_name = {q(THING)}", f"state_dir = {q(str(state))}", "",
             "[api]", f'listen = "127.0.0.1:{port}"', f"max_body_bytes = {MAX_BODY}", "workers = 2", ""]
    for name, path in models.items():
        lines += [f"[models.{name}]", f"path = {q(str(path))}", f'sha256 = "{sha256(path)}"', ""]
    for name, path in comp.items():
        lines += [f"[components.{name}]", f"path = {q(str(path))}", f'sha256 = "{sha256(path)}"', ""]
    lines += [
        # to the cloud
        "[routes.file-type]", 'component = "file-type"', "deadline_ms = 5000", "memory_mb = 256",
        'config = { mode = "respond" }', 'cloud = { topic = "verge/{thing}/file-type" }', "",
        "[routes.fraud-score]", 'component = "fraud-score"', "deadline_ms = 2000", "memory_mb = 128",
        'config = { low = "0.2", high = "0.4" }', 'cloud = { topic = "verge/{thing}/fraud-score" }', "",
        # local only
        "[routes.sniff]", 'component = "file-type"', "deadline_ms = 5000", 'config = { mode = "respond" }', "",
        "[routes.probe]", 'component = "probe"', "deadline_ms = 1000", "memory_mb = 64", "",
        "[outbox]", "max_bytes = 67108864", 'policy = "drop-oldest"', "",
        "[mqtt]", 'host = "127.0.0.1"', f"port = {broker_port}", 'client_id = "verge-soak-daemon"',
        "keep_alive_s = 5", "reconnect_max_s = 2", "",
        "[health]", "interval_s = 10", 'topic = "verge/{thing}/health"', ""]
    return "\n".join(lines)


class Daemon:
    """One `verge-device serve` at a time, on a fixed port and state_dir across restarts."""

    def __init__(self, a, tmp, broker_port):
        self.port, self.tmp, self.device = free_port(), tmp, a.device
        self.config = tmp / "verge.toml"
        self.config.write_text(daemon_config(a, self.port, tmp / "state", broker_port))
        self.proc, self.starts, self.kills, self.started_at = None, 0, 0, None

    def start(self):
        self.starts += 1
        self.log = self.tmp / f"daemon-{self.starts}.log"
        t0 = time.monotonic()
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([str(self.device), "serve", "--config", str(self.config)],
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        children.append(self.proc)
        while time.monotonic() - t0 < READY_TIMEOUT_S:
            self.alive()
            try:
                if get(self.port, "/readyz")[0] == 200:
                    self.started_at = time.monotonic()
                    return self.started_at - t0
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.02)
        raise Fail(f"the daemon was not ready after {READY_TIMEOUT_S} s:\n{self.tail()}")

    def kill9(self):
        self.proc.kill()
        self.proc.wait(10)
        self.kills += 1

    def alive(self):
        if self.proc.poll() is not None:
            raise Fail(f"the daemon exited ({self.proc.returncode}) unasked:\n{self.tail()}")

    def metrics(self):
        status, text = get(self.port, "/metrics")
        if status != 200:
            raise Fail(f"/metrics answered {status}")
        out = {}
        for line in text.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
        return out

    def tail(self, n=20):
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def log_lines(self, *levels):
        for i in range(1, self.starts + 1):
            for line in (self.tmp / f"daemon-{i}.log").read_text(errors="replace").splitlines():
                if any(f'"level":"{lv}' in line for lv in levels):
                    yield i, line


def get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


# ------------------------------------------------------------------ the load

def request_mix(a):
    """(weight, kind, route, content type, body, expect) — expect "ack" (200 with an outbox id),
    "ok" (200) or "4xx"."""
    files = [ROOT / "host-greengrass/src/api.rs", ROOT / "README.md", ROOT / "Cargo.toml",
             ROOT / "models/manifest.toml", ROOT / "dev", a.wasm_dir / "probe.wasm"]
    files = [f.read_bytes()[:256 << 10] for f in files if f.is_file()]
    txs = [p.read_bytes() for p in sorted((ROOT / "examples/shop/inputs").glob("tx-*.json"))]
    if not files or not txs:
        raise Fail("no inputs (examples/shop/inputs/tx-*.json, repository files)")
    oct_, js = "application/octet-stream", "application/json"
    mix = [(20, "file-type → cloud", "file-type", oct_, files, "ack"),
           (20, "fraud-score → cloud", "fraud-score", js, txs, "ack"),
           (10, "file-type local", "sniff", oct_, files, "ok"),
           (8, "probe echo", "probe", "text/plain", [b"echo"], "ok"),
           (4, "probe count (state)", "probe", "text/plain", [b"count"], "ok"),
           (3, "malformed JSON", "fraud-score", js, [b'{"amount": 9', b"not json"], "4xx"),
           (3, "features missing", "fraud-score", js, [b'{"amount": 12}', b"[1, 2]"], "4xx"),
           (2, "unknown route", "no-such-route", oct_, [b"x"], "4xx"),
           (2, "body too large", "sniff", oct_, [None], "4xx"),
           (2, "component refuses", "probe", "text/plain", [b"invalid"], "4xx")]
    return mix


class Load:
    """`threads` clients, each paced to rate/threads requests per second, each request drawn
    from the mix; every answer recorded."""

    def __init__(self, port, mix, threads, rate, seed, hard_stop):
        self.port, self.mix, self.threads, self.rate, self.seed = port, mix, threads, rate, seed
        self.hard_stop = hard_stop  # a bound whatever happens (monotonic time)
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.acked = {}  # outbox id -> (route, digest of the outcome)
        self.counts = {}  # (kind, result) -> n
        self.lat_ms, self.unexpected, self.no_answer_at = [], [], []

    def count(self, kind, result):
        with self.lock:
            self.counts[(kind, result)] = self.counts.get((kind, result), 0) + 1

    def client(self, i):
        rng = random.Random(self.seed + i)
        weights = [m[0] for m in self.mix]
        period = self.threads / self.rate
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        due = time.monotonic() + rng.random() * period
        while not self.stop.is_set() and time.monotonic() < self.hard_stop:
            wait = due - time.monotonic()
            if wait > 0 and self.stop.wait(min(wait, period)):
                break
            due = max(due + period, time.monotonic())  # behind (daemon down): no catch-up burst
            _, kind, route, ctype, bodies, expect = rng.choices(self.mix, weights)[0]
            body = rng.choice(bodies)
            t = time.monotonic()
            try:
                if body is None:  # a declared length over the limit, and no body: 413 at once
                    conn.putrequest("POST", f"/v1/infer/{route}")
                    conn.putheader("Content-Type", ctype)
                    conn.putheader("Content-Length", str(TOO_LARGE))
                    conn.endheaders()
                else:
                    conn.request("POST", f"/v1/infer/{route}", body, {"Content-Type": ctype})
                r = conn.getresponse()
                data = r.read()
                if body is None or r.status == 404:
                    # The body it announced never came; or the daemon answered before reading the
                    # body (unknown route), after which it may close the connection without a
                    # `Connection: close`, and the next request on it would fail unsent.
                    conn.close()
            except (OSError, http.client.HTTPException) as e:
                conn.close()  # reconnects on the next request
                result = "refused" if isinstance(e, ConnectionRefusedError) else "no answer"
                self.count(kind, result)
                if result == "no answer":
                    with self.lock:
                        self.no_answer_at.append((t, time.monotonic(), kind, f"{type(e).__name__}: {e}"))
                continue
            ms = (time.monotonic() - t) * 1000
            result = self.judge(kind, expect, r.status, data)
            self.count(kind, result)
            if result in ("acknowledged", "ok", "4xx as expected"):
                with self.lock:
                    self.lat_ms.append(ms)
            if r.getheader("connection", "").lower() == "close":
                conn.close()
        conn.close()

    def judge(self, kind, expect, status, data):
        if status == 503:
            return "503 (starting or stopping)"
        try:
            out = json.loads(data)
        except ValueError:
            out = None
        if expect == "4xx":
            if 400 <= status < 500:
                return "4xx as expected"
        elif status == 200 and isinstance(out, dict):
            if expect == "ok":
                return "ok"
            box = out.pop("outbox", None)
            if isinstance(box, dict) and "id" in box:
                with self.lock:
                    self.acked[box["id"]] = (kind, digest(out))
                return "acknowledged"
        with self.lock:
            if len(self.unexpected) < 50:
                self.unexpected.append(f"{kind}: HTTP {status} {data[:200]!r}")
        return f"unexpected HTTP {status}"

    def start(self):
        self.workers = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(self.threads)]
        for w in self.workers:
            w.start()

    def finish(self):
        self.stop.set()
        for w in self.workers:
            w.join(45)
        if any(w.is_alive() for w in self.workers):
            raise Fail("a client thread did not finish")


class RssSampler(threading.Thread):
    """VmRSS and RssAnon of the current daemon process every `every` seconds:
    (t, daemon start no., VmRSS MB, RssAnon MB). VmRSS is what the check is on; RssAnon (heap and
    other private memory, without the binary's file-backed pages, which the kernel may drop and
    read again under memory pressure) tells a leak from page-cache effects."""

    def __init__(self, daemon, every, t0):
        super().__init__(daemon=True)
        self.d, self.every, self.t0, self.samples, self.done = daemon, every, t0, [], threading.Event()

    def run(self):
        while not self.done.wait(self.every):
            proc = self.d.proc
            mb = proc_mb(proc.pid, "VmRSS") if proc and proc.poll() is None else None
            anon = proc_mb(proc.pid, "RssAnon") if mb else None
            if mb and anon:
                self.samples.append((time.monotonic() - self.t0, self.d.starts, round(mb, 1), round(anon, 1)))


# ------------------------------------------------------------------ the soak

def schedule(seconds, every, down):
    """(time, action) for the run: broker stops/starts, and two daemon kills (one while the
    broker is down, one while it is up), all within the run."""
    events = []
    t = every
    while t + down < seconds - 5:
        events += [(t, "broker stop"), (t + down, "broker start")]
        t += every
    stops = [t for t, e in events if e == "broker stop"]
    near = lambda x: min(stops, key=lambda s: abs(s - x)) if stops else x
    kill_down = near(seconds / 3) + min(2.0, down / 2)  # the outbox holds what waits for the broker
    kill_up = near(2 * seconds / 3) + down + (every - down) / 2  # messages in flight
    if kill_up >= seconds - 5:
        kill_up = seconds * 2 / 3
    events += [(kill_down, "daemon kill"), (kill_up, "daemon kill")]
    return sorted(events)


def main():
    env = os.environ.get
    cache = Path(env("VERGE_CACHE", Path.home() / ".cache/verge"))
    target = Path(env("CARGO_TARGET_DIR", cache / "target"))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", required=True, help="JSON Lines file to append to")
    p.add_argument("--seconds", type=float, default=600, help="length of the mixed load")
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--rate", type=float, default=16, help="requests per second over all threads")
    p.add_argument("--broker-every", type=float, default=30, help="seconds between broker stops")
    p.add_argument("--broker-down", type=float, default=5, help="seconds the broker stays stopped")
    p.add_argument("--warmup", type=float, default=60, help="seconds of a daemon's life before its RSS baseline")
    p.add_argument("--rss-every", type=float, default=2)
    p.add_argument("--rss-growth", type=float, default=10, help="allowed %% RSS growth after warm-up")
    p.add_argument("--drain-timeout", type=float, default=120)
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--keep", action="store_true", help="keep the scratch folder (logs, state) and print it")
    p.add_argument("--device", type=Path, default=target / "release/verge-device")
    p.add_argument("--wasm-dir", type=Path, default=Path(env("VERGE_WASM_DIR", target / "wasm32-wasip2/component")))
    p.add_argument("--models-dir", type=Path, default=Path(env("VERGE_MODELS_DIR", ROOT / "models/.cache")))
    a = p.parse_args()
    a.device, a.wasm_dir, a.models_dir = (x.absolute() for x in (a.device, a.wasm_dir, a.models_dir))

    tmp = Path(tempfile.mkdtemp(prefix="verge-soak-"))
    broker, sub, load, sampler, daemon = None, None, None, None, None
    try:
        snapshot(a, tmp / "artifacts")
        broker = Broker(tmp)
        broker.start()
        hard_stop = time.monotonic() + a.seconds + 2 * a.drain_timeout + 300
        sub = Subscriber(broker.port, hard_stop)
        sub.start()
        if not sub.subscribed.wait(20):
            raise Fail(f"the subscriber got no SUBACK in 20 s: {sub.errors[-3:]}")
        daemon = Daemon(a, tmp, broker.port)
        ready_s = daemon.start()
        log(f"broker :{broker.port}, daemon :{daemon.port} ready in {ready_s:.1f} s; "
            f"{a.seconds:.0f} s of load at {a.rate:g} req/s from {a.threads} threads")
        t0 = time.monotonic()
        sampler = RssSampler(daemon, a.rss_every, t0)
        sampler.start()
        load = Load(daemon.port, request_mix(a), a.threads, a.rate, a.seed, hard_stop)
        load.start()
        kills, restarts_s = [], []
        for at, action in schedule(a.seconds, a.broker_every, a.broker_down):
            while (now := time.monotonic() - t0) < at:  # bounded: `at` is within the run
                daemon.alive()
                broker.alive()
                time.sleep(min(0.2, at - now))
            if action == "broker stop":
                broker.stop()
            elif action == "broker start":
                broker.start()
            else:
                log(f"kill -9 the daemon at {at:.0f} s (broker {'up' if broker.up() else 'down'})")
                killed = time.monotonic()
                daemon.kill9()
                restarts_s.append(daemon.start())
                kills.append((killed, time.monotonic(), "broker up" if broker.up() else "broker down"))
                log(f"  restarted, ready in {restarts_s[-1]:.1f} s")
            if broker.stops % 5 == 0 and action == "broker start":
                log(f"{at:.0f} s: broker restarts {broker.stops}, acknowledged {len(load.acked)}, "
                    f"deliveries {len(sub.snapshot())}")
        while time.monotonic() - t0 < a.seconds:
            daemon.alive()
            time.sleep(0.2)
        load.finish()
        end_t = time.monotonic() - t0
        if not broker.up():
            broker.start()

        # Drain: the outbox empty, then every acknowledged id at the subscriber (both bounded).
        drain_start = time.monotonic()
        depth = None
        while time.monotonic() - drain_start < a.drain_timeout:
            daemon.alive()
            depth = daemon.metrics().get("verge_outbox_depth_messages")
            if depth == 0:
                break
            time.sleep(0.25)
        acked = dict(load.acked)
        while time.monotonic() - drain_start < a.drain_timeout:
            if set(acked) <= {r[2] for r in sub.snapshot()}:
                break
            time.sleep(0.25)
        drain_s = time.monotonic() - drain_start
        time.sleep(1)  # stragglers (duplicates) still on their way
        metrics = daemon.metrics()
        sampler.done.set()
        sampler.join(5)
        daemon.proc.send_signal(signal.SIGTERM)
        try:
            code = daemon.proc.wait(30)
        except subprocess.TimeoutExpired:
            raise Fail("the daemon did not stop within 30 s of SIGTERM")
        received = sub.snapshot()
        sub.done.set()
        sub.join(5)

        # The checks.
        first, dups, dup_mismatch, wrong_route, wrong_outcome = {}, 0, [], [], []
        for _, topic, mid, dig, msg in received:
            if mid in first:
                dups += 1
                if first[mid][1] != dig:
                    dup_mismatch.append(mid)
                continue
            first[mid] = (topic, dig)
            if mid in acked:
                route = msg.get("route")
                if topic != f"verge/{THING}/{route}" or not acked[mid][0].startswith(route):
                    wrong_route.append(mid)
                if digest(msg.get("outcome")) != acked[mid][1]:
                    wrong_outcome.append(mid)
        delivered = set(first)
        lost = sorted(set(acked) - delivered)
        unacked = sorted(delivered - set(acked))
        no_answer = sum(n for (_, r), n in load.counts.items() if r == "no answer")
        # A request fails at a kill if it was in flight (its answer never comes), or if it was sent
        # on a connection the kill broke: the thread's next request once the daemon is back.
        slack = 2 + a.threads / a.rate
        at_kill = lambda t, end: any(t <= k1 and end >= k0 or k0 <= t <= k1 + slack for k0, k1, _ in kills)
        stray = [(round(t - t0, 2), kind, e) for t, end, kind, e in load.no_answer_at if not at_kill(t, end)]
        sent = sum(load.counts.values())
        cloud_sent = sum(n for (k, _), n in load.counts.items() if "cloud" in k)

        last = daemon.starts
        life = [(t, mb, anon) for t, s, mb, anon in sampler.samples if s == last]
        born = life[0][0] if life else 0
        warm = min(a.warmup, max(5.0, (end_t - born) / 3))
        # Medians over one broker cycle (RSS rises and falls with the reconnections): just after
        # the warm-up, and at the end of the load.
        span = max(10.0, min(a.broker_every, (end_t - born - warm) / 2))
        base = [x for x in life if born + warm <= x[0] < born + warm + span]
        tail = [x for x in life if end_t - span <= x[0] <= end_t]
        med = lambda xs, i: statistics.median(x[i] for x in xs) if xs else float("nan")
        rss_base, rss_end, anon_base, anon_end = med(base, 1), med(tail, 1), med(base, 2), med(tail, 2)
        growth = (rss_end / rss_base - 1) * 100 if base and tail else float("nan")
        anon_growth = (anon_end / anon_base - 1) * 100 if base and tail else float("nan")

        failures = []
        if lost:
            failures.append(f"{len(lost)} acknowledged messages never reached the broker: {lost[:10]}")
        if dup_mismatch:
            failures.append(f"{len(dup_mismatch)} duplicates differ from the first delivery: {dup_mismatch[:5]}")
        if len(unacked) > no_answer:
            failures.append(f"{len(unacked)} delivered ids were never acknowledged, more than the "
                            f"{no_answer} requests left unanswered by a kill: {unacked[:5]}")
        if wrong_route or wrong_outcome:
            failures.append(f"delivered messages unlike their answers: route {wrong_route[:5]}, "
                            f"outcome {wrong_outcome[:5]}")
        if depth != 0:
            failures.append(f"the outbox did not drain in {a.drain_timeout:.0f} s (depth {depth})")
        if sub.unreadable:
            failures.append(f"{sub.unreadable} delivered messages without a readable id")
        if metrics.get("verge_outbox_dropped_messages_total", 0):
            failures.append(f"the outbox dropped {metrics['verge_outbox_dropped_messages_total']:.0f} messages")
        if stray:
            failures.append(f"{len(stray)} requests got no answer away from the kills, first: {stray[:3]}")
        if load.unexpected:
            failures.append(f"{len(load.unexpected)}+ unexpected answers, first: {load.unexpected[0]}")
        if not (growth <= a.rss_growth):
            failures.append(f"RSS grew {growth:.1f} % ({rss_base:.1f} → {rss_end:.1f} MB) after warm-up, "
                            f"over {a.rss_growth:g} %")
        if code != 0:
            failures.append(f"the daemon exited {code} on SIGTERM")

        # The report.
        log("answers by request kind:")
        for (kind, result), n in sorted(load.counts.items()):
            log(f"  {kind:<22} {result:<28} {n:>6}")
        errs = {}
        for _, _, _, e in load.no_answer_at:
            errs[e] = errs.get(e, 0) + 1
        for e, n in sorted(errs.items()):
            log(f"  no answer: {n} × {e[:120]}")
        log("  daemon kills at (s): " + ", ".join(f"{k0 - t0:.1f} ({b})" for k0, _, b in kills))
        for i, line in daemon.log_lines("error"):
            log(f"  daemon {i} log: {line[:300]}")
        warns = {}
        for i, line in daemon.log_lines("warn"):
            msg = json.loads(line).get("msg", line[:80]) if line.startswith("{") else line[:80]
            warns[msg] = warns.get(msg, 0) + 1
        for msg, n in sorted(warns.items()):
            log(f"  daemon warnings: {n} × {msg}")
        curve = [(round(t), s, mb, anon) for t, s, mb, anon in sampler.samples]
        step = max(1, round(30 / a.rss_every))
        log("RSS curve every 30 s (s: daemon process, VmRSS / RssAnon MB): "
            + ", ".join(f"{t}: {s}, {mb:.0f} / {anon:.0f}" for t, s, mb, anon in curve[::step]))
        figures = {
            "sent": sent, "sent to cloud routes": cloud_sent, "acknowledged": len(acked),
            "delivered": len(delivered), "deliveries (with duplicates)": len(received), "duplicates": dups,
            "lost": len(lost), "delivered unacknowledged": len(unacked), "unanswered at a kill": no_answer,
            "broker restarts": broker.stops, "daemon kills": daemon.kills,
            "subscriber connects": sub.connects,
            "MQTT connects (last daemon process)": metrics.get("verge_uplink_connects_total", 0),
        }
        for k, v in figures.items():
            log(f"{k:<34}{v:>10.0f}")
        lat = sorted(load.lat_ms)
        log(f"{'latency p50 / p99 (answered)':<34}{pct(lat, .5):>10.1f} / {pct(lat, .99):.1f} ms")
        log(f"{'daemon ready after kill -9':<34}{', '.join(f'{s:.1f}' for s in restarts_s)} s")
        log(f"{'drain after the load':<34}{drain_s:>10.1f} s")
        log(f"{'RSS of the last daemon':<34}{rss_base:>10.1f} MB after {warm:.0f} s warm-up, "
            f"{rss_end:.1f} MB at the end ({growth:+.1f} %)")
        log(f"{'RssAnon of the last daemon':<34}{anon_base:>10.1f} MB after the warm-up, "
            f"{anon_end:.1f} MB at the end ({anon_growth:+.1f} %)")
        rss = {"RSS after warm-up (last process)": rss_base, "RSS at end (last process)": rss_end,
               "RssAnon after warm-up (last process)": anon_base, "RssAnon at end (last process)": anon_end}
        write_rows(a, figures, rss, growth, pct(lat, .5), pct(lat, .99), restarts_s, curve, drain_s)
        if failures:
            raise Fail("\n  ".join([""] + failures))
        log(f"soak passed; rows appended to {a.rows}")
    finally:
        for part in (load, sampler, sub):
            if part is not None:
                (part.stop if part is load else part.done).set()
        for proc in children:
            stop(proc)
        if a.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def write_rows(a, figures, rss, growth, p50, p99, restarts_s, curve, drain_s):
    workload = f"mixed, {a.seconds:.0f} s, broker restarts + 2 × kill -9"
    rows = [(k, "count", v) for k, v in figures.items()]
    rows += [(k, "MB", v) for k, v in rss.items()]
    rows += [("RSS growth after warm-up", "%", growth), ("latency p50", "ms", p50), ("latency p99", "ms", p99),
             ("drain after the load", "s", drain_s)]
    rows += [("ready after kill -9", "s", s) for s in restarts_s[:1]]
    with open(a.rows, "a") as out:
        for metric, unit, value in rows:
            row = {"section": "soak", "workload": workload, "system": "verge-device serve", "metric": metric,
                   "unit": unit, "samples": [round(value, 3)], "baseline": False, "better": "lower"}
            if metric == "ready after kill -9":
                row["samples"] = [round(s, 3) for s in restarts_s]
            if metric.startswith("RSS at end"):
                row["curve"] = [list(x) for x in curve]  # (s, daemon process no., VmRSS MB, RssAnon MB)
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    try:
        main()
    except Fail as e:
        print(f"soak failed: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
