#!/usr/bin/env bash
# verge's fuzz targets: libFuzzer (libfuzzer-sys builds it with cc) on stable
# rustc's sancov pass, no nightly, no cargo-fuzz. ./dev fuzz and ./dev test
# call this; by hand:
#   fuzz/run.sh build              build the targets (into $VERGE_CACHE/fuzz-target)
#   fuzz/run.sh replay             run every kept regression input (fuzz/regressions/<target>/) once
#   fuzz/run.sh run SECONDS [T…]   fuzz each target (or those named) for SECONDS, then a summary
# The targets need VERGE_ONNXRUNTIME_LIB (onnx_ort, tensors) and
# VERGE_NN_SUITE_MODELS (seeds, and the models the tensor target runs);
# VERGE_ONNX_NODE_CASES, when set, adds ONNX's node-test models as seeds.
# Corpora grow in $VERGE_CACHE/fuzz-corpus/<target>; crashes land in
# $VERGE_CACHE/fuzz-artifacts/<target>/ (fix, then keep the input as a regression).
set -euo pipefail
cd "$(dirname "$0")"
FUZZ=$PWD
ROOT=$(dirname "$FUZZ")
VERGE_CACHE="${VERGE_CACHE:-$HOME/.cache/verge}"
TARGET_DIR="$VERGE_CACHE/fuzz-target"
HOST=$(rustc -vV | sed -n 's/^host: //p')
BIN="$TARGET_DIR/$HOST/release"
TARGETS=(config http_request tensors onnx_tract onnx_ort)

build() {
    # Coverage for the crates the targets exercise only (rustc-sancov);
    # --target keeps RUSTFLAGS off build scripts and proc macros.
    CARGO_TARGET_DIR="$TARGET_DIR" RUSTC_WRAPPER="$FUZZ/rustc-sancov" RUSTFLAGS="--cfg fuzzing" \
        cargo build --release --locked --target "$HOST" --bins
}

# Seeds made from what the repository has: the configurations in its docs and
# tests (digests made valid), small HTTP requests, and small ONNX models.
seeds() {
    local dir="$VERGE_CACHE/fuzz-seeds"
    rm -rf "$dir" && mkdir -p "$dir"/{config,http_request,onnx}
    python3 - "$ROOT" "$dir/config" <<'PY'
import pathlib, re, sys
root, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
texts = []
for f in [root / "host-greengrass/src/config.rs", *sorted((root / "host-greengrass/tests").rglob("*.rs"))]:
    src = f.read_text()
    if f.name == "config.rs":
        doc = [l[4:] if l.startswith("//! ") else "" for l in src.splitlines() if l.startswith("//!")]
        texts.append("\n".join(doc).split("```toml", 1)[-1].split("```", 1)[0])
    texts += [t for t in re.findall(r'r#"(.*?)"#', src, re.S) if "[routes" in t or "state_dir" in t]
for i, t in enumerate(texts):
    t = re.sub(r'sha256 = "[^"]*"', 'sha256 = "' + "ab" * 32 + '"', t)
    (out / f"toml-{i}").write_bytes(b"\x00" + t.encode())
    (out / f"toml-overrides-{i}").write_bytes(b"\x06" + t.encode())
PY
    cp "$FUZZ"/seeds/http_request/* "$dir/http_request/"
    cp "$VERGE_NN_SUITE_MODELS"/*.onnx "$dir/onnx/"
    if [[ -n ${VERGE_ONNX_NODE_CASES:-} && -d $VERGE_ONNX_NODE_CASES/models ]]; then
        find "$VERGE_ONNX_NODE_CASES/models" -name '*.onnx' -size -8k -exec cp {} "$dir/onnx/" \;
    fi
}

seed_dir() {
    case $1 in
        config|http_request) echo "$VERGE_CACHE/fuzz-seeds/$1" ;;
        onnx_*) echo "$VERGE_CACHE/fuzz-seeds/onnx" ;;
        *) ;;
    esac
}

replay() {
    local t files
    for t in "${TARGETS[@]}"; do
        files=("$FUZZ/regressions/$t"/*)
        [[ -e ${files[0]} ]] || continue
        echo "  $t: ${#files[@]} regression input(s)"
        "$BIN/$t" -runs=1 "${files[@]}" 2>&1 | tail -n 3 | sed 's/^/    /'
        [[ ${PIPESTATUS[0]} -eq 0 ]] || { echo "fuzz: $t fails on a regression input" >&2; return 1; }
    done
}

run() {
    local seconds=$1 t log corpus seeds
    shift
    local targets=("$@")
    ((${#targets[@]})) || targets=("${TARGETS[@]}")
    seeds
    local summary=()
    for t in "${targets[@]}"; do
        corpus="$VERGE_CACHE/fuzz-corpus/$t"
        mkdir -p "$corpus" "$VERGE_CACHE/fuzz-artifacts/$t"
        log="$VERGE_CACHE/fuzz-artifacts/$t.log"
        seeds=$(seed_dir "$t")
        local dict=()
        [[ -f $FUZZ/$t.dict ]] && dict=(-dict="$FUZZ/$t.dict")
        # ONNX Runtime itself can take longer than -timeout on a mutated model
        # (fuzz/findings/onnx_ort-einsum-equation-timeout): reported, not fatal.
        [[ $t == onnx_ort ]] && dict+=(-timeout_exitcode=0)
        echo "  $t: ${seconds}s (log: $log)"
        if ! "$BIN/$t" "$corpus" ${seeds:+"$seeds"} "${dict[@]}" -max_total_time="$seconds" \
            -timeout=20 -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1 \
            -artifact_prefix="$VERGE_CACHE/fuzz-artifacts/$t/" >"$log" 2>&1; then
            # ONNX Runtime ending the process from its C++ code (std::terminate,
            # which Rust never calls) on a model it cannot run is its bug, not
            # verge's (fuzz/findings/onnx_ort-dft-scalar-terminate; its own
            # Python binding dies the same way): reported, not fatal.
            if [[ $t == onnx_ort ]] && grep -q '^terminate called' "$log"; then
                echo "  $t: ONNX Runtime aborted on an input (std::terminate; an upstream bug), kept in" \
                    "$VERGE_CACHE/fuzz-artifacts/$t/; see fuzz/findings/"
                grep -m1 -B2 '^terminate called' "$log" | sed 's/^/    /'
                continue
            fi
            tail -n 40 "$log" >&2
            echo "fuzz: $t found a failure; the input is in $VERGE_CACHE/fuzz-artifacts/$t/ (fix it, then keep it in fuzz/regressions/$t/)" >&2
            return 1
        fi
        summary+=("$(printf '%-13s %12s runs  %8s  corpus %s' "$t" \
            "$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")" \
            "$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)" "$(find "$corpus" -type f | wc -l)")")
    done
    printf '  %s\n' "${summary[@]}"
}

"$@"
