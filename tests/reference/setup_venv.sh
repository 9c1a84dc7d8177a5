#!/usr/bin/env bash
# Create (idempotently) the reference venv used by tests/reference/*.py:
#   $VERGE_CACHE/venv  (VERGE_CACHE defaults to ~/.cache/verge)
# with magika==1.0.3 (brings onnxruntime and numpy) and onnx==1.19.1 (the version whose wheel
# ships the operator conformance data, see DESIGN.md "Models").
# Packages are installed only if importing them fails; prints the venv python path last.
set -euo pipefail

MAGIKA_VERSION="1.0.3"
ONNX_VERSION="1.19.1"
VERGE_CACHE="${VERGE_CACHE:-$HOME/.cache/verge}"
VENV="$VERGE_CACHE/venv"
PY="$VENV/bin/python"
BASE_PYTHON="${PYTHON:-python3}"

if [ ! -x "$PY" ]; then
    echo "creating venv at $VENV" >&2
    mkdir -p "$VERGE_CACHE"
    "$BASE_PYTHON" -m venv "$VENV"
fi

# have PKG VERSION [MODULE...]: the distribution PKG is at VERSION and the modules import.
have() {
    (cd / && "$PY" - "$@" <<'PYEOF' >/dev/null 2>&1)
import importlib, sys
from importlib.metadata import version
for mod in sys.argv[3:] or [sys.argv[1]]:
    importlib.import_module(mod)
sys.exit(0 if version(sys.argv[1]) == sys.argv[2] else 1)
PYEOF
}
have_magika() { have magika "$MAGIKA_VERSION" magika onnxruntime numpy; }
have_onnx() { have onnx "$ONNX_VERSION" onnx; }

if ! have_magika; then
    echo "installing magika==$MAGIKA_VERSION" >&2
    "$PY" -m pip install --disable-pip-version-check --quiet "magika==$MAGIKA_VERSION"
fi

if ! have_onnx; then
    echo "installing onnx==$ONNX_VERSION" >&2
    "$PY" -m pip install --disable-pip-version-check --quiet "onnx==$ONNX_VERSION"
fi

have_magika || { echo "error: magika==$MAGIKA_VERSION still not importable in $VENV" >&2; exit 1; }
have_onnx || { echo "error: onnx==$ONNX_VERSION still not importable in $VENV" >&2; exit 1; }

echo "$PY"
