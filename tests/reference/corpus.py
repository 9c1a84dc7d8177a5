#!/usr/bin/env python3
"""Gather a deterministic corpus of real files from this machine's standard locations.

The corpus feeds the Magika reference run (magika_reference.py) and the tests that compare
verge's output with it. Files come only from places a fresh machine of this kind has, or gets
from the project's own setup:

  * Debian packages: /usr/bin, /usr/sbin, /usr/lib/<multiarch>, /usr/include, /usr/share, /etc
  * the Python installation that runs this script (its stdlib, with test data, and its
    site-packages; run it with the venv python or the pyenv python3, both share the stdlib)
  * the reference venv from setup_venv.sh ($VERGE_CACHE/venv, default ~/.cache/verge/venv)
  * pyenv's own tree ($PYENV_ROOT, default ~/.pyenv, without versions/)
  * the default rustup toolchain ($RUSTUP_HOME, default ~/.rustup) and, for Rust sources,
    lib/rustlib/src when present and the crates cargo has unpacked under
    $CARGO_HOME/registry/src (present once the workspace has been built or fetched)
  * Node's global node_modules (npm)

Per category, candidates are collected by walking the roots in sorted order (symlinks are not
followed or listed), then up to `cap` files are picked at evenly spaced positions of the
sorted candidate list (falling back to the next candidates when one is rejected). Rejected:
empty files, files over 5 MB, unreadable files, files whose first bytes do not match the
category, and files whose content was already picked (sha256). Categories are filled in the
order below, so a file lands in the first category that takes it.

Output: one absolute path per line (or "category<TAB>path" with --tsv), grouped by category in
the order below, sorted within a category; to stdout or to --out FILE. A summary of counts per
category goes to stderr.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import platform
import shutil
import stat
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

MAX_SIZE = 5 * 1024 * 1024
DEFAULT_CAP = 20
HEAD = 4096  # bytes read to check a file's kind


# ---------------------------------------------------------------------------------------------
# Locations


def env_dir(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    return Path(value).expanduser() if value else default


HOME = Path.home()
VERGE_CACHE = env_dir("VERGE_CACHE", HOME / ".cache" / "verge")
PYENV_ROOT = env_dir("PYENV_ROOT", HOME / ".pyenv")
RUSTUP_HOME = env_dir("RUSTUP_HOME", HOME / ".rustup")
CARGO_HOME = env_dir("CARGO_HOME", HOME / ".cargo")

_base_paths = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix,
                                        "installed_base": sys.base_prefix,
                                        "installed_platbase": sys.base_prefix})
STDLIB = Path(_base_paths["stdlib"])
BASE_SITE = Path(_base_paths["purelib"])
MULTIARCH_LIB = Path("/usr/lib") / f"{platform.machine()}-linux-gnu"


def venv_site() -> Path | None:
    found = sorted((VERGE_CACHE / "venv" / "lib").glob("python3*/site-packages"))
    return found[-1] if found else None


def rust_toolchain() -> Path | None:
    """The default rustup toolchain directory (resolved), else the first one in sorted order."""
    toolchains = RUSTUP_HOME / "toolchains"
    if not toolchains.is_dir():
        return None
    settings = RUSTUP_HOME / "settings.toml"
    if settings.is_file():
        import tomllib

        try:
            default = tomllib.loads(settings.read_text()).get("default_toolchain")
        except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError):
            default = None
        if default:
            matches = sorted(p for p in toolchains.iterdir() if p.name == default or p.name.startswith(default + "-"))
            if matches:
                return matches[0].resolve()
    dirs = sorted(p for p in toolchains.iterdir() if p.is_dir() and not p.is_symlink())
    return dirs[0] if dirs else None


def node_modules() -> Path | None:
    node = shutil.which("node")
    if node:
        candidate = Path(node).resolve().parent.parent / "lib" / "node_modules"
        if candidate.is_dir():
            return candidate
    for candidate in (Path("/usr/lib/node_modules"), Path("/usr/local/lib/node_modules")):
        if candidate.is_dir():
            return candidate
    return None


VENV_SITE = venv_site()
TOOLCHAIN = rust_toolchain()
RUST_DOCS = TOOLCHAIN / "share" / "doc" if TOOLCHAIN else None
RUST_SRC = TOOLCHAIN / "lib" / "rustlib" / "src" if TOOLCHAIN else None
CARGO_SRC = CARGO_HOME / "registry" / "src"
NODE_MODULES = node_modules()
USR_SHARE = Path("/usr/share")
USR_SHARE_DOC = USR_SHARE / "doc"


# ---------------------------------------------------------------------------------------------
# Walking (each root once, cached)

_walk_cache: dict[tuple[Path, tuple[str, ...]], list[Path]] = {}

# Never descend into these: bytecode caches, git metadata.
PRUNE_NAMES = {"__pycache__", ".git"}
# Per root, root-relative directories to leave out: site-packages of the stdlib (categories
# that want it name it as a root), pyenv's installed versions and shims (only the running
# Python counts).
ROOT_EXCLUDES = {STDLIB: ("site-packages",), PYENV_ROOT: ("versions", "shims", "cache")}


def walk(root: Path | None, exclude: tuple[str, ...] = ()) -> list[Path]:
    """Sorted regular files (no symlinks) under root; `exclude` are root-relative dir paths."""
    if root is None or not root.is_dir():
        return []
    key = (root, exclude)
    if key in _walk_cache:
        return _walk_cache[key]
    out: list[Path] = []
    excluded = {root / e for e in exclude}
    for dirpath, dirnames, filenames in os.walk(root, onerror=lambda e: None):
        d = Path(dirpath)
        dirnames[:] = sorted(n for n in dirnames if n not in PRUNE_NAMES and d / n not in excluded)
        for name in sorted(filenames):
            out.append(d / name)
    out.sort()
    _walk_cache[key] = out
    return out


def listdir(root: Path | None) -> list[Path]:
    """Sorted entries directly in root (no recursion)."""
    if root is None or not root.is_dir():
        return []
    try:
        return sorted(root / n for n in os.listdir(root))
    except OSError:
        return []


# ---------------------------------------------------------------------------------------------
# Content checks


def is_elf(head: bytes) -> bool:
    return head.startswith(b"\x7fELF")


def magic(*prefixes: bytes) -> Callable[[bytes], bool]:
    return lambda head: any(head.startswith(p) for p in prefixes)


def looks_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        # A multi-byte character cut at the end of the head is fine.
        if e.start < len(head) - 4:
            return False
    return True


def shebang_shell(head: bytes) -> bool:
    if not head.startswith(b"#!"):
        return False
    first = head.split(b"\n", 1)[0]
    interp = first[2:].strip().split()
    if not interp:
        return False
    prog = interp[0].rsplit(b"/", 1)[-1]
    if prog == b"env" and len(interp) > 1:
        prog = interp[1].rsplit(b"/", 1)[-1]
    return prog in (b"sh", b"bash", b"dash") and looks_text(head)


def xml_start(head: bytes) -> bool:
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    return text.startswith(b"<") and looks_text(head)


def html_start(head: bytes) -> bool:
    return looks_text(head) and b"<" in head


def json_ok(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            json.loads(f.read())
        return True
    except (ValueError, OSError):
        return False


# ---------------------------------------------------------------------------------------------
# Categories


@dataclass
class Category:
    name: str
    # Each source is (root, names, recursive): names are fnmatch patterns on the file name.
    sources: list[tuple[Path | None, tuple[str, ...], bool]]
    check: Callable[[bytes], bool] = looks_text
    cap: int = DEFAULT_CAP
    full_check: Callable[[Path], bool] | None = None
    exclude: Callable[[Path], bool] | None = None
    per_dir_cap: int | None = None  # at most this many files from one parent dir / crate
    # Alternative to `check` that also sees the path (a file passes if either accepts it).
    name_check: Callable[[Path, bytes], bool] | None = None
    group_of: Callable[[Path], object] | None = None
    picked: list[Path] = field(default_factory=list)


def under(*parts: str) -> Callable[[Path], bool]:
    return lambda p: any(part in p.parts for part in parts)


SO_NAMES = ("*.so", "*.so.*")
BIN_DIRS = [Path("/usr/bin"), Path("/usr/sbin")]


def top_dirs(n: int) -> Callable[[Path], object]:
    """Group by the first n components of the path (e.g. one group per rustdoc crate or book)."""
    return lambda p: p.parent.parts[:n]


def english_manpage_not_gcloud(p: Path) -> bool:
    # Only /usr/share/man/manN/ (not the translations), and not the thousands of generated
    # gcloud pages, which would crowd out the Debian ones.
    in_section = p.parent.name.startswith("man") and p.parent.parent == USR_SHARE / "man"
    return not in_section or p.name.startswith("gcloud")


def crate_of(p: Path) -> object:
    # registry/src/<index>/<crate-version>/...: group by crate directory.
    try:
        rel = p.relative_to(CARGO_SRC)
        return rel.parts[:2]
    except ValueError:
        return p.parent


def categories() -> list[Category]:
    stdlib = STDLIB
    return [
        Category("elf-executable", [(d, ("*",), False) for d in BIN_DIRS], is_elf,
                 exclude=lambda p: fnmatch.fnmatch(p.name, "*.so*")),
        Category("elf-shared-lib", [(MULTIARCH_LIB, SO_NAMES, True), (VENV_SITE, SO_NAMES, True)],
                 is_elf, per_dir_cap=8),
        Category("shell-script",
                 [(d, ("*",), False) for d in BIN_DIRS]
                 + [(PYENV_ROOT, ("*",), True), (Path("/etc"), ("*.sh",), True),
                    (USR_SHARE, ("*.sh",), True)],
                 shebang_shell, full_check=None, per_dir_cap=8,
                 name_check=lambda p, head: p.name.endswith(".sh") and looks_text(head)),
        Category("python", [(stdlib, ("*.py",), True)], looks_text, per_dir_cap=4),
        Category("png", [(stdlib, ("*.png",), True), (USR_SHARE, ("*.png",), True),
                         (RUST_DOCS, ("*.png",), True), (PYENV_ROOT, ("*.png",), True)],
                 magic(b"\x89PNG\r\n\x1a\n"), per_dir_cap=4),
        Category("jpeg", [(stdlib, ("*.jpg", "*.jpeg"), True), (BASE_SITE, ("*.jpg", "*.jpeg"), True),
                          (VENV_SITE, ("*.jpg", "*.jpeg"), True), (USR_SHARE, ("*.jpg", "*.jpeg"), True),
                          (RUST_DOCS, ("*.jpg", "*.jpeg"), True)],
                 magic(b"\xff\xd8\xff")),
        Category("gif", [(stdlib, ("*.gif",), True), (USR_SHARE, ("*.gif",), True),
                         (PYENV_ROOT, ("*.gif",), True)],
                 magic(b"GIF87a", b"GIF89a"), per_dir_cap=4),
        Category("pdf", [(USR_SHARE, ("*.pdf",), True), (stdlib, ("*.pdf",), True),
                         (BASE_SITE, ("*.pdf",), True), (VENV_SITE, ("*.pdf",), True)],
                 magic(b"%PDF-")),
        Category("gzip", [(USR_SHARE_DOC, ("*.gz",), True), (stdlib, ("*.gz", "*.tgz"), True),
                          (USR_SHARE, ("*.gz",), True)],
                 magic(b"\x1f\x8b"), exclude=under("man"), per_dir_cap=2),
        Category("xz", [(stdlib, ("*.xz", "*.txz"), True), (BASE_SITE, ("*.xz",), True),
                        (VENV_SITE, ("*.xz",), True), (USR_SHARE, ("*.xz",), True)],
                 magic(b"\xfd7zXZ\x00")),
        Category("zip", [(stdlib, ("*.zip", "*.whl"), True), (USR_SHARE, ("*.zip", "*.whl"), True),
                         (BASE_SITE, ("*.zip",), True), (VENV_SITE, ("*.zip",), True)],
                 magic(b"PK\x03\x04")),
        Category("bzip2", [(stdlib, ("*.bz2",), True), (BASE_SITE, ("*.bz2",), True),
                           (VENV_SITE, ("*.bz2",), True), (USR_SHARE, ("*.bz2",), True)],
                 magic(b"BZh")),
        Category("tar", [(stdlib, ("*.tar",), True)], magic(b""), cap=5,
                 full_check=lambda p: _tar_ok(p)),
        Category("image-other", [(stdlib, ("*.bmp", "*.tif", "*.tiff", "*.webp", "*.ico"), True),
                                 (USR_SHARE, ("*.bmp", "*.tif", "*.tiff", "*.webp", "*.ico"), True)],
                 magic(b"BM", b"II*\x00", b"MM\x00*", b"RIFF", b"\x00\x00\x01\x00"), cap=10),
        Category("svg", [(USR_SHARE, ("*.svg",), True), (RUST_DOCS, ("*.svg",), True)],
                 html_start, cap=10, per_dir_cap=3),
        Category("json", [(NODE_MODULES, ("*.json",), True), (stdlib, ("*.json",), True),
                          (VENV_SITE, ("*.json",), True), (USR_SHARE, ("*.json",), True)],
                 looks_text, full_check=json_ok, per_dir_cap=3),
        Category("html", [(USR_SHARE_DOC, ("*.html", "*.htm"), True), (RUST_DOCS, ("*.html",), True)],
                 html_start, per_dir_cap=2, group_of=top_dirs(10)),
        Category("xml", [(USR_SHARE, ("*.xml",), True), (Path("/etc"), ("*.xml",), True),
                         (stdlib, ("*.xml",), True)],
                 xml_start, per_dir_cap=3),
        Category("css", [(RUST_DOCS, ("*.css",), True), (USR_SHARE, ("*.css",), True),
                         (stdlib, ("*.css",), True)],
                 looks_text, per_dir_cap=3),
        Category("javascript", [(NODE_MODULES, ("*.js", "*.mjs", "*.cjs"), True),
                                (USR_SHARE, ("*.js",), True), (RUST_DOCS, ("*.js",), True)],
                 looks_text, per_dir_cap=2),
        Category("c-header", [(Path("/usr/include"), ("*.h",), True)], looks_text, per_dir_cap=3),
        Category("c-source", [(USR_SHARE, ("*.c",), True), (Path("/usr/include"), ("*.c",), True),
                              (stdlib, ("*.c",), True), (VENV_SITE, ("*.c",), True)],
                 looks_text, per_dir_cap=3),
        Category("rust", [(RUST_SRC, ("*.rs",), True), (RUST_DOCS, ("*.rs",), True),
                          (CARGO_SRC, ("*.rs",), True)],
                 looks_text, group_of=crate_of, per_dir_cap=1),
        Category("text", [(USR_SHARE / "common-licenses", ("*",), False),
                          (USR_SHARE_DOC, ("*.txt", "README", "NEWS", "AUTHORS", "THANKS"), True),
                          (stdlib, ("*.txt",), True)],
                 looks_text, per_dir_cap=3),
        Category("manpage-gz", [(USR_SHARE / "man", ("*.[0-9]*.gz",), True)], magic(b"\x1f\x8b"),
                 exclude=english_manpage_not_gcloud, per_dir_cap=6),
        Category("markdown", [(NODE_MODULES, ("*.md",), True), (USR_SHARE_DOC, ("*.md",), True),
                              (TOOLCHAIN, ("*.md",), True), (PYENV_ROOT, ("*.md",), True)],
                 looks_text, per_dir_cap=2),
        Category("yaml", [(USR_SHARE, ("*.yaml", "*.yml"), True), (PYENV_ROOT, ("*.yaml", "*.yml"), True),
                          (NODE_MODULES, ("*.yaml", "*.yml"), True), (BASE_SITE, ("*.yaml", "*.yml"), True)],
                 looks_text, per_dir_cap=3),
        Category("ini-conf", [(Path("/etc"), ("*.conf", "*.ini", "*.cfg"), True),
                              (VENV_SITE, ("*.ini", "*.cfg"), True), (stdlib, ("*.ini", "*.cfg"), True),
                              (USR_SHARE, ("*.ini",), True)],
                 looks_text, per_dir_cap=4),
        Category("toml", [(TOOLCHAIN, ("*.toml",), True), (RUSTUP_HOME, ("settings.toml",), False),
                          (stdlib, ("*.toml",), True), (NODE_MODULES, ("*.toml",), True)],
                 looks_text, cap=10, per_dir_cap=3),
        Category("csv", [(VENV_SITE, ("*.csv",), True), (BASE_SITE, ("*.csv",), True),
                         (USR_SHARE, ("*.csv",), True)],
                 looks_text, cap=10, per_dir_cap=3),
        Category("perl", [(USR_SHARE / "perl", ("*.pm", "*.pl"), True)], looks_text, cap=10, per_dir_cap=2),
        Category("sql", [(USR_SHARE, ("*.sql",), True)], looks_text, cap=10, per_dir_cap=2),
        Category("tcl", [(USR_SHARE, ("*.tcl",), True)], looks_text, cap=10, per_dir_cap=2),
    ]


def _tar_ok(path: Path) -> bool:
    import tarfile

    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# Picking


def candidates(cat: Category) -> list[Path]:
    seen: set[Path] = set()
    out: list[Path] = []
    for root, names, recursive in cat.sources:
        if root is None:
            continue
        if recursive:
            files = walk(root, ROOT_EXCLUDES.get(root, ()))
        else:
            files = listdir(root)
        for p in files:
            if p in seen or not any(fnmatch.fnmatch(p.name, n) for n in names):
                continue
            if cat.exclude and cat.exclude(p):
                continue
            seen.add(p)
            out.append(p)
    return out


def spread_order(n: int, k: int) -> list[int]:
    """Indices 0..n-1: k evenly spaced ones first, then all the others in order."""
    if n <= k:
        return list(range(n))
    first = [(i * n) // k for i in range(k)]
    chosen = set(first)
    return first + [i for i in range(n) if i not in chosen]


def read_ok(path: Path) -> tuple[bytes, str] | None:
    """(head, sha256) for a regular, readable, non-empty file of at most MAX_SIZE, else None."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0 or st.st_size > MAX_SIZE:
        return None
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SIZE + 1)
    except OSError:
        return None
    if not data or len(data) > MAX_SIZE:
        return None
    return data[:HEAD], hashlib.sha256(data).hexdigest()


def pick(cat: Category, taken_hashes: set[str], taken_paths: set[Path]) -> None:
    cands = candidates(cat)
    group = cat.group_of or (lambda p: p.parent)
    per_group: dict[object, int] = {}
    for i in spread_order(len(cands), cat.cap):
        if len(cat.picked) >= cat.cap:
            break
        p = cands[i]
        if p in taken_paths:
            continue
        g = group(p)
        if cat.per_dir_cap is not None and per_group.get(g, 0) >= cat.per_dir_cap:
            continue
        ok = read_ok(p)
        if ok is None:
            continue
        head, digest = ok
        if digest in taken_hashes:
            continue
        if not (cat.check(head) or (cat.name_check is not None and cat.name_check(p, head))):
            continue
        if cat.full_check and not cat.full_check(p):
            continue
        taken_hashes.add(digest)
        taken_paths.add(p)
        per_group[g] = per_group.get(g, 0) + 1
        cat.picked.append(p)
    cat.picked.sort()


def build() -> list[Category]:
    cats = categories()
    taken_hashes: set[str] = set()
    taken_paths: set[Path] = set()
    for cat in cats:
        pick(cat, taken_hashes, taken_paths)
    return cats


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the list to this file instead of stdout")
    parser.add_argument("--tsv", action="store_true", help='print "category<TAB>path" lines')
    parser.add_argument("--min-files", type=int, default=0,
                        help="exit non-zero if fewer files than this were found")
    args = parser.parse_args(list(argv) if argv is not None else None)

    cats = build()
    lines = [f"{c.name}\t{p}" if args.tsv else str(p) for c in cats for p in c.picked]
    text = "".join(line + "\n" for line in lines)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    else:
        sys.stdout.write(text)

    total = sum(len(c.picked) for c in cats)
    print(f"corpus: {total} files in {sum(1 for c in cats if c.picked)}/{len(cats)} categories "
          f"(python stdlib {STDLIB}, venv site-packages {VENV_SITE}, rust toolchain {TOOLCHAIN})",
          file=sys.stderr)
    for c in cats:
        flag = "" if c.picked else "  <- none found"
        print(f"  {c.name:<16} {len(c.picked):>3}/{c.cap}{flag}", file=sys.stderr)
    if total < args.min_files:
        print(f"error: only {total} files, fewer than --min-files {args.min_files}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
