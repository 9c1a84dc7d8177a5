#!/usr/bin/env python3
"""Power cuts: `verge-device serve` in a real virtual machine whose power is cut under load.

A Debian system (bookworm, minbase, its cloud kernel; built once with debootstrap from the
Debian mirror apt already uses, kept in --vm-dir) boots under qemu-system-x86_64 (software
emulation; --accel kvm where nested KVM works) from a raw ext4 disk image this script makes. Its
init is a shell script of ours (no systemd): it checks both databases with the sqlite3 program
(`PRAGMA quick_check`), lists the outbox's ids on the serial console, then starts the daemon
with its state on that disk. The host sends cloud-route requests (the probe's echo) and state
writes (the probe's `count`) through a forwarded loopback port, while mosquitto on a loopback
port takes the daemon's results (the VM reaches it as its gateway), and a subscriber records
what arrives. Every third boot runs with the broker down (results pile up in the outbox);
every fifth cut comes while the daemon starts rather than under load. At a random moment the
VM's power is cut: qemu is killed (SIGKILL), so all that
was in the VM's memory is lost: the page cache, ext4's uncommitted journal, SQLite's unsynced
pages. The disk image keeps what qemu wrote to it (cache=none: O_DIRECT, and the guest's
flushes reach the image), as a disk that honours flushes does; a disk that lies about flushes
is outside what any database can survive, and outside this test.

After every boot, before the daemon starts, it checks:
  * both databases pass quick_check (and the daemon moves nothing aside as corrupt);
  * every result the API answered 200 for is in the outbox or was delivered;
  * the state counter is at least the highest value an answered `count` returned.
At the end the outbox drains and: no acknowledged result is lost, every duplicate repeats an
id already delivered with the same payload, and results delivered but never acknowledged are
at most the requests in flight at the cuts (committed, but the answer died with the power).

  sudo python3 bench/power_cut.py --device target/release/verge-device --probe probe.wasm \\
      --vm-dir ~/.cache/verge/vm --mirror URL [--cuts 20] [--rows rows.jsonl]
"""

import argparse
import http.client
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
from service import Fail, children, free_port, sha256, stop  # noqa: E402
from soak import Broker, Subscriber, digest  # noqa: E402

SUITE = "bookworm"
PACKAGES = "linux-image-cloud-amd64,iproute2,sqlite3"
THING = "powercut"
TOPIC = f"verge/{THING}/probe"
CLIENTS = 2
BOOT_TIMEOUT_S = 300  # software emulation, first boot compiles the component
GUEST = "/opt/verge"
STATE = "/var/lib/verge/state"


def log(msg):
    print(f"[power-cut {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the machine

def rootfs(vm_dir, mirror):
    """The Debian tree, built once (debootstrap needs root)."""
    root = vm_dir / f"rootfs-{SUITE}"
    stamp = root / ".verge-packages"
    if stamp.is_file() and stamp.read_text() == PACKAGES:
        return root
    if os.geteuid() != 0:
        raise Fail("building the VM's Debian with debootstrap needs root (CI runs as root)")
    if not mirror:
        raise Fail("--mirror is needed to build the VM's Debian (./dev passes the one apt uses)")
    tmp = vm_dir / f"rootfs-{SUITE}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    vm_dir.mkdir(parents=True, exist_ok=True)
    log(f"debootstrap {SUITE} (minbase + {PACKAGES}) into {tmp}")
    t = time.monotonic()
    with open(vm_dir / "debootstrap.log", "wb") as out:
        r = subprocess.run(["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, str(tmp), mirror],
                           stdout=out, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise Fail(f"debootstrap failed ({r.returncode}); see {vm_dir / 'debootstrap.log'}")
    # Nothing of the package cache is needed in the image.
    shutil.rmtree(tmp / "var/cache/apt/archives", ignore_errors=True)
    (tmp / "var/cache/apt/archives/partial").mkdir(parents=True)
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    stamp.write_text(PACKAGES)
    log(f"debootstrap done in {time.monotonic() - t:.0f} s")
    return root


def kernel(root):
    boot = root / "boot"
    vmlinuz = sorted(boot.glob("vmlinuz-*"))
    initrd = sorted(boot.glob("initrd.img-*"))
    if not vmlinuz or not initrd:
        raise Fail(f"no kernel or initrd in {boot}")
    return vmlinuz[-1], initrd[-1]


INIT = r"""#!/bin/sh
# PID 1 of the power-cut VM: mount, network, check the databases, serve.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
# The initramfs has mounted /proc, /sys and /dev already (kept as they are).
mount -t proc proc /proc 2>/dev/null
mount -t sysfs sys /sys 2>/dev/null
mount -t devtmpfs dev /dev 2>/dev/null
modprobe virtio_net 2>/dev/null
# The one network card, by whatever name the initramfs's udev gave it.
IF=$(ls /sys/class/net | grep -v '^lo$' | head -1)
ip link set lo up
ip link set "$IF" up
ip addr add 10.0.2.15/24 dev "$IF"
ip route add default via 10.0.2.2
S=@STATE@
mkdir -p $S
echo "VERGE-BOOT"
for db in outbox state; do
    if [ -f $S/$db.db ]; then
        echo "VERGE-CHECK $db $(sqlite3 $S/$db.db 'PRAGMA quick_check' | tr '\n' ' ')"
    fi
done
if [ -f $S/outbox.db ]; then
    sqlite3 $S/outbox.db 'SELECT id FROM outbox ORDER BY seq' | sed 's/^/VERGE-OUTBOX /'
fi
if [ -f $S/state.db ]; then
    echo "VERGE-HITS $(sqlite3 $S/state.db "SELECT value FROM kv WHERE key = 'hits'")"
fi
echo "VERGE-LISTED"
@GUEST@/verge-device serve --config @GUEST@/verge.toml
echo "VERGE-EXIT $?"
sync
poweroff -f
"""


def stage(debian, a, broker_port, disk):
    """Makes the disk image: the Debian tree (hard links, so the kept tree stays as it is) with
    the daemon, the probe, its configuration and the init added (mkfs.ext4 -d: no mount, no
    loop device)."""
    root = disk.parent / "tree"
    shutil.rmtree(root, ignore_errors=True)
    subprocess.run(["cp", "-al", str(debian), str(root)], check=True)
    guest = root / GUEST.lstrip("/")
    for d in (guest, root / STATE.lstrip("/")):  # from an older harness, if any (links only)
        shutil.rmtree(d, ignore_errors=True)
    guest.mkdir(parents=True)
    shutil.copy2(a.device, guest / "verge-device")
    shutil.copy2(a.probe, guest / "probe.wasm")
    (guest / "init").write_text(INIT.replace("@STATE@", STATE).replace("@GUEST@", GUEST))
    (guest / "init").chmod(0o755)
    (guest / "verge.toml").write_text("\n".join([
        f'thing_name = "{THING}"', f'state_dir = "{STATE}"', "",
        "[api]", 'listen = "0.0.0.0:8470"', "workers = 2", "",
        "[components.probe]", f'path = "{GUEST}/probe.wasm"', f'sha256 = "{sha256(a.probe)}"', "",
        "[routes.probe]", 'component = "probe"', "deadline_ms = 5000",
        f'cloud = {{ topic = "{TOPIC}" }}', "",
        "[routes.local]", 'component = "probe"', "deadline_ms = 5000", "",
        "[mqtt]", 'host = "10.0.2.2"', f"port = {broker_port}", 'client_id = "verge-powercut"',
        "keep_alive_s = 5", "reconnect_max_s = 1", ""]))
    size_mb = sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and not f.is_symlink()) // (1 << 20)
    disk.unlink(missing_ok=True)
    r = subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "verge", "-d", str(root), str(disk), f"{size_mb + 512}M"],
                       capture_output=True, text=True)
    shutil.rmtree(root)
    if r.returncode != 0:
        raise Fail(f"mkfs.ext4 -d failed: {r.stderr}")


class Machine:
    """One boot of the VM; its serial console is read line by line."""

    def __init__(self, a, root, disk, api_port):
        vmlinuz, initrd = kernel(root)
        self.lines, self.cond = [], threading.Condition()
        cpu = "host" if a.accel == "kvm" else "max"
        # One TCG thread for both vCPUs: multi-threaded TCG can abort in iotlb_to_section
        # ("section_index < d->map.sections_nb") when one vCPU reprograms the memory map while
        # the other does MMIO (QEMU issue 1921); it did so at a CI boot with QEMU 10.0.2.
        accel = "kvm" if a.accel == "kvm" else "tcg,thread=single"
        cmd = [a.qemu, "-machine", "q35", "-accel", accel, "-cpu", cpu, "-smp", "2", "-m", "1024",
               "-kernel", str(vmlinuz), "-initrd", str(initrd),
               "-append", f"root=LABEL=verge rw console=ttyS0 quiet loglevel=3 panic=-1 init={GUEST}/init",
               "-drive", f"file={disk},format=raw,if=virtio,cache=none",
               "-netdev", f"user,id=net,restrict=off,hostfwd=tcp:127.0.0.1:{api_port}-:8470",
               "-device", "virtio-net-pci,netdev=net,romfile=",
               "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        children.append(self.proc)
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n")
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()

    def wait_for(self, prefix, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    if line.startswith(prefix):
                        return line
                left = deadline - time.monotonic()
                code = self.proc.poll()
                if left <= 0 or code is not None:
                    why = f"qemu exited (code {code}) before" if code is not None else f"not within {timeout} s"
                    raise Fail(f"no {prefix!r} from the VM: {why}; console:\n" + "\n".join(self.lines[-30:]))
                self.cond.wait(min(left, 1))

    def marked(self, prefix):
        with self.cond:
            return [line[len(prefix):].strip() for line in self.lines if line.startswith(prefix)]

    def daemon_logs(self, msg):
        out = []
        with self.cond:
            for line in self.lines:
                if line.startswith("{"):
                    try:
                        v = json.loads(line)
                    except ValueError:
                        continue
                    if v.get("msg") == msg:
                        out.append(v)
        return out

    def cut(self):
        """The power cut: SIGKILL to qemu, nothing flushed."""
        self.proc.kill()
        self.proc.wait()


# QEMU bugs that abort the emulator are rare, but a run boots the VM a dozen times.
MAX_QEMU_CRASHES = 3


def boot(a, root, disk, api_port, crashes):
    """A VM whose init reached VERGE-LISTED. qemu dying by a signal of its own before then (an
    assertion in QEMU aborts it) is one more power cut during boot, which this test makes anyway:
    it is logged, counted, and the VM booted again, at most MAX_QEMU_CRASHES times a run. A guest
    that panics or powers off makes qemu exit with a status (-no-reboot), and that still fails."""
    while True:
        vm = Machine(a, root, disk, api_port)
        try:
            vm.wait_for("VERGE-LISTED", BOOT_TIMEOUT_S)
            return vm
        except Fail as e:
            code = vm.proc.poll()
            if code is None or code >= 0 or len(crashes) >= MAX_QEMU_CRASHES:
                raise
            crashes.append(str(e).splitlines()[-1][:300])
            log(f"qemu died by signal {-code} while the VM booted (QEMU's fault, not the guest's); "
                f"counted as one more power cut, booting again: {crashes[-1]}")


# ------------------------------------------------------------------ the load

def call(port, route, body, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("POST", f"/v1/infer/{route}", body=body)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        c.close()


def wait_ready(port, vm, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if vm.proc.poll() is not None:
            raise Fail("the VM stopped before the daemon was ready:\n" + "\n".join(vm.lines[-30:]))
        try:
            if get(port, "/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise Fail("the daemon in the VM was not ready in time:\n" + "\n".join(vm.lines[-30:]))


class Load:
    """Clients sending results (echo on the cloud route) and counter increments until stopped."""

    def __init__(self, port):
        self.port, self.stop = port, threading.Event()
        self.acked, self.hits, self.lock = [], 0, threading.Lock()
        self.answered = self.failed = 0
        self.unexpected = []
        self.threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(CLIENTS)]

    def client(self, i):
        n = 0
        while not self.stop.is_set():
            n += 1
            count = n % 4 == 0
            try:
                status, body = call(self.port, "local" if count else "probe", b"count" if count else b"echo")
            except OSError:
                with self.lock:
                    self.failed += 1
                self.stop.wait(0.05)
                continue
            try:
                reply = json.loads(body) if status == 200 else None
                with self.lock:
                    self.answered += 1
                    if count:
                        self.hits = max(self.hits, reply["respond"]["body"]["hits"])
                    else:
                        box = reply.pop("outbox")
                        self.acked.append((box["id"], digest(reply)))  # the rest is the outcome
            except (ValueError, KeyError, TypeError, AttributeError):
                with self.lock:
                    self.unexpected.append(f"HTTP {status}: {body[:200]!r}")
                return

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(30)


# ------------------------------------------------------------------ the run

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", type=Path, required=True, help="the verge-device to run in the VM")
    ap.add_argument("--probe", type=Path, required=True, help="the probe component (probe.wasm)")
    ap.add_argument("--vm-dir", type=Path, required=True, help="where the Debian tree and the disk image live")
    ap.add_argument("--mirror", help="the Debian mirror for debootstrap (the first build only)")
    ap.add_argument("--cuts", type=int, default=20)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    # Software emulation by default: nested KVM is often there and broken (on the machine this
    # was written on, /dev/kvm exists and a guest hangs at its first instructions).
    ap.add_argument("--accel", default="tcg", choices=("tcg", "kvm"))
    ap.add_argument("--qemu", default=shutil.which("qemu-system-x86_64") or "qemu-system-x86_64")
    ap.add_argument("--rows", type=Path)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    t0 = time.monotonic()
    log(f"{a.cuts} power cuts, seed {a.seed}, accelerator {a.accel}")

    root = rootfs(a.vm_dir, a.mirror)
    run = a.vm_dir / "run"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    broker = Broker(run)
    broker.start()
    sub = Subscriber(broker.port, time.monotonic() + 24 * 3600, topics=[TOPIC], client_id="verge-powercut-subscriber")
    sub.start()
    if not sub.subscribed.wait(20):
        raise Fail("the subscriber did not subscribe")
    disk = run / "disk.img"
    stage(root, a, broker.port, disk)
    api_port = free_port()

    acked, in_flight_at_cuts, hits, boots, failures, qemu_crashes = {}, 0, 0, [], [], []
    for k in range(a.cuts + 1):
        last = k == a.cuts
        # Every third boot runs with the broker down, so results pile up in the outbox; every
        # fifth cut comes while the daemon starts (recovering the databases, compiling) instead.
        broker_down = k % 3 == 1 and not last
        at_start = k % 5 == 4 and not last
        if broker_down:
            broker.stop()
        t_boot = time.monotonic()
        vm = boot(a, root, disk, api_port, qemu_crashes)
        checks = vm.marked("VERGE-CHECK")
        queued = set(vm.marked("VERGE-OUTBOX"))
        on_disk_hits = int((vm.marked("VERGE-HITS") or ["0"])[0] or 0)
        bad = [c for c in checks if not c.endswith(" ok")]
        if bad:
            failures.append(f"boot {k}: quick_check: {bad}")
        time.sleep(0.5)  # the subscriber takes in what the broker still held for it
        delivered = {mid for _, _, mid, _, _ in sub.snapshot()}
        missing = [i for i in acked if i not in queued and i not in delivered]
        if missing:
            failures.append(f"boot {k}: {len(missing)} acknowledged results neither queued nor delivered: {missing[:3]}")
        if on_disk_hits < hits:
            failures.append(f"boot {k}: the counter went back from {hits} to {on_disk_hits}")
        load, boot_s = Load(api_port), None
        if at_start:
            time.sleep(rng.uniform(0, 1.0))
            vm.cut()
        else:
            wait_ready(api_port, vm, BOOT_TIMEOUT_S)
            boot_s = time.monotonic() - t_boot
            load.start()
            if last:
                load.stop.wait(3)
            else:
                load.stop.wait(rng.uniform(0.5, 4.0))
                vm.cut()  # while the clients are still sending
                in_flight_at_cuts += CLIENTS
            load.finish()
        moved = vm.daemon_logs("database corrupt: moved aside, starting a fresh one")
        if moved:
            failures.append(f"boot {k}: a database was moved aside as corrupt: {moved}")
        for mid, dig in load.acked:
            acked[mid] = dig
        if load.unexpected:
            failures.append(f"boot {k}: unexpected answers: {load.unexpected[:3]}")
        hits = max(hits, load.hits)
        if broker_down:
            broker.start()
        boots.append({"boot": k, "boot_s": boot_s, "queued_at_boot": len(queued),
                      "answered": load.answered, "broker_down": broker_down, "cut_at_start": at_start})
        log(f"boot {k}: {len(queued)} queued at boot, " + (
            "power cut while the daemon started" if at_start else
            f"ready in {boot_s:.1f} s, {load.answered} answered" + ("" if last else ", power cut"))
            + (" (broker down)" if broker_down else ""))
        if failures:
            break

    # The last boot drains the outbox.
    if not failures:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            delivered = {mid for _, _, mid, _, _ in sub.snapshot()}
            if all(i in delivered for i in acked):
                break
            time.sleep(0.5)
        time.sleep(1)  # stragglers (duplicates) still on their way
    vm.cut()
    sub.done.set()
    broker.stop()

    received = sub.snapshot()
    first, dups, dup_mismatch, wrong_outcome = {}, 0, [], []
    for _, _, mid, dig, msg in received:
        if mid in first:
            dups += 1
            if first[mid] != dig:
                dup_mismatch.append(mid)
            continue
        first[mid] = dig
        if mid in acked and digest(msg.get("outcome")) != acked[mid]:
            wrong_outcome.append(mid)
    lost = [i for i in acked if i not in first]
    unacked = [i for i in first if i not in acked]
    if wrong_outcome:
        failures.append(f"{len(wrong_outcome)} results delivered with another outcome than answered")
    if lost:
        failures.append(f"{len(lost)} acknowledged results never delivered: {lost[:3]}")
    if dup_mismatch:
        failures.append(f"{len(dup_mismatch)} duplicates differ from the first delivery")
    if len(unacked) > in_flight_at_cuts:
        failures.append(f"{len(unacked)} results delivered but never acknowledged, more than the "
                        f"{in_flight_at_cuts} requests in flight at the cuts")
    took = time.monotonic() - t0
    summary = {"cuts": len(boots) - 1 if not failures else len(boots), "seconds": round(took),
               "cuts_at_start": sum(b["cut_at_start"] for b in boots), "qemu_crashes": len(qemu_crashes),
               "accelerator": a.accel, "acknowledged": len(acked), "delivered": len(first),
               "duplicates": dups, "lost": len(lost), "delivered_unacknowledged": len(unacked),
               "max_queued_at_boot": max(b["queued_at_boot"] for b in boots),
               "median_ready_s": round(statistics.median(b["boot_s"] for b in boots if b["boot_s"] is not None), 1)}
    log("summary: " + json.dumps(summary))
    if a.rows:
        with open(a.rows, "a") as f:
            f.write(json.dumps({"bench": "power-cut", **summary}) + "\n")
    if failures:
        for f in failures:
            log("FAIL: " + f)
        return 1
    shutil.rmtree(run, ignore_errors=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Fail as e:
        log(f"FAIL: {e}")
        sys.exit(1)
    finally:
        for p in children:
            stop(p)
