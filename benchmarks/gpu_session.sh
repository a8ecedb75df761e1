#!/usr/bin/env bash
# The GPU checks of one session on a lent machine (no network there), run from the repository
# root with $OUT set, in two stages that each fit one call with room to spare:
#   STAGE=1  the MPPI GPU rows (bench_mppi_gpu.py, fused rollout first) and the CUDA tests
#   STAGE=2  the closed-loop GPU rows (bench_control.py --skip-cpu) and the fused kernel's
#            launch-option sweep
#   STAGE=all  in one call of a short lease, inside DEADLINE seconds (default 470), the PARTS
#            named (default "profile sweep pytest mppi control"; also "compile"): the profile
#            of `act`, the launch-option sweep, the CUDA tests, the MPPI rows, the closed
#            loop, the torch.compile rows; the logs in one file (at most 8 files come back)
#   FULL=1   adds, to stage 2, the torch.compile rows and bench-models on 2 pinned cores
# Missing packages travel as wheels in `.whl/` (not in git; carry it): mujoco, mujoco-core,
# gymnasium, farama-notifications, pytorch-mppi, arm-pytorch-utilities, pytorch-seed, for the
# machine's Python (3.12 when last seen). docs/controllers.md, "GPU", says how to fetch them.
# Every script writes its JSON after each row, so a run cut short still returns rows.
set -u
OUT=${OUT:-/tmp/gpu_out}
STAGE=${STAGE:-1}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MUJOCO_GL=egl
PKG=$(mktemp -d)
cp -r metasym_control "$PKG"/ && cp -r envs models controllers "$PKG"/metasym_control/
SITE=$(mktemp -d)
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl > "$OUT/pip.txt" 2>&1 || echo "wheel install failed" >> "$OUT/pip.txt"
fi
export PYTHONPATH="$PKG:$SITE"
{ nvidia-smi --query-gpu=name,driver_version --format=csv; python3 -V; lscpu | grep "Model name"
  python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name(0))"
  python3 -c "import mujoco, gymnasium; print('mujoco', mujoco.__version__)"; } > "$OUT/env.txt" 2>&1
if [ "$STAGE" = all ]; then
  # at most 8 files come back: the logs go into one
  END=$(( $(date +%s) + ${DEADLINE:-470} ))
  left() { local l=$(( END - $(date +%s) )); [ "$l" -lt "$1" ] && l=$(( l > 5 ? l : 5 )) || l=$1; echo "$l"; }
  LOG="$OUT/log.txt"
  step() {  # step NAME SECONDS COMMAND...
    local name=$1 secs; secs=$(left "$2"); shift 2
    echo "=== $name (limit ${secs} s) at $(date +%s)" >> "$LOG"
    timeout "$secs" "$@" >> "$LOG" 2>&1
    echo "=== $name rc $? at $(date +%s)" >> "$LOG"
  }
  cat "$OUT/env.txt" "$OUT/pip.txt" >> "$LOG"; rm -f "$OUT/env.txt" "$OUT/pip.txt"
  PARTS=" ${PARTS:-profile sweep pytest mppi control} "  # in the order given below
  want() { [[ "$PARTS" == *" $1 "* ]]; }
  want profile && step profile 120 python3 benchmarks/profile_mppi_gpu.py --out "$OUT/profile.json"
  if want sweep; then
    step sweep 90 python3 benchmarks/bench_mppi_gpu.py --sweep "$OUT/sweep.json"
    # a launch that faults leaves the process's GPU unusable: on its own
    step sweep-128-8 40 python3 benchmarks/bench_mppi_gpu.py --sweep "$OUT/sweep_128_8.json" \
      --configs tf32x3:128:8,tf32:128:8
  fi
  # -P: not the working directory first on sys.path (its metasym_control/ lacks the subpackages)
  want pytest && step pytest 100 python3 -P -m pytest -q -p no:cacheprovider -k "cuda or gpu" \
    tests/models/test_fused_rollout.py tests/models/test_metasym.py tests/controllers/test_mppi.py
  want control && step bench_control 300 python3 benchmarks/bench_control.py --device cuda \
    --skip-cpu --steps 150 --quick --json "$OUT/control_gpu.json"
  want mppi && step bench_mppi_gpu 120 python3 benchmarks/bench_mppi_gpu.py \
    --out "$OUT/mppi_run.json" ${MPPI_ARGS:-}
  want compile && step compile-rows 200 python3 benchmarks/bench_mppi_gpu.py \
    --out "$OUT/mppi_compile.json" --with-compile --only compile
  exit 0
fi
if [ "$STAGE" = 1 ]; then
  # MPPI_ARGS: e.g. "--fresh" (an untrained default model) or "--only fused"
  timeout 200 python3 benchmarks/bench_mppi_gpu.py --out "$OUT/mppi_run.json" ${MPPI_ARGS:-} \
    > "$OUT/mppi.txt" 2>&1
  echo "bench_mppi_gpu rc $?" >> "$OUT/env.txt"
  timeout 150 python3 -m pytest -q -p no:cacheprovider -k "cuda or gpu" \
    tests/models/test_fused_rollout.py tests/models/test_metasym.py \
    tests/models/test_symplectic.py tests/controllers/test_mppi.py > "$OUT/pytest.txt" 2>&1
  echo "pytest rc $?" >> "$OUT/env.txt"
  exit 0
fi
QUICK_FLAG=--quick
[ "${FULL:-0}" = 1 ] && QUICK_FLAG=
timeout 240 python3 benchmarks/bench_control.py --device cuda --skip-cpu --steps 150 \
  $QUICK_FLAG --json "$OUT/control_gpu.json" > "$OUT/control.txt" 2>&1
echo "bench_control rc $?" >> "$OUT/env.txt"
timeout 120 python3 benchmarks/bench_mppi_gpu.py --sweep "$OUT/sweep.json" > "$OUT/sweep.txt" 2>&1
echo "sweep rc $?" >> "$OUT/env.txt"
[ "${FULL:-0}" = 1 ] || exit 0
timeout 200 python3 benchmarks/bench_mppi_gpu.py --out "$OUT/mppi_compile.json" \
  --with-compile --only compile > "$OUT/mppi_compile.txt" 2>&1
echo "compile rows rc $?" >> "$OUT/env.txt"
timeout 200 taskset -c 0,1 python3 benchmarks/bench_models.py --no-write > "$OUT/models.md" 2>&1
echo "bench_models rc $?" >> "$OUT/env.txt"
