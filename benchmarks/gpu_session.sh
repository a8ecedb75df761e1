#!/usr/bin/env bash
# The GPU checks of one session on a lent machine (no network there), run from the repository
# root with $OUT set, as one call within DEADLINE seconds (default 470). PARTS names what runs,
# in the order below (default "profile sweep pytest mppi control"):
#   profile  where `act`'s time goes (profile_mppi_gpu.py)
#   sweep    the fused rollout alone per launch option (bench_mppi_gpu.py --sweep)
#   pytest   the CUDA tests
#   control  the closed-loop GPU rows (bench_control.py --skip-cpu)
#   mppi     the MPPI GPU rows (bench_mppi_gpu.py)
#   compile  the torch.compile rows
#   models   bench-models on 2 pinned cores
# STAGE=1 / STAGE=2 are the older two halves: "mppi pytest" and "control sweep".
# Missing packages travel as wheels in `.whl/` (not in git; carry it): mujoco, mujoco-core,
# gymnasium, farama-notifications, pytorch-mppi, arm-pytorch-utilities, pytorch-seed, for the
# machine's Python (3.12 when last seen). docs/controllers.md, "GPU", says how to fetch them.
# Every script writes its JSON after each row, so a run cut short still returns rows; the logs
# go into one file, since a call returns at most 8.
set -u
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MUJOCO_GL=egl
PKG=$(mktemp -d)
cp -r metasym_control "$PKG"/ && cp -r envs models controllers "$PKG"/metasym_control/
SITE=$(mktemp -d)
LOG="$OUT/log.txt"
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl >> "$LOG" 2>&1 || echo "wheel install failed" >> "$LOG"
fi
export PYTHONPATH="$PKG:$SITE"
{ nvidia-smi --query-gpu=name,driver_version --format=csv; python3 -V; lscpu | grep "Model name"
  python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name(0))"
  python3 -c "import mujoco, gymnasium; print('mujoco', mujoco.__version__)"; } >> "$LOG" 2>&1

case "${STAGE:-}" in
  1) DEFAULT_PARTS="mppi pytest" ;;
  2) DEFAULT_PARTS="control sweep" ;;
  *) DEFAULT_PARTS="profile sweep pytest mppi control" ;;
esac
PARTS=" ${PARTS:-$DEFAULT_PARTS} "
want() { [[ "$PARTS" == *" $1 "* ]]; }
END=$(( $(date +%s) + ${DEADLINE:-470} ))
left() { local l=$(( END - $(date +%s) )); [ "$l" -lt "$1" ] && l=$(( l > 5 ? l : 5 )) || l=$1; echo "$l"; }
step() {  # step NAME SECONDS COMMAND...
  local name=$1 secs; secs=$(left "$2"); shift 2
  echo "=== $name (limit ${secs} s) at $(date +%s)" >> "$LOG"
  timeout "$secs" "$@" >> "$LOG" 2>&1
  echo "=== $name rc $? at $(date +%s)" >> "$LOG"
}

want profile && step profile 120 python3 benchmarks/profile_mppi_gpu.py --out "$OUT/profile.json"
if want sweep; then
  step sweep 90 python3 benchmarks/bench_mppi_gpu.py --sweep "$OUT/sweep.json"
  # a launch that faults leaves the process's GPU unusable: on its own
  step sweep-128-8 40 python3 benchmarks/bench_mppi_gpu.py --sweep "$OUT/sweep_128_8.json" \
    --configs tf32x3:128:8,tf32:128:8
fi
# -P: not the working directory first on sys.path (its metasym_control/ lacks the subpackages)
want pytest && step pytest 100 python3 -P -m pytest -q -p no:cacheprovider -k "cuda or gpu" \
  tests/models/test_fused_rollout.py tests/models/test_metasym.py \
  tests/models/test_symplectic.py tests/controllers/test_mppi.py
want control && step bench_control 300 python3 benchmarks/bench_control.py --device cuda \
  --skip-cpu --steps 150 --quick --json "$OUT/control_gpu.json"
# MPPI_ARGS: e.g. "--fresh" (an untrained default model) or "--only fused"
want mppi && step bench_mppi_gpu 120 python3 benchmarks/bench_mppi_gpu.py \
  --out "$OUT/mppi_run.json" ${MPPI_ARGS:-}
want compile && step compile-rows 200 python3 benchmarks/bench_mppi_gpu.py \
  --out "$OUT/mppi_compile.json" --with-compile --only compile
want models && step bench_models 200 taskset -c 0,1 python3 benchmarks/bench_models.py --no-write
exit 0
