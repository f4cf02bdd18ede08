#!/usr/bin/env bash
# One idempotent setup: .venv with the pinned stack, mmcv 2.1.0 built with ops
# (patched for torch 2.14), the OpenMMLab packages, and frozenbench in editable mode.
#
# A second run with unchanged inputs and options only checks a stamp and exits within seconds.
# The mmcv wheel is cached under $FROZENBENCH_CACHE/wheels keyed by its inputs (mmcv version,
# torch version + CUDA + git commit, Python, patch), so only a fresh machine pays for the
# ~12 minute build (2 cores).
#
# Usage: scripts/setup.sh [--offline DIR] [--system-torch] [--cuda 13|12] [--no-mmcv-build]
#        scripts/setup.sh --check-driver [--cuda 13|12 | --system-torch]
#        scripts/setup.sh --print-stamp [options]
#   --offline DIR    no network: every package from the wheelhouse DIR (scripts/wheelhouse.sh;
#                    pip --no-index --find-links DIR, no pip config), mmcv's sdist from DIR
#                    (sha256-checked); SHA256SUMS in DIR is checked first. A node wheelhouse
#                    (wheelhouse.sh --node) installs requirements/node.txt instead of base.txt;
#                    one built with --present leaves packages to the node (its from-node
#                    lines): those must be there, its own wheels go in with --no-deps, and
#                    every declared requirement the node's versions leave unmet is listed
#   --system-torch   use the torch and torchvision the Python already imports (NGC container,
#                    site module): the venv is created with --system-site-packages and pip
#                    installs neither; mmcv's ops are compiled against that torch
#   --cuda 13|12     which torch build to install (also CUDA=12): 13 (default) = torch 2.14.1 +
#                    torchvision 0.29.1 (CUDA 13.0, driver >= 580.65.06); 12 = torch 2.9.1 +
#                    torchvision 0.24.1 (CUDA 12.8, driver >= 525.60.13); requirements/cuda12.txt
#   --no-mmcv-build  stop (exit 3) instead of compiling mmcv when no cached wheel fits this
#                    torch (also FROZENBENCH_NO_MMCV_BUILD=1; CI)
#   --check-driver   only compare nvidia-smi's driver with what the chosen torch build needs
#                    (exit 1 when older), then exit
#   --print-stamp    print the stamp this setup writes for these options, then exit
# Environment: PYTHON (interpreter, default python3.11), FROZENBENCH_VENV (default .venv),
# FROZENBENCH_CACHE (default ~/.cache/frozenbench), MAX_JOBS (mmcv compile jobs, default nproc).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$(realpath -m "${FROZENBENCH_VENV:-$ROOT/.venv}")
PYTHON=${PYTHON:-python3.11}
CACHE=${FROZENBENCH_CACHE:-$HOME/.cache/frozenbench}
LOCK=$ROOT/requirements/lock.txt
MMCV_VERSION=2.1.0
# sha256 of mmcv-2.1.0.tar.gz as published on PyPI; verified before the build.
MMCV_SDIST_SHA256=d387bcab66b467479b6660310e23746cfc79c6e57acf04094680adb499a5cd3f
# lock.txt lines that belong to the torch build (scripts/wheelhouse.sh uses the same pattern).
TORCH_STACK_RE='^(torch|torchvision|triton|nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+)=='

usage() { sed -n '10,32p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
OFFLINE_DIR=
SYSTEM_TORCH=0
CUDA_CHOICE=${CUDA:-13}
cuda_named_by=CUDA
NO_MMCV_BUILD=${FROZENBENCH_NO_MMCV_BUILD:-0}
ACTION=setup
while [ $# -gt 0 ]; do
    case $1 in
        --offline)
            OFFLINE_DIR=${2:-}
            if [ -z "$OFFLINE_DIR" ] || [[ $OFFLINE_DIR == --* ]]; then
                echo "setup: --offline needs the wheelhouse folder (scripts/wheelhouse.sh writes one)" >&2
                exit 2
            fi
            shift 2
            ;;
        --system-torch) SYSTEM_TORCH=1; shift ;;
        --cuda) CUDA_CHOICE=${2:-}; cuda_named_by=--cuda; shift $(($# > 1 ? 2 : 1)) ;;
        --no-mmcv-build) NO_MMCV_BUILD=1; shift ;;
        --check-driver) ACTION=check-driver; shift ;;
        --print-stamp) ACTION=print-stamp; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "setup: unknown option '$1' (see scripts/setup.sh --help)" >&2; exit 2 ;;
    esac
done
case $CUDA_CHOICE in
    12 | 13) ;;
    *) echo "setup: $cuda_named_by must be 13 or 12, got '$CUDA_CHOICE'" >&2; exit 2 ;;
esac
if [ "$SYSTEM_TORCH" = 1 ] && { [ "$cuda_named_by" = --cuda ] || [ -n "${CUDA:-}" ]; }; then
    echo "setup: $cuda_named_by and --system-torch exclude each other: the system's torch decides" \
        "the CUDA version (unset CUDA / drop --cuda)" >&2
    exit 2
fi
if [ -n "$OFFLINE_DIR" ]; then
    if [ ! -d "$OFFLINE_DIR" ]; then
        echo "setup: --offline $OFFLINE_DIR: no such folder" >&2
        exit 2
    fi
    OFFLINE_DIR=$(cd "$OFFLINE_DIR" && pwd)
fi

# Minimum NVIDIA Linux driver per CUDA major version of a torch build: CUDA 13.0 needs
# 580.65.06; 12.x and 11.x builds run from 525.60.13 / 450.80.02 on through CUDA's minor-version
# compatibility (the driver tables of NVIDIA's CUDA release notes; docs/install.md).
min_driver() {
    case $1 in
        13) echo 580.65.06 ;;
        12) echo 525.60.13 ;;
        11) echo 450.80.02 ;;
        *) echo "" ;;
    esac
}

# The python that sees the torch this setup will use (before the venv exists: the base one).
torch_python() { if [ -x "$VENV/bin/python" ]; then echo "$VENV/bin/python"; else echo "$PYTHON"; fi; }

# "version cuda git" of the importable torch, read from torch/version.py without importing
# torch (a stamp check must stay instant); "missing" when there is none.
torch_identity() {
    "$(torch_python)" - <<'EOF'
import importlib.util, pathlib, re
spec = importlib.util.find_spec("torch")
if spec is None or spec.origin is None:
    print("missing")
else:
    text = (pathlib.Path(spec.origin).parent / "version.py").read_text()
    get = lambda key: (re.search(rf"^{key}\s*(?::[^=]*)?=\s*'([^']*)'", text, re.M) or [None, "none"])[1]
    print(get("__version__"), get("cuda"), get("git_version")[:12])
EOF
}

# The torch build's CUDA major version: the chosen lock's, or the system torch's.
torch_cuda_major() {
    if [ "$SYSTEM_TORCH" = 1 ]; then
        local cuda
        cuda=$(torch_identity | cut -d' ' -f2)
        [ "$cuda" = none ] || [ -z "$cuda" ] && echo "" || echo "${cuda%%.*}"
    else
        echo "$CUDA_CHOICE"
    fi
}

# Warn (setup) or fail (--check-driver) when nvidia-smi's driver is older than the build needs.
check_driver() {
    local major need have hint
    major=$(torch_cuda_major)
    need=$(min_driver "$major")
    if [ -z "$need" ]; then
        echo "setup: the torch build has no CUDA version this script knows: driver not checked"
        return 0
    fi
    if ! command -v nvidia-smi >/dev/null 2>&1; then
        echo "setup: no nvidia-smi here: driver not checked (the CUDA $major torch build needs" \
            ">= $need; run scripts/setup.sh --check-driver on a GPU node)"
        return 0
    fi
    # One line per GPU (one driver per node); sed reads them all, where head would leave
    # nvidia-smi to die of SIGPIPE and pipefail to stop the script.
    have=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | sed -n 1p | tr -d '[:space:]')
    if ! [[ $have =~ ^[0-9]+(\.[0-9]+)+$ ]]; then
        echo "setup: nvidia-smi reported no driver version ('$have'): driver not checked"
        return 0
    fi
    if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | sed -n 1p)" = "$need" ]; then
        echo "setup: NVIDIA driver $have >= $need, which the CUDA $major torch build needs"
        return 0
    fi
    if [ "$SYSTEM_TORCH" = 1 ]; then
        hint="use a container or module built for an older CUDA, or a newer driver"
    elif [ "$major" = 13 ]; then
        hint="use the CUDA 12 build (--cuda 12: torch 2.9.1, driver >= 525.60.13) or a newer driver"
    else
        hint="this node needs a newer driver"
    fi
    echo "setup: WARNING: NVIDIA driver $have is older than $need, which the CUDA $major torch" \
        "build needs: torch will not see the GPU; $hint" >&2
    return 1
}

if [ "$ACTION" = check-driver ]; then
    check_driver
    exit $?
fi

# "node" for a wheelhouse.sh --node one (requirements/node.txt), "full" for any other.
wheelhouse_subset() { sed -n 's/^subset: //p' "$OFFLINE_DIR/WHEELHOUSE.txt" 2>/dev/null | grep -x node || echo full; }
# A node wheelhouse built with --present (wheelhouse.sh) lists what it leaves to the node.
wheelhouse_from_node() { [ -n "$OFFLINE_DIR" ] && grep -q '^from-node: ' "$OFFLINE_DIR/WHEELHOUSE.txt" 2>/dev/null; }

inputs_hash() {
    cat "$ROOT/requirements/"*.txt "$ROOT/scripts/setup.sh" "$ROOT/scripts/apply_patches.py" \
        "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1
}

# The options that shape the venv enter the stamp; a system torch by its identity, so a
# container or module with another torch sets up again (and builds mmcv for it).
options_line() {
    local torch source
    if [ "$SYSTEM_TORCH" = 1 ]; then
        torch="system $(torch_identity | tr ' ' '/')"
    else
        torch="lock cuda$CUDA_CHOICE"
    fi
    source=index
    [ -n "$OFFLINE_DIR" ] && source=wheelhouse
    [ -n "$OFFLINE_DIR" ] && [ "$(wheelhouse_subset)" = node ] && source=wheelhouse-node
    wheelhouse_from_node && source=wheelhouse-node+node-packages
    echo "options: torch=$torch packages=$source"
}

STAMP=$VENV/.frozenbench-setup
STAMP_TEXT="$(inputs_hash) $(options_line)"
if [ "$ACTION" = print-stamp ]; then
    echo "$STAMP_TEXT"
    exit 0
fi
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_TEXT" ]; then
    echo "setup: up to date ($VENV)"
    exit 0
fi

start_all=$SECONDS
phase_start=$SECONDS
phase() {  # print how long the previous phase took, then name the next one
    local now=$SECONDS
    [ -n "${PHASE:-}" ] && printf 'setup: %-28s %4ds\n' "$PHASE" $((now - phase_start))
    PHASE=${1:-}
    phase_start=$now
}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# Where pip finds packages. Offline: the wheelhouse only, no config file or index settings of
# this machine or user, so a wheelhouse that lacks something fails here, not on the node.
source_args=()
if [ -n "$OFFLINE_DIR" ]; then
    export PIP_CONFIG_FILE=/dev/null
    unset PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_CONSTRAINT PIP_NO_INDEX
    source_args=(--no-index --find-links "$OFFLINE_DIR")
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
pip_quiet() {  # pip without the noise of this machine's file:// mirrors lacking a package
    # pipefail: the pipeline fails (and set -e stops the script) exactly when pip fails
    "${PIP[@]}" "$@" 2>&1 | { grep -v "^WARNING: Location 'file://" || true; }
}

if [ -n "$OFFLINE_DIR" ]; then
    phase "wheelhouse check"
    for required in SHA256SUMS WHEELHOUSE.txt "mmcv-$MMCV_VERSION.tar.gz"; do
        if [ ! -f "$OFFLINE_DIR/$required" ]; then
            echo "setup: --offline $OFFLINE_DIR lacks $required: not a wheelhouse from scripts/wheelhouse.sh" >&2
            exit 1
        fi
    done
    if ! (cd "$OFFLINE_DIR" && sha256sum --quiet -c SHA256SUMS) >"$WORK/sums.log" 2>&1; then
        echo "setup: $OFFLINE_DIR/SHA256SUMS does not match the files (an incomplete copy?):" >&2
        head -n 5 "$WORK/sums.log" >&2
        exit 1
    fi
    info() { sed -n "s/^$1: //p" "$OFFLINE_DIR/WHEELHOUSE.txt"; }
    python_version=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    if [ "$(info python-version)" != "$python_version" ]; then
        echo "setup: the wheelhouse $OFFLINE_DIR is for Python $(info python-version), $PYTHON is" \
            "$python_version: rebuild it with make wheelhouse PYTHON_VERSION=$python_version" >&2
        exit 1
    fi
    if [ "$SYSTEM_TORCH" = 0 ] && [ "$(info torch-stack)" != "cuda$CUDA_CHOICE" ]; then
        echo "setup: the wheelhouse $OFFLINE_DIR holds torch stack '$(info torch-stack)', this setup" \
            "installs the CUDA $CUDA_CHOICE one: use --system-torch (torch from the container or" \
            "module), or rebuild it with make wheelhouse WITH_TORCH=1 CUDA=$CUDA_CHOICE" >&2
        exit 1
    fi
    if wheelhouse_from_node && [ "$SYSTEM_TORCH" = 0 ]; then
        echo "setup: the wheelhouse $OFFLINE_DIR leaves packages to the node's Python (its from-node" \
            "lines, wheelhouse.sh --present): use --system-torch, or a wheelhouse built without --present" >&2
        exit 1
    fi
    echo "setup: wheelhouse $OFFLINE_DIR: $(info files) files, $(info size-mb) MB, checksums match"
fi

phase "venv"
venv_args=()
[ "$SYSTEM_TORCH" = 1 ] && venv_args=(--system-site-packages)
if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PYTHON" -m venv "${venv_args[@]}" "$VENV" 2>"$WORK/venv.log"; then
        # A Python without ensurepip (Debian's, without python3-venv): with --system-torch the
        # venv can run the pip of the Python it sees (below), so it needs none of its own.
        if [ "$SYSTEM_TORCH" = 1 ] && grep -q ensurepip "$WORK/venv.log"; then
            rm -rf "$VENV" && "$PYTHON" -m venv --without-pip "${venv_args[@]}" "$VENV"
        else
            cat "$WORK/venv.log" >&2
            exit 1
        fi
    fi
fi
# A venv made for the other torch source would silently use (or hide) the wrong torch.
sees_system=$(sed -n 's/^include-system-site-packages *= *//p' "$VENV/pyvenv.cfg")
if [ "$SYSTEM_TORCH" = 1 ] && [ "$sees_system" != true ]; then
    echo "setup: $VENV was created without --system-site-packages, so it cannot see the system's" \
        "torch: remove it, or pick another FROZENBENCH_VENV, for --system-torch" >&2
    exit 1
fi
if [ "$SYSTEM_TORCH" = 0 ] && [ "$sees_system" = true ]; then
    echo "setup: $VENV sees the system's site-packages (made by --system-torch): remove it, or" \
        "pick another FROZENBENCH_VENV, to install the locked torch" >&2
    exit 1
fi
if [ "$SYSTEM_TORCH" = 1 ]; then
    # A PYTHON that is a venv itself (the lent GPU machines' /opt/torch/.venv/bin/python3): a venv
    # made from it sees the base interpreter's site-packages, not that venv's, where torch is.
    # A .pth adds them (with their own .pth files: site.addsitedir), after the new venv's own
    # packages and before the base's.
    "$PYTHON" - "$VENV/bin/python" <<'EOF'
import site, subprocess, sys
from pathlib import Path
if sys.prefix != sys.base_prefix:
    purelib = subprocess.run([sys.argv[1], "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    lines = [f"import site; site.addsitedir({path!r})" for path in site.getsitepackages()]
    Path(purelib, "zz-frozenbench-system-venv.pth").write_text("\n".join(lines) + "\n")
    print(f"setup: {sys.executable} is a venv's: the new venv sees its site-packages ({', '.join(site.getsitepackages())})")
EOF
fi
if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    echo "setup: $VENV has no pip, and sees none: $PYTHON needs pip or ensurepip (python3-venv)" >&2
    exit 1
fi

# Requirements and constraints of this torch source (the default: base.txt and lock.txt as is).
# A node wheelhouse holds only node.txt's closure (no workflow, tests or linters).
BASE_REQUIREMENTS=$ROOT/requirements/base.txt
[ -n "$OFFLINE_DIR" ] && [ "$(wheelhouse_subset)" = node ] && BASE_REQUIREMENTS=$ROOT/requirements/node.txt
REQUIREMENTS=$BASE_REQUIREMENTS
CONSTRAINTS=$LOCK
without_torch_pins() { grep -v -i -E '^(torch|torchvision)[[:space:]]*(==|$)' "$BASE_REQUIREMENTS"; }
if [ "$SYSTEM_TORCH" = 1 ]; then
    phase "system torch"
    # Check the torch found, and pin it (and everything it needs) as installed, so nothing pip
    # installs here replaces the container's build.
    if ! "$VENV/bin/python" - "$WORK/system-torch.txt" <<'EOF'; then
import sys
from importlib import metadata
try:
    import torch
    import torchvision
except ImportError as error:
    sys.exit(f"setup: --system-torch: {error} (python {sys.executable}): load the site's torch module, "
             "or run with PYTHON=<the container's python>")
from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name

print(f"setup: system torch {torch.__version__} (CUDA {torch.version.cuda}, git {torch.version.git_version[:12]})"
      f" at {torch.__file__.rsplit('/', 2)[0]}, torchvision {torchvision.__version__}")
seen, todo = set(), [("torch", ()), ("torchvision", ())]
while todo:  # the installed dependency closure of torch and torchvision, extras included
    name, extras = todo.pop()
    name = canonicalize_name(name)
    if (name, extras) in seen:
        continue
    seen.add((name, extras))
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        continue
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({"extra": extra}) for extra in ("", *extras)):
            todo.append((req.name, tuple(sorted(req.extras))))
seen = {name for name, _ in seen}
with open(sys.argv[1], "w") as out:
    out.write("\n".join(sorted(seen)) + "\n")
    out.write(f"torch=={metadata.version('torch')}\ntorchvision=={metadata.version('torchvision')}\n")
EOF
        exit 1
    fi
    # lock.txt without its torch stack and without the pins of what the system torch needs
    # (its own versions stay), plus the system torch and torchvision pinned as installed.
    grep -E '==' "$WORK/system-torch.txt" >"$WORK/system-pins.txt"
    grep -v '==' "$WORK/system-torch.txt" >"$WORK/system-closure.txt"
    if wheelhouse_from_node; then
        # What the wheelhouse left to the node must be here; the node's versions stay (unpinned).
        if ! "$VENV/bin/python" - "$OFFLINE_DIR/WHEELHOUSE.txt" >>"$WORK/system-closure.txt" <<'EOF'; then
import re, sys
from importlib import metadata
absent = []
for line in open(sys.argv[1]):
    match = re.match(r"from-node: (\S+): kept from the node(?: as (\S+))?", line)
    if not match:
        continue
    name, dist = match.groups()
    listed = (re.search(r" at (\d[^\s,]*)", line) or [None, None])[1]
    pin = (re.search(r", pinned (\d[^\s,]*)", line) or [None, None])[1]
    try:
        have = metadata.version(dist or name)
    except metadata.PackageNotFoundError:
        absent.append(dist or name)
        continue
    note = "" if have == pin else f"; lock.txt pins {pin}" if pin else ""
    note += f"; the wheelhouse's list said {listed}" if listed and listed != have else ""
    print(f"setup: from the node: {dist or name} {have}{note}", file=sys.stderr)
    print(name)
if absent:
    sys.exit(f"setup: the wheelhouse {sys.argv[1].rsplit('/', 1)[0]} leaves {', '.join(absent)} to the node"
             " (wheelhouse.sh --present), and this Python has none of it: rebuild the wheelhouse with this"
             " node's pip freeze as --present, or without --present")
EOF
            exit 1
        fi
    fi
    "$VENV/bin/python" - "$LOCK" "$WORK/system-closure.txt" >"$WORK/constraints.txt" <<'EOF'
import re, sys
from pip._vendor.packaging.utils import canonicalize_name
closure = set(open(sys.argv[2]).read().split())
stack = re.compile(r"^(torch|torchvision|triton|nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+)==", re.I)
for line in open(sys.argv[1]):
    name = re.split(r"[=<>!~ ;\[]", line.strip(), maxsplit=1)[0]
    if name and not line.startswith("#") and not stack.match(line) and canonicalize_name(name) not in closure:
        print(line.rstrip())
EOF
    cat "$WORK/system-pins.txt" >>"$WORK/constraints.txt"
    without_torch_pins >"$WORK/requirements.txt"
    REQUIREMENTS=$WORK/requirements.txt
    CONSTRAINTS=$WORK/constraints.txt
elif [ "$CUDA_CHOICE" = 12 ]; then
    # lock.txt with its CUDA 13 torch stack swapped for requirements/cuda12.txt's.
    { grep -v -i -E "$TORCH_STACK_RE" "$LOCK"; grep -v -E '^[[:space:]]*(#|$)' "$ROOT/requirements/cuda12.txt"; } \
        >"$WORK/constraints.txt"
    { without_torch_pins; grep -i -E '^(torch|torchvision)==' "$ROOT/requirements/cuda12.txt"; } >"$WORK/requirements.txt"
    REQUIREMENTS=$WORK/requirements.txt
    CONSTRAINTS=$WORK/constraints.txt
fi
check_driver || true  # a warning here: the venv may be meant for other nodes than this one

PY_TAG=$("$VENV/bin/python" -c 'import sys, platform; print(f"cp{sys.version_info[0]}{sys.version_info[1]}-{platform.machine()}")')
PATCH_HASH=$(sha256sum "$ROOT/scripts/apply_patches.py" | cut -c1-12)
mmcv_wheel_dir() {  # the cache folder for the venv's torch (set MMCV_KEY, MMCV_WHEEL_DIR)
    local version cuda git legacy
    read -r version cuda git < <(torch_identity)
    MMCV_KEY="mmcv-$MMCV_VERSION-torch-$version-cuda$cuda-git$git-$PY_TAG-patch-$PATCH_HASH"
    MMCV_WHEEL_DIR=$CACHE/wheels/$MMCV_KEY
    # Keys before the CUDA and git parts: a torch installed from the lock's PyPI wheels is the
    # same build for the same version, so such a wheel is adopted instead of rebuilt (12 min).
    legacy=$CACHE/wheels/mmcv-$MMCV_VERSION-torch-$version-$PY_TAG-patch-$PATCH_HASH
    if [ "$SYSTEM_TORCH" = 0 ] && ! ls "$MMCV_WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1 &&
        ls "$legacy"/mmcv-*.whl >/dev/null 2>&1; then
        echo "setup: adopting the cached mmcv wheel $(basename "$legacy") as $MMCV_KEY"
        rm -rf "$MMCV_WHEEL_DIR.partial" && cp -r "$legacy" "$MMCV_WHEEL_DIR.partial"
        mv "$MMCV_WHEEL_DIR.partial" "$MMCV_WHEEL_DIR"
    fi
}
mmcv_wheel_cached() { ls "$MMCV_WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; }
refuse_mmcv_build() {
    echo "setup: no cached mmcv wheel for this torch ($MMCV_KEY under $CACHE/wheels) and" \
        "--no-mmcv-build: run scripts/setup.sh without it once to compile it (~12 min on 2 cores)" >&2
    exit 3
}
if [ "$SYSTEM_TORCH" = 1 ]; then
    # The torch is known already: say now, not after the packages, when the wheel is missing.
    mmcv_wheel_dir
    if ! mmcv_wheel_cached && [ "$NO_MMCV_BUILD" = 1 ]; then refuse_mmcv_build; fi
fi
# mmcv's setup.py imports pkg_resources, removed in setuptools 81.
pip_quiet install -q "${source_args[@]}" -c "$CONSTRAINTS" "setuptools<81" wheel

phase "python packages"
if wheelhouse_from_node; then
    # The node's own packages are whatever versions it has: pip's resolver would want lock.txt's
    # (and opencv-python where the node has opencv-python-headless), which the wheelhouse lacks.
    # So its wheels go in as they are, with --no-deps, and the requirements they declare are
    # checked against what the venv then sees: a missing one stops here, another version is
    # listed (the import check and the smoke show whether it matters).
    "$VENV/bin/python" - "$OFFLINE_DIR" "$ROOT/requirements/openmmlab.txt" >"$WORK/wheelhouse-wheels.txt" <<'EOF'
import sys
from pathlib import Path
from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename
openmmlab = {canonicalize_name(line.split("==")[0]) for line in open(sys.argv[2]) if "==" in line}
for wheel in sorted(Path(sys.argv[1]).glob("*.whl")):
    name, version, *_ = parse_wheel_filename(wheel.name)
    if name not in openmmlab:  # installed below with their own --no-deps
        print(f"{name}=={version}")
EOF
    pip_quiet install -q --no-deps "${source_args[@]}" -c "$CONSTRAINTS" -r "$WORK/wheelhouse-wheels.txt"
    "$VENV/bin/python" - "$WORK/wheelhouse-wheels.txt" "$OFFLINE_DIR/WHEELHOUSE.txt" <<'EOF'
import re, sys
from importlib import metadata
from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name
provider = {}
for line in open(sys.argv[2]):
    match = re.match(r"from-node: (\S+): kept from the node as (\S+)", line)
    if match:
        provider[match[1]] = match[2]
installed = [line.split("==")[0] for line in open(sys.argv[1]).read().split()]
absent, other, checked = [], [], 0
for name in installed:
    for text in metadata.distribution(name).requires or []:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        checked += 1
        dist = provider.get(canonicalize_name(req.name), req.name)
        try:
            have = metadata.version(dist)
        except metadata.PackageNotFoundError:
            absent.append(f"{name} needs {req}")
            continue
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            other.append(f"{name} needs {req}, the venv has {dist} {have}")
for line in other:
    print(f"setup: WARNING: requirement not met by the node's version: {line}")
if absent:
    sys.exit("setup: requirements nothing here provides (the wheelhouse's closure missed them):\n  "
             + "\n  ".join(absent))
print(f"setup: {len(installed)} wheels with --no-deps; {checked - len(other)} of the {checked} requirements they"
      f" declare met{f', {len(other)} by another version (above)' if other else ''}")
EOF
else
    pip_quiet install -q "${source_args[@]}" -c "$CONSTRAINTS" -r "$REQUIREMENTS"
fi

phase "mmcv wheel"
mmcv_wheel_dir
if ! mmcv_wheel_cached; then
    [ "$NO_MMCV_BUILD" = 1 ] && refuse_mmcv_build
    jobs=${MAX_JOBS:-$(nproc)}
    echo "setup: building mmcv $MMCV_VERSION with ops on $jobs cores (~12 min on 2 cores), cache key $MMCV_KEY"
    BUILD=$WORK/mmcv-build
    mkdir -p "$BUILD"
    if [ -n "$OFFLINE_DIR" ]; then
        cp "$OFFLINE_DIR/mmcv-$MMCV_VERSION.tar.gz" "$BUILD/"
    else
        # --no-build-isolation: mmcv's setup.py needs the venv's torch even to read its metadata.
        pip_quiet download -q --no-deps --no-binary :all: --no-build-isolation \
            -d "$BUILD" "mmcv==$MMCV_VERSION"
    fi
    actual=$(sha256sum "$BUILD/mmcv-$MMCV_VERSION.tar.gz" | cut -d' ' -f1)
    if [ "$actual" != "$MMCV_SDIST_SHA256" ]; then
        echo "setup: mmcv-$MMCV_VERSION.tar.gz checksum mismatch: expected $MMCV_SDIST_SHA256, got $actual" >&2
        exit 1
    fi
    tar -xzf "$BUILD/mmcv-$MMCV_VERSION.tar.gz" -C "$BUILD"
    "$VENV/bin/python" "$ROOT/scripts/apply_patches.py" mmcv-source "$BUILD/mmcv-$MMCV_VERSION"
    # CPU ops only, on every node (frozenbench routes the GPU ops to torch's kernels): with a
    # GPU visible, mmcv's setup.py would compile its CUDA kernels instead. The venv's bin on PATH:
    # torch's extension builder runs MAX_JOBS compiles in parallel only through ninja.
    CUDA_VISIBLE_DEVICES= MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=$jobs PATH="$VENV/bin:$PATH" \
        pip_quiet wheel -q --no-deps --no-build-isolation "${source_args[@]}" -w "$BUILD/wheel" \
        "$BUILD/mmcv-$MMCV_VERSION"
    mkdir -p "$CACHE/wheels"
    # Rename into place so an interrupted build never leaves a half-written cache entry.
    mkdir -p "$BUILD/stage" && mv "$BUILD"/wheel/mmcv-*.whl "$BUILD/stage/"
    rm -rf "$MMCV_WHEEL_DIR" && mv "$BUILD/stage" "$MMCV_WHEEL_DIR"
fi
pip_quiet install -q --no-deps "$MMCV_WHEEL_DIR"/mmcv-*.whl

phase "openmmlab packages"
pip_quiet install -q --no-deps "${source_args[@]}" -c "$CONSTRAINTS" -r "$ROOT/requirements/openmmlab.txt"
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$VENV/bin/python" "$ROOT/scripts/apply_patches.py" site-packages "$SITE"

phase "frozenbench (editable)"
pip_quiet install -q --no-deps --no-build-isolation "${source_args[@]}" -e "$ROOT"

phase "import check"
# mmcv's ops go through frozenbench's routes to torch / torchvision kernels (the wheel has CPU
# kernels only): run each forward and backward on the CPU, and on the GPU where there is one.
"$VENV/bin/python" - "$SYSTEM_TORCH" "$VENV" <<'EOF'
import sys
import mmcv.ops, mmdet, mmseg, mmaction.models, frozenbench  # noqa: F401
import torch
from frozenbench.openmmlab.ops import check_ops
if sys.argv[1] == "1" and torch.__file__.startswith(sys.argv[2]):
    sys.exit(f"setup: --system-torch, yet torch now comes from the venv ({torch.__file__})")
for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
    print(f"setup: mmcv ops on {device}: {check_ops(device)}")
EOF

echo "$STAMP_TEXT" > "$STAMP"
phase ""
echo "setup: done in $((SECONDS - start_all))s"
