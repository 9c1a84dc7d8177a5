#!/usr/bin/env bash
# Create (idempotently) the reference venv used by tests/reference/*.py:
#   $VERGE_CACHE/venv  (VERGE_CACHE defaults to ~/.cache/verge)
# with magika==1.0.3 (brings onnxruntime and numpy) and onnx==1.19.1 (the version whose wheel
# ships the operator conformance data, see DESIGN.md "Models"), every package pinned in
# requirements.txt beside this script. Nothing is installed when the venv already has the
# pinned versions and the modules import. Prints the venv's python path last.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REQUIREMENTS="$HERE/requirements.txt"
VERGE_CACHE="${VERGE_CACHE:-$HOME/.cache/verge}"
VENV="$VERGE_CACHE/venv"
PY="$VENV/bin/python"
BASE_PYTHON="${PYTHON:-python3}"

if [ ! -x "$PY" ]; then
    echo "creating venv at $VENV" >&2
    mkdir -p "$VERGE_CACHE"
    "$BASE_PYTHON" -m venv "$VENV"
fi

# True when every pin of requirements.txt is installed at its version and the modules import.
# Run from / so that no directory of this repo shadows a module.
ready() {
    (cd / && "$PY" - "$REQUIREMENTS" <<'PYEOF' >/dev/null 2>&1)
import importlib, sys
from importlib.metadata import version
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if line:
        name, want = line.split("==")
        if version(name) != want:
            sys.exit(1)
for mod in ("magika", "onnx", "onnxruntime", "numpy"):
    importlib.import_module(mod)
PYEOF
}

if ! ready; then
    echo "installing the pinned packages of $(basename "$REQUIREMENTS") into $VENV" >&2
    "$PY" -m pip install --disable-pip-version-check --quiet -r "$REQUIREMENTS"
    if ! ready; then
        echo "error: $VENV still lacks a pinned package of $REQUIREMENTS (or it fails to import)" >&2
        exit 1
    fi
fi

echo "$PY"
