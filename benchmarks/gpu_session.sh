#!/usr/bin/env bash
# One session on a lent GPU machine (no network there): the CUDA tests, the MPPI GPU rows and
# bench-models (CPU pinned to 2 cores, and CUDA). Run from the repository root with $OUT set;
# `gpuwheels/` (not in git) holds unpacked wheels of the pure-python dependencies the machine
# may lack and a saved support Trajectory (support.npz) because MuJoCo is not installed there.
set -u
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
PKG=$(mktemp -d)
cp -r metasym_control "$PKG"/ && cp -r envs models controllers "$PKG"/metasym_control/
EXTRA=$(mktemp -d)
python - "$EXTRA" <<'PY'
import importlib, pathlib, shutil, sys
extra, site = pathlib.Path(sys.argv[1]), pathlib.Path("gpuwheels/site")
groups = {
    "gymnasium": ["gymnasium", "cloudpickle", "farama_notifications"],
    "safetensors": ["safetensors"],
    "tqdm": ["tqdm"],
    "pytest": ["pytest", "_pytest", "pluggy", "iniconfig", "py.py", "packaging"],
}
for mod, names in groups.items():
    try:
        importlib.import_module(mod)
    except ImportError:
        print("carried:", mod)
        for n in names:
            src = site / n
            if src.is_dir():
                shutil.copytree(src, extra / n, dirs_exist_ok=True)
            elif src.exists():
                shutil.copy(src, extra / n)
PY
export PYTHONPATH="$PKG:$EXTRA"
export MUJOCO_GL=egl
{ nvidia-smi --query-gpu=name,driver_version --format=csv; python -V; lscpu | grep "Model name"
  python -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))"; } > "$OUT/env.txt" 2>&1
# MPPI_ARGS="--fresh" times an untrained default model (latency does not depend on weights);
# "--only fused" only the fused-rollout rows. The JSON is rewritten after every row.
timeout 330 python benchmarks/bench_mppi_gpu.py --out "$OUT/mppi_run.json" ${MPPI_ARGS:-} \
  > "$OUT/mppi.txt" 2>&1
echo "bench_mppi_gpu rc $?" >> "$OUT/env.txt"
timeout 150 python -m pytest -q -p no:cacheprovider -k "cuda or gpu" tests/models/test_metasym.py \
  tests/models/test_symplectic.py tests/models/test_fused_rollout.py \
  tests/controllers/test_mppi.py > "$OUT/pytest.txt" 2>&1
echo "pytest rc $?" >> "$OUT/env.txt"
timeout 150 python benchmarks/bench_mppi_gpu.py --sweep "$OUT/sweep.json" > "$OUT/sweep.txt" 2>&1
echo "sweep rc $?" >> "$OUT/env.txt"
[ "${QUICK:-0}" = 1 ] && exit 0  # QUICK=1: MPPI rows and tests only
timeout 200 taskset -c 0,1 python benchmarks/bench_models.py --no-write \
  --support gpuwheels/support.npz > "$OUT/models.md" 2>&1
echo "bench_models rc $?" >> "$OUT/env.txt"
