#!/usr/bin/env bash
# The GPU checks of one session on a lent machine (no network there), run from the repository
# root with $OUT set, in two stages that each fit one call with room to spare:
#   STAGE=1  the MPPI GPU rows (bench_mppi_gpu.py, fused rollout first) and the CUDA tests
#   STAGE=2  the closed-loop GPU rows (bench_control.py --skip-cpu) and the fused kernel's
#            launch-option sweep
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
