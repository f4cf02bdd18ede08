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
# --node keeps only what a GPU node running the training, the evaluation and bench/gpu_smoke.py
# needs beside its torch and torchvision: the closure of requirements/node.txt (no snakemake,
# dvc, tests, linters; docs/gpu-node.md). --from DIR takes the wheels from a wheelhouse built
# before for the same Python, platform and lock instead of downloading them again.
# --present FILE (with --node): the node's own packages (its `pip freeze`, `pip list`, or one
# name a line) are left out, and what they bring is theirs to bring; opencv-python-headless
# stands for opencv-python. Each one left out gets a from-node line in WHEELHOUSE.txt: the
# node's version (where FILE gives it) beside lock.txt's pin; setup.sh installs such a
# wheelhouse with --no-deps and reports every declared requirement the node leaves unmet.
#
# Usage: scripts/wheelhouse.sh [--dest DIR] [--python-version 3.11]
#            [--platform manylinux_2_28_x86_64] [--cuda 13|12] [--with-torch] [--node]
#            [--present FILE] [--from DIR]
# (make wheelhouse WHEELHOUSE=DIR PYTHON_VERSION=3.11 PLATFORM=... CUDA=12 WITH_TORCH=1 NODE=1 PRESENT=FILE)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEST=${WHEELHOUSE:-$ROOT/wheelhouse}
TARGET_PY=${PYTHON_VERSION:-3.11}
PLATFORM=${PLATFORM:-manylinux_2_28_x86_64}
CUDA_CHOICE=${CUDA:-13}
WITH_TORCH=${WITH_TORCH:-0}
NODE=${NODE:-0}
PRESENT=${PRESENT:-}
FROM=
# The interpreter that runs pip here; it need not be the target version unless an sdist
# compiles code (then the wheel it builds would not fit the target, which is checked below).
PYTHON=${PYTHON:-python3}

usage() { sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case $1 in
        --dest) DEST=${2:?--dest needs a folder}; shift 2 ;;
        --python-version) TARGET_PY=${2:?--python-version needs a version such as 3.11}; shift 2 ;;
        --platform) PLATFORM=${2:?--platform needs a tag such as manylinux_2_28_x86_64}; shift 2 ;;
        --cuda) CUDA_CHOICE=${2:?--cuda needs 13 or 12}; shift 2 ;;
        --with-torch) WITH_TORCH=1; shift ;;
        --node) NODE=1; shift ;;
        --from) FROM=${2:?--from needs a wheelhouse folder}; shift 2 ;;
        --present) PRESENT=${2:?--present needs a file, a pip freeze of the node}; shift 2 ;;
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
case $NODE in
    0 | 1) ;;
    *) echo "wheelhouse: NODE must be 0 or 1, got '$NODE'" >&2; exit 2 ;;
esac
if [ "$NODE" = 1 ] && [ "$WITH_TORCH" = 1 ]; then
    echo "wheelhouse: --node is for a node that brings its own torch: drop --with-torch (WITH_TORCH)" >&2
    exit 2
fi
if [ -n "$PRESENT" ]; then
    if [ "$NODE" != 1 ]; then
        echo "wheelhouse: --present (PRESENT) leaves the node's own packages out of a node wheelhouse: add --node" >&2
        exit 2
    fi
    if [ ! -f "$PRESENT" ]; then
        echo "wheelhouse: --present $PRESENT: no such file" >&2
        exit 2
    fi
    PRESENT=$(realpath "$PRESENT")
fi
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

if [ -n "$FROM" ]; then
    # The same files as a download would bring, when FROM was built for this very target.
    from_info() { sed -n "s/^$1: //p" "$FROM/WHEELHOUSE.txt" 2>/dev/null; }
    for want in "python-version:$TARGET_PY" "platform:$PLATFORM" "torch-stack:none" \
        "lock-sha256:$(sha256sum "$LOCK" | cut -d' ' -f1)"; do
        have=$(from_info "${want%%:*}")
        if [ "$have" != "${want#*:}" ]; then
            echo "wheelhouse: --from $FROM: its ${want%%:*} is '$have', this build needs '${want#*:}'" >&2
            exit 1
        fi
    done
    if [ "$(from_info subset)" = node ]; then
        echo "wheelhouse: --from $FROM: a --node wheelhouse lacks wheels a full one has: name a full one" >&2
        exit 1
    fi
    if ! (cd "$FROM" && sha256sum --quiet -c SHA256SUMS) >/dev/null 2>&1; then
        echo "wheelhouse: --from $FROM: SHA256SUMS does not match its files" >&2
        exit 1
    fi
    mkdir -p "$WORK/mmcv"
    # hard links where FROM is on the same filesystem: nothing is copied, pruning unlinks only ours
    cp -l "$FROM"/*.whl "$STAGE/" 2>/dev/null || cp "$FROM"/*.whl "$STAGE/"
    cp "$FROM/mmcv-$MMCV_VERSION.tar.gz" "$WORK/mmcv/"
    echo "wheelhouse: $(ls "$STAGE" | wc -l) wheels from $FROM, nothing downloaded"
else
    # --no-deps: the pins are the whole closure already (lock.txt is a pip freeze), and resolving
    # would pull torch in through timm / deepspeed. --prefer-binary: an sdist only where no wheel fits.
    quiet "$PYTHON" -m pip --disable-pip-version-check download -q --no-deps --prefer-binary \
        "${target_args[@]}" -d "$STAGE" -r "$WORK/pins.txt"
fi

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

# --node: keep the closure of requirements/node.txt over the wheels' declared dependencies
# (markers read for the target Python and platform) and the OpenMMLab packages themselves (setup
# installs those with --no-deps: their declared pins fight). What torch and torchvision need is
# kept too where the closure reaches it (numpy, pillow, typing-extensions, ...): a node's own
# copy may be older than another package needs, and offline pip cannot fetch a newer one.
# setuptools<81 and wheel stay for setup's mmcv build.
# --present: a package the node lists ends the walk there (the node's copy and whatever it
# needs are the node's), and is written down as a from-node line instead of shipped.
if [ "$NODE" = 1 ]; then
    # the machine of a platform tag: manylinux_2_28_x86_64 -> x86_64, manylinux2014_aarch64 -> aarch64
    machine=$(sed -E 's/^(manylinux_[0-9]+_[0-9]+|manylinux[0-9]+|musllinux_[0-9]+_[0-9]+|linux)_//' <<<"$PLATFORM")
    "$WORK/builder/bin/python" - "$STAGE" "$TARGET_PY" "$machine" \
        "$ROOT/requirements/node.txt" "$ROOT/requirements/openmmlab.txt" "$LOCK" "${PRESENT:-}" \
        "$WORK/from-node.txt" <<'EOF'
import re, sys, zipfile
from pathlib import Path
from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename
from pip._vendor.packaging.version import InvalidVersion, Version

stage, python, machine = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
lock, present_file, from_node_out = Path(sys.argv[6]), sys.argv[7], Path(sys.argv[8])
FROM_TORCH = {"torch", "torchvision", "triton"}  # the node's (setup.sh --system-torch)
KEEP = {"setuptools", "wheel"}  # mmcv's build needs setuptools<81, whatever the node has
# Distributions that provide another's modules: mmcv and mmengine declare opencv-python but
# only import cv2, which every OpenCV build on PyPI provides.
PROVIDED_BY = {"opencv-python": ("opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")}
env = {"python_version": python, "python_full_version": f"{python}.0", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": machine, "os_name": "posix",
       "implementation_name": "cpython", "platform_python_implementation": "CPython"}
wheels = {canonicalize_name(parse_wheel_filename(w.name)[0]): w for w in stage.glob("*.whl")}

def requires(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        meta = next(n for n in archive.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
        headers = archive.read(meta).decode("utf-8").split("\n\n", 1)[0]
    return [line.split(":", 1)[1].strip() for line in headers.splitlines() if line.startswith("Requires-Dist:")]

def names(path: str) -> list[Requirement]:
    lines = Path(path).read_text().splitlines()
    return [Requirement(line.strip()) for line in lines if line.strip() and not line.lstrip().startswith("#")]

def read_present(path: str) -> dict[str, tuple[str, str | None]]:
    """name -> (the node's distribution, its version or None), from pip freeze, pip list or names."""
    found: dict[str, tuple[str, str | None]] = {}
    row = re.compile(r"^(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?:\[[^\]]*\])?\s*"
                     r"(?:(?:===?|\s)\s*(?P<version>[^\s;]+)(?:\s+\S.*)?|@\s*\S.*)?$")
    for number, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        # comments, pip options (-e ..., --index-url ...) and pip list's two header lines
        if not line or line.startswith(("#", "-")) or re.fullmatch(r"(?i)package\s+version(\s+.*)?", line):
            continue
        match = row.match(line)
        version = match and match["version"]
        try:
            version and Version(version)
        except InvalidVersion:
            match = None
        if not match:
            sys.exit(f"wheelhouse: --present {path}, line {number}: cannot read {raw.strip()!r}"
                     " (expected NAME, NAME==VERSION as pip freeze writes, or NAME VERSION as pip list does)")
        found[canonicalize_name(match["name"])] = (match["name"], version)
    for name, providers in PROVIDED_BY.items():
        if name not in found:
            for provider in providers:
                if provider in found:
                    found[name] = found[provider]
                    break
    return found

pins = {}
for line in lock.read_text().splitlines():
    if "==" in line and not line.lstrip().startswith("#"):
        name, version = line.split(";", 1)[0].split("==", 1)
        pins[canonicalize_name(name.strip())] = version.strip()
present = read_present(present_file) if present_file else {}
todo = [(canonicalize_name(req.name), tuple(sorted(req.extras))) for req in names(sys.argv[4])]
openmmlab = {canonicalize_name(req.name) for req in names(sys.argv[5])}
# Never the node's: the OpenMMLab packages and mmengine are pinned and patched (apply_patches.py).
ours = openmmlab | {"mmengine", "mmcv"} | KEEP
seen, closure, absent, from_node = set(), set(), openmmlab - set(wheels), set()
while todo:
    name, extras = todo.pop()
    if (name, extras) in seen:
        continue
    seen.add((name, extras))
    if name in present and name not in ours and name not in FROM_TORCH:
        from_node.add(name)
        continue
    if name not in wheels:
        absent.add(name)
        continue
    closure.add(name)
    for text in requires(wheels[name]):
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({**env, "extra": e}) for e in ("", *extras)):
            todo.append((canonicalize_name(req.name), tuple(sorted(req.extras))))
missing = {name for name in absent - FROM_TORCH - {"mmcv"} if not name.startswith(("nvidia-", "cuda-"))}
if missing:  # a name the lock lacks would fail on the node, not here: say it here
    sys.exit(f"wheelhouse: --node: requirements/node.txt needs {sorted(missing)}, which no wheel here provides")
keep = (closure - FROM_TORCH) | openmmlab | KEEP
for name, wheel in sorted(wheels.items()):
    if name not in keep:
        wheel.unlink()
left = sorted(set(wheels) - keep)
with from_node_out.open("w") as out:
    for name in sorted(from_node):
        dist, version = present[name]
        pin = pins.get(name) or (parse_wheel_filename(wheels[name].name)[1] if name in wheels else None)
        line = f"from-node: {name}: kept from the node"
        line += f" as {dist}" if canonicalize_name(dist) != name else ""
        line += f" at {version}" if version else " at a version the list does not give"
        line += f", pinned {pin}" if pin else ", not pinned by lock.txt"
        if version and pin and Version(version) != Version(pin):
            line += " (another version: setup.sh reports the requirements it leaves unmet)"
        out.write(line + "\n")
ignored = sorted(ours & set(present))
print(f"wheelhouse: --node: {len(keep & set(wheels))} wheels kept, {len(left)} left out (the workflow, tests,"
      f" linters{', the node' + chr(39) + 's own packages' if present_file else ''})")
if present_file:
    print(f"wheelhouse: --present: {len(from_node)} packages from the node instead of wheels: {', '.join(sorted(from_node))}")
if ignored:
    print(f"wheelhouse: --present: shipped all the same (pinned and patched here): {', '.join(ignored)}")
EOF
fi

# mmcv: the sdist itself, checked against setup.sh's pin. --no-build-isolation: its metadata
# step needs setuptools<81 (the builder's), and finds no torch there, so it builds nothing.
mkdir -p "$WORK/mmcv"
if [ -z "$FROM" ]; then
    quiet "${BPIP[@]}" download -q --no-deps --no-binary :all: --no-build-isolation \
        -d "$WORK/mmcv" "mmcv==$MMCV_VERSION"
fi
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
    echo "subset: $([ "$NODE" = 1 ] && echo node || echo full)"
    if [ -n "$PRESENT" ]; then
        # setup.sh reads these: what it must find on the node instead of here
        echo "present-list: $(basename "$PRESENT") (sha256 $(sha256sum "$PRESENT" | cut -d' ' -f1)):" \
            "$(wc -l <"$WORK/from-node.txt") packages from the node"
        cat "$WORK/from-node.txt"
    fi
    echo "files: $files"
    echo "size-mb: $size_mb"
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m) with $("$PYTHON" -m pip --version | cut -d' ' -f1-2)"
} >"$STAGE/WHEELHOUSE.txt"
(cd "$STAGE" && sha256sum -- * >"$WORK/SHA256SUMS" && mv "$WORK/SHA256SUMS" SHA256SUMS)

# Swap the finished folder in, so an interrupted run never leaves a half wheelhouse behind.
rm -rf "$DEST"
mv "$STAGE" "$DEST"
echo "wheelhouse: $DEST: $files files, $size_mb MB, in $((SECONDS - start))s"
