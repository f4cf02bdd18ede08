#!/usr/bin/env bash
# One idempotent setup: .venv with the pinned stack, mmcv 2.1.0 built with ops
# (patched for torch 2.14), the OpenMMLab packages, and frozenbench in editable mode.
#
# A second run with unchanged inputs only checks a stamp and exits within seconds.
# The mmcv wheel is cached under $FROZENBENCH_CACHE/wheels keyed by its inputs,
# so only a fresh machine pays for the ~12 minute build.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${FROZENBENCH_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3.11}
CACHE=${FROZENBENCH_CACHE:-$HOME/.cache/frozenbench}
LOCK=$ROOT/requirements/lock.txt
MMCV_VERSION=2.1.0
# sha256 of mmcv-2.1.0.tar.gz as published on PyPI; verified before the build.
MMCV_SDIST_SHA256=d387bcab66b467479b6660310e23746cfc79c6e57acf04094680adb499a5cd3f

start_all=$SECONDS
phase_start=$SECONDS
phase() {  # print how long the previous phase took, then name the next one
    local now=$SECONDS
    [ -n "${PHASE:-}" ] && printf 'setup: %-28s %4ds\n' "$PHASE" $((now - phase_start))
    PHASE=${1:-}
    phase_start=$now
}

inputs_hash() {
    cat "$ROOT/requirements/"*.txt "$ROOT/scripts/setup.sh" "$ROOT/scripts/apply_patches.py" \
        "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1
}

STAMP=$VENV/.frozenbench-setup
HASH=$(inputs_hash)
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ]; then
    echo "setup: up to date ($VENV)"
    exit 0
fi

constraints=()
[ -f "$LOCK" ] && constraints=(-c "$LOCK")
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
pip_quiet() {  # pip without the noise of this machine's file:// mirrors lacking a package
    # pipefail: the pipeline fails (and set -e stops the script) exactly when pip fails
    "${PIP[@]}" "$@" 2>&1 | { grep -v "^WARNING: Location 'file://" || true; }
}

phase "venv"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
# mmcv's setup.py imports pkg_resources, removed in setuptools 81.
pip_quiet install -q "${constraints[@]}" "setuptools<81" wheel

phase "python packages"
pip_quiet install -q "${constraints[@]}" -r "$ROOT/requirements/base.txt"

phase "mmcv wheel"
TORCH_VERSION=$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')
PY_TAG=$("$VENV/bin/python" -c 'import sys, platform; print(f"cp{sys.version_info[0]}{sys.version_info[1]}-{platform.machine()}")')
PATCH_HASH=$(sha256sum "$ROOT/scripts/apply_patches.py" | cut -c1-12)
KEY="mmcv-$MMCV_VERSION-torch-$TORCH_VERSION-$PY_TAG-patch-$PATCH_HASH"
WHEEL_DIR=$CACHE/wheels/$KEY
if ! ls "$WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; then
    echo "setup: building mmcv $MMCV_VERSION with ops (~12 min on 2 cores), cache key $KEY"
    BUILD=$(mktemp -d)
    trap 'rm -rf "$BUILD"' EXIT
    # --no-build-isolation: mmcv's setup.py needs the venv's torch even to read its metadata.
    pip_quiet download -q --no-deps --no-binary :all: --no-build-isolation \
        -d "$BUILD" "mmcv==$MMCV_VERSION"
    actual=$(sha256sum "$BUILD/mmcv-$MMCV_VERSION.tar.gz" | cut -d' ' -f1)
    if [ "$actual" != "$MMCV_SDIST_SHA256" ]; then
        echo "setup: mmcv-$MMCV_VERSION.tar.gz checksum mismatch: expected $MMCV_SDIST_SHA256, got $actual" >&2
        exit 1
    fi
    tar -xzf "$BUILD/mmcv-$MMCV_VERSION.tar.gz" -C "$BUILD"
    "$VENV/bin/python" "$ROOT/scripts/apply_patches.py" mmcv-source "$BUILD/mmcv-$MMCV_VERSION"
    MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
        pip_quiet wheel -q --no-deps --no-build-isolation -w "$BUILD/wheel" "$BUILD/mmcv-$MMCV_VERSION"
    mkdir -p "$CACHE/wheels"
    # Rename into place so an interrupted build never leaves a half-written cache entry.
    mkdir -p "$BUILD/stage" && mv "$BUILD"/wheel/mmcv-*.whl "$BUILD/stage/"
    rm -rf "$WHEEL_DIR" && mv "$BUILD/stage" "$WHEEL_DIR"
fi
pip_quiet install -q --no-deps "$WHEEL_DIR"/mmcv-*.whl

phase "openmmlab packages"
pip_quiet install -q --no-deps "${constraints[@]}" -r "$ROOT/requirements/openmmlab.txt"
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$VENV/bin/python" "$ROOT/scripts/apply_patches.py" site-packages "$SITE"

phase "frozenbench (editable)"
pip_quiet install -q --no-deps --no-build-isolation -e "$ROOT"

phase "import check"
# mmcv's ops go through frozenbench's routes to torch / torchvision kernels (the wheel has CPU
# kernels only): run each forward and backward on the CPU, and on the GPU where there is one.
"$VENV/bin/python" - <<'EOF'
import mmcv.ops, mmdet, mmseg, mmaction.models, frozenbench  # noqa: F401
import torch
from frozenbench.openmmlab.ops import check_ops
for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
    print(f"setup: mmcv ops on {device}: {check_ops(device)}")
EOF

echo "$HASH" > "$STAMP"
phase ""
echo "setup: done in $((SECONDS - start_all))s"
