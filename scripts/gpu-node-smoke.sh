#!/usr/bin/env bash
# One command on a bare GPU node (Python with torch + torchvision, no network): from a copy of
# the repository and a wheelhouse to a committed-ready bench/records/gpu_<device>.json.
#
# Usage: scripts/gpu-node-smoke.sh WHEELHOUSE          (make gpu-node-smoke WHEELHOUSE=DIR)
#   1. install   scripts/setup.sh --offline WHEELHOUSE --system-torch into $FROZENBENCH_VENV
#                (default .venv); mmcv's ops are compiled from the wheelhouse's sdist on all
#                cores (MAX_JOBS=nproc) when no cached wheel fits the node's torch
#   2. check     every routed mmcv op forward and backward on a $DEVICE tensor (check_ops)
#   3. smoke     bench/gpu_smoke.py --device $DEVICE --out bench/records/gpu_<device>.json
#                --budget-s <BUDGET_S less the time steps 1-2 took, less MARGIN_S>
#   4. record    its path, a summary of its cells, and the git line that commits it
# The wheelhouse: make wheelhouse NODE=1 PYTHON_VERSION=<the node's> on a connected machine
# (docs/gpu-node.md). A failed cell is reported and its record kept (exit 1).
# Environment:
#   DEVICE       cuda (default) or cpu: the rehearsal CI runs, tiny sizes
#   SMOKE_CELLS  cell kinds for gpu_smoke.py --cells, space- or comma-separated (default:
#                every kind); the CI rehearsal runs one or two
#   BUDGET_S     the whole run's wall-clock budget in seconds (default 600)
#   MARGIN_S     what the smoke leaves of it for the record and the summary (default 60)
#   COPY_RECORD_TO  a folder the record is also copied to once written (the device tool's $OUT,
#                whose files come back to the session that lent the machine); default: none
#   PYTHON       the node's interpreter with torch (default python3); FROZENBENCH_VENV,
#                FROZENBENCH_CACHE, MAX_JOBS, FROZENBENCH_NO_MMCV_BUILD as scripts/setup.sh
# Exit: 0 every cell ran; 1 a cell failed (record written); 2 bad usage; else the failed
# step's code (3: no cached mmcv wheel and FROZENBENCH_NO_MMCV_BUILD=1).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
usage() { sed -n '2,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
case ${1:-} in
    -h | --help) usage; exit 0 ;;
    "") echo "gpu-node-smoke: name the wheelhouse folder (scripts/gpu-node-smoke.sh WHEELHOUSE; --help)" >&2; exit 2 ;;
esac
[ $# -eq 1 ] || { echo "gpu-node-smoke: one argument, the wheelhouse folder; got $#: $*" >&2; exit 2; }
WHEELHOUSE=$1
[ -d "$WHEELHOUSE" ] || { echo "gpu-node-smoke: wheelhouse $WHEELHOUSE: no such folder" >&2; exit 2; }
DEVICE=${DEVICE:-cuda}
case $DEVICE in
    cuda | cpu) ;;
    *) echo "gpu-node-smoke: DEVICE must be cuda or cpu, got '$DEVICE'" >&2; exit 2 ;;
esac
for name in BUDGET_S MARGIN_S; do
    if ! [[ ${!name:-0} =~ ^[0-9]+$ ]]; then
        echo "gpu-node-smoke: $name must be whole seconds, got '${!name}'" >&2
        exit 2
    fi
done
BUDGET_S=${BUDGET_S:-600}
COPY_RECORD_TO=${COPY_RECORD_TO:-}
if [ -n "$COPY_RECORD_TO" ] && [ ! -d "$COPY_RECORD_TO" ]; then
    echo "gpu-node-smoke: COPY_RECORD_TO=$COPY_RECORD_TO: no such folder" >&2
    exit 2
fi
MARGIN_S=${MARGIN_S:-60}
# Below this the smoke cannot run even one GPU cell with its evaluation: it gets this much
# anyway (the run then overruns BUDGET_S, and says so) rather than a budget it cannot use.
MIN_SMOKE_S=120
export PYTHON=${PYTHON:-python3}
VENV=$(realpath -m "${FROZENBENCH_VENV:-$ROOT/.venv}")
export FROZENBENCH_VENV=$VENV
read -r -a CELLS <<<"${SMOKE_CELLS//,/ }"

start=$SECONDS
say() { echo "gpu-node-smoke: $*"; }

# A GPU run on a node whose torch sees no GPU would install for minutes and then fail: say so first.
if [ "$DEVICE" = cuda ]; then
    if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
        echo "gpu-node-smoke: DEVICE=cuda but $PYTHON's torch sees no GPU (no torch, a CPU build, no" \
            "visible GPU, or a driver too old: scripts/setup.sh --check-driver --system-torch);" \
            "DEVICE=cpu rehearses the run on the CPU" >&2
        exit 1
    fi
fi

LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
say "1/4 install (scripts/setup.sh --offline $WHEELHOUSE --system-torch, PYTHON=$PYTHON)"
bash "$ROOT/scripts/setup.sh" --offline "$WHEELHOUSE" --system-torch | tee "$LOG"
install_s=$((SECONDS - start))
PY=$VENV/bin/python
export PATH=$VENV/bin:$PATH

say "2/4 routed mmcv ops on $DEVICE"
# setup's own import check runs them on every device torch sees; a venv already up to date skips it
if grep -q "^setup: mmcv ops on $DEVICE: " "$LOG"; then
    say "checked by setup's import check above"
else
    "$PY" -c 'import sys; from frozenbench.openmmlab.ops import check_ops; print(f"gpu-node-smoke: mmcv ops on {sys.argv[1]}: {check_ops(sys.argv[1])}")' "$DEVICE"
fi
# gpu_smoke.py names GPU records the same way; the CPU rehearsal's record is gpu_cpu.json.
SLUG=$("$PY" -c '
import re, sys, torch
name = torch.cuda.get_device_name(0) if sys.argv[1] == "cuda" else "cpu"
print(re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_"))' "$DEVICE")
RECORD=bench/records/gpu_$SLUG.json
checked_s=$((SECONDS - start))

smoke_budget=$((BUDGET_S - checked_s - MARGIN_S))
if [ "$smoke_budget" -lt "$MIN_SMOKE_S" ]; then
    say "WARNING: install and check took ${checked_s}s of the ${BUDGET_S}s budget; the smoke gets" \
        "${MIN_SMOKE_S}s anyway, so the run overruns (a second run finds mmcv's wheel cached)"
    smoke_budget=$MIN_SMOKE_S
fi
say "3/4 smoke: bench/gpu_smoke.py --device $DEVICE --budget-s $smoke_budget${CELLS:+ --cells ${CELLS[*]}}"
rm -f "$ROOT/$RECORD"  # a record left from an earlier run must not pass for this one's
set +e
(cd "$ROOT" && "$PY" bench/gpu_smoke.py --device "$DEVICE" --out "$RECORD" --budget-s "$smoke_budget" \
    ${CELLS:+--cells "${CELLS[@]}"})
smoke_rc=$?
set -e
smoke_s=$((SECONDS - start - checked_s))

say "4/4 record"
if [ ! -f "$ROOT/$RECORD" ]; then
    echo "gpu-node-smoke: the smoke exited $smoke_rc without writing $RECORD (its output above says why)" >&2
    exit $((smoke_rc == 0 ? 1 : smoke_rc))
fi
# The record says how the node got there: the install and check time beside the smoke's own rows.
"$PY" - "$ROOT/$RECORD" "$install_s" "$checked_s" "$smoke_budget" "$smoke_s" "$BUDGET_S" <<'EOF'
import json, platform, sys
import torch
from frozenbench.utils.atomic import write_json

path, install_s, checked_s, smoke_budget, smoke_s, budget = sys.argv[1], *map(int, sys.argv[2:])
record = json.loads(open(path).read())
record["node_run"] = {
    "script": "scripts/gpu-node-smoke.sh",
    "python": platform.python_version(),
    "torch": torch.__version__,
    "torch_cuda": torch.version.cuda,
    "install_s": install_s,
    "install_and_check_s": checked_s,
    "smoke_budget_s": smoke_budget,
    "smoke_s": smoke_s,
    "budget_s": budget,
}
write_json(path, record)
rows = record.get("cells", [])
for row in rows:
    status = row.get("status") or ("failed" if row.get("error") else "ok")
    step = row.get("seconds_per_step")
    peak = row.get("train_gpu_peak_mb")
    print(f"  {row.get('cell', '?'):<24} {row.get('mode', ''):<10} {status:<7}"
          + (f" {step:.3f} s/step" if isinstance(step, (int, float)) else "")
          + (f", train peak {peak:.0f} MB" if isinstance(peak, (int, float)) else ""))
for failure in record.get("failures", []):
    print("  failed:", str(failure).splitlines()[0])
EOF
total_s=$((SECONDS - start))
say "install ${install_s}s, check $((checked_s - install_s))s, smoke ${smoke_s}s: ${total_s}s of the ${BUDGET_S}s budget"
say "record: $ROOT/$RECORD"
if [ -n "$COPY_RECORD_TO" ]; then
    cp "$ROOT/$RECORD" "$COPY_RECORD_TO/" && say "record copied to $COPY_RECORD_TO/$(basename "$RECORD")"
fi
[ "$DEVICE" = cpu ] && say "(DEVICE=cpu: a rehearsal at tiny sizes, not a GPU record)"
if [ "$smoke_rc" -ne 0 ]; then
    say "a cell failed (exit $smoke_rc): it is marked in the record, which is kept; commit it all the same"
fi
# From a copy that is not the checkout: bring the file back to the checkout's same path first.
say "commit it: git add $RECORD && git commit -m \"bench: GPU smoke record, $SLUG\""
exit "$smoke_rc"
