#!/usr/bin/env bash
# A wheelhouse for machines without network (GPU compute nodes): run this on a connected
# machine, copy the folder over, then `scripts/setup.sh --offline DIR [--system-torch]` there.
#
# It holds every wheel the project needs beyond the torch stack (lock.txt's torch,
# torchvision, triton, nvidia-*, cuda-*: the node's container or module brings those),
# at lock.txt's versions, for the target Python and platform; sdists (deepspeed, ...) are
# turned into wheels with `pip wheel`; mmcv 2.1.0 stays an sdist (setup.sh compiles its
# ops against the node's torch), checked against the sha256 that setup.sh pins. With
# --with-torch it also holds the torch stack of the chosen CUDA build (~3-4 GB more).
# SHA256SUMS lists every file; WHEELHOUSE.txt records what it was built for and its size.
#
# Usage: scripts/wheelhouse.sh [--dest DIR] [--python-version 3.11]
#            [--platform manylinux_2_28_x86_64] [--cuda 13|12] [--with-torch]
# (make wheelhouse WHEELHOUSE=DIR PYTHON_VERSION=3.11 PLATFORM=... CUDA=12 WITH_TORCH=1)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEST=${WHEELHOUSE:-$ROOT/wheelhouse}
TARGET_PY=${PYTHON_VERSION:-3.11}
PLATFORM=${PLATFORM:-manylinux_2_28_x86_64}
CUDA_CHOICE=${CUDA:-13}
WITH_TORCH=${WITH_TORCH:-0}
# The interpreter that runs pip here; it need not be the target version unless an sdist
# compiles code (then the wheel it builds would not fit the target, which is checked below).
PYTHON=${PYTHON:-python3}

usage() { sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case $1 in
        --dest) DEST=${2:?--dest needs a folder}; shift 2 ;;
        --python-version) TARGET_PY=${2:?--python-version needs a version such as 3.11}; shift 2 ;;
        --platform) PLATFORM=${2:?--platform needs a tag such as manylinux_2_28_x86_64}; shift 2 ;;
        --cuda) CUDA_CHOICE=${2:?--cuda needs 13 or 12}; shift 2 ;;
        --with-torch) WITH_TORCH=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "wheelhouse: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
case $CUDA_CHOICE in
    12 | 13) ;;
    *) echo "wheelhouse: --cuda (or CUDA) must be 13 or 12, got '$CUDA_CHOICE'" >&2; exit 2 ;;
esac
case $WITH_TORCH in
    0 | 1) ;;
    *) echo "wheelhouse: WITH_TORCH must be 0 or 1, got '$WITH_TORCH'" >&2; exit 2 ;;
esac
if ! [[ $TARGET_PY =~ ^3\.[0-9]+$ ]]; then
    echo "wheelhouse: --python-version (or PYTHON_VERSION) must look like 3.11, got '$TARGET_PY'" >&2
    exit 2
fi

LOCK=$ROOT/requirements/lock.txt
# One source for mmcv's version and checksum: the values setup.sh verifies.
MMCV_VERSION=$(sed -n 's/^MMCV_VERSION=//p' "$ROOT/scripts/setup.sh")
MMCV_SDIST_SHA256=$(sed -n 's/^MMCV_SDIST_SHA256=//p' "$ROOT/scripts/setup.sh")
if [ -z "$MMCV_VERSION" ] || [ -z "$MMCV_SDIST_SHA256" ]; then
    echo "wheelhouse: cannot read MMCV_VERSION / MMCV_SDIST_SHA256 from scripts/setup.sh" >&2
    exit 1
fi
# lock.txt lines that belong to the torch build (same pattern as setup.sh's TORCH_STACK_RE).
TORCH_STACK_RE='^(torch|torchvision|triton|nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+)=='

# Replacing a folder is only safe when it is one of ours.
if [ -e "$DEST" ] && [ -n "$(ls -A "$DEST" 2>/dev/null)" ] && [ ! -f "$DEST/WHEELHOUSE.txt" ]; then
    echo "wheelhouse: refusing to replace $DEST: it is not empty and holds no WHEELHOUSE.txt" >&2
    exit 1
fi

# pip (23.x) takes --platform literally: a manylinux_2_28 machine also runs wheels tagged for
# older glibc (manylinux_2_17 = manylinux2014, ...), so name them all.
platform_args=()
if [[ $PLATFORM =~ ^manylinux_2_([0-9]+)_(.+)$ ]]; then
    glibc_minor=${BASH_REMATCH[1]} arch=${BASH_REMATCH[2]}
    for ((minor = glibc_minor; minor >= 5; minor--)); do
        platform_args+=(--platform "manylinux_2_${minor}_$arch")
    done
    ((glibc_minor >= 17)) && platform_args+=(--platform "manylinux2014_$arch")
    ((glibc_minor >= 12)) && platform_args+=(--platform "manylinux2010_$arch")
    platform_args+=(--platform "manylinux1_$arch")
else
    platform_args=(--platform "$PLATFORM")
fi
target_args=(--python-version "$TARGET_PY" --implementation cp "${platform_args[@]}")

start=$SECONDS
WORK=$(mktemp -d)
# Staged beside DEST (same filesystem, and /tmp may be too small for it), swapped in at the end.
STAGE=${DEST%/}.partial
trap 'rm -rf "$WORK" "$STAGE"' EXIT
rm -rf "$STAGE" && mkdir -p "$STAGE"

# The packages to fetch: lock.txt's pins without the torch stack (or with the chosen one),
# the OpenMMLab packages setup.sh installs with --no-deps, and what setup.sh builds with.
grep -v -E '^[[:space:]]*(#|$)' "$LOCK" | grep -v -i -E "$TORCH_STACK_RE" >"$WORK/pins.txt"
if [ "$WITH_TORCH" = 1 ]; then
    if [ "$CUDA_CHOICE" = 13 ]; then
        grep -i -E "$TORCH_STACK_RE" "$LOCK" >>"$WORK/pins.txt"
    else
        grep -v -E '^[[:space:]]*(#|$)' "$ROOT/requirements/cuda12.txt" >>"$WORK/pins.txt"
    fi
fi
while read -r pin; do
    name=${pin%%[=<>!~ ]*}
    grep -q -i -E "^${name}==" "$WORK/pins.txt" || echo "$pin" >>"$WORK/pins.txt"
done < <(grep -v -E '^[[:space:]]*(#|$)' "$ROOT/requirements/openmmlab.txt")
# setuptools<81: mmcv's setup.py imports pkg_resources; wheel: the --no-build-isolation builds.
printf '%s\n' "setuptools<81" wheel >>"$WORK/pins.txt"

quiet() {  # pip without the noise of file:// mirrors lacking a package
    "$@" 2>&1 | { grep -v "^WARNING: Location 'file://" || true; }
}
echo "wheelhouse: $(wc -l <"$WORK/pins.txt") packages for Python $TARGET_PY on $PLATFORM" \
    "(torch stack: $([ "$WITH_TORCH" = 1 ] && echo "CUDA $CUDA_CHOICE" || echo "not included"))"

# --no-deps: the pins are the whole closure already (lock.txt is a pip freeze), and resolving
# would pull torch in through timm / deepspeed. --prefer-binary: an sdist only where no wheel fits.
quiet "$PYTHON" -m pip --disable-pip-version-check download -q --no-deps --prefer-binary \
    "${target_args[@]}" -d "$STAGE" -r "$WORK/pins.txt"

# A private builder venv with setuptools<81 (mmcv's metadata step imports pkg_resources).
"$PYTHON" -m venv "$WORK/builder"
BPIP=("$WORK/builder/bin/python" -m pip --disable-pip-version-check)
quiet "${BPIP[@]}" install -q --no-index --find-links "$STAGE" "setuptools<81" wheel

builder_py=$("$WORK/builder/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
shopt -s nullglob
for sdist in "$STAGE"/*.tar.gz "$STAGE"/*.zip; do
    base=$(basename "$sdist")
    base=${base%.tar.gz}
    base=${base%.zip}
    name=${base%-*} version=${base##*-}
    echo "wheelhouse: building a wheel from the sdist of $name $version"
    before=$(LC_ALL=C ls "$STAGE")
    # From the index by name (not the file): pip's wheel cache then serves later runs.
    quiet "${BPIP[@]}" wheel -q --no-deps -w "$STAGE" "$name==$version"
    built=$(LC_ALL=C comm -13 <(echo "$before") <(LC_ALL=C ls "$STAGE") | grep '\.whl$' || true)
    if [ -z "$built" ]; then
        echo "wheelhouse: pip wheel $name==$version wrote no wheel" >&2
        exit 1
    fi
    if [[ $built != *-none-any.whl ]] && [ "$builder_py" != "$TARGET_PY" ]; then
        echo "wheelhouse: $name $version has no wheel for Python $TARGET_PY and its sdist compiles code" \
            "($built, built by Python $builder_py): run this script with PYTHON=python$TARGET_PY" >&2
        exit 1
    fi
    rm "$sdist"
done

# mmcv: the sdist itself, checked against setup.sh's pin. --no-build-isolation: its metadata
# step needs setuptools<81 (the builder's), and finds no torch there, so it builds nothing.
mkdir -p "$WORK/mmcv"
quiet "${BPIP[@]}" download -q --no-deps --no-binary :all: --no-build-isolation \
    -d "$WORK/mmcv" "mmcv==$MMCV_VERSION"
actual=$(sha256sum "$WORK/mmcv/mmcv-$MMCV_VERSION.tar.gz" | cut -d' ' -f1)
if [ "$actual" != "$MMCV_SDIST_SHA256" ]; then
    echo "wheelhouse: mmcv-$MMCV_VERSION.tar.gz checksum mismatch: expected $MMCV_SDIST_SHA256" \
        "(scripts/setup.sh), got $actual" >&2
    exit 1
fi
mv "$WORK/mmcv/mmcv-$MMCV_VERSION.tar.gz" "$STAGE/"

files=$(ls "$STAGE" | wc -l)
size_bytes=$(du -sb "$STAGE" | cut -f1)
size_mb=$((size_bytes / 1000000))
{
    echo "frozenbench wheelhouse (scripts/wheelhouse.sh); install with: scripts/setup.sh --offline DIR"
    echo "python-version: $TARGET_PY"
    echo "platform: $PLATFORM"
    echo "torch-stack: $([ "$WITH_TORCH" = 1 ] && echo "cuda$CUDA_CHOICE" || echo none)"
    echo "lock-sha256: $(sha256sum "$LOCK" | cut -d' ' -f1)"
    echo "files: $files"
    echo "size-mb: $size_mb"
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m) with $("$PYTHON" -m pip --version | cut -d' ' -f1-2)"
} >"$STAGE/WHEELHOUSE.txt"
(cd "$STAGE" && sha256sum -- * >"$WORK/SHA256SUMS" && mv "$WORK/SHA256SUMS" SHA256SUMS)

# Swap the finished folder in, so an interrupted run never leaves a half wheelhouse behind.
rm -rf "$DEST"
mv "$STAGE" "$DEST"
echo "wheelhouse: $DEST: $files files, $size_mb MB, in $((SECONDS - start))s"
