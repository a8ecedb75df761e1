# metasym-control: set-up, demo, tests, benchmarks. Every target creates .venv when absent.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# On this project's machines `torch==2.13.0` resolves to a CPU build on local disk; a plain
# `torch` would pull a multi-GB CUDA build. Override with TORCH_SPEC="torch" on a GPU box.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: setup demo test lint typecheck pytest bench bench-env bench-models bench-eval bench-control clean weights

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m metasym_control.cli demo

test: lint pytest

lint: $(STAMP) typecheck
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# mypy cannot follow the editable install's import hook; give it a link tree of the
# installed layout (docs/ARCHITECTURE.md, "Layout and tooling").
typecheck: $(STAMP)
	rm -rf build/typecheck && mkdir -p build/typecheck/metasym_control
	for f in metasym_control/*; do ln -s ../../../$$f build/typecheck/metasym_control/; done
	ln -s ../../../envs build/typecheck/metasym_control/envs
	ln -s ../../../models build/typecheck/metasym_control/models
	ln -s ../../../controllers build/typecheck/metasym_control/controllers
	cd build/typecheck && MYPYPATH=. ../../$(VENV)/bin/mypy --config-file ../../pyproject.toml -p metasym_control

# Triton lets the tests run the fused rollout's kernel in its interpreter (no GPU needed);
# where no wheel exists that one test skips.
$(TEST_STAMP): $(STAMP)
	$(PY) -c "import triton" 2>/dev/null || $(PY) -m pip install -q -e ".[triton]" \
		|| echo "Triton unavailable: the fused-rollout interpreter test will skip"
	touch $(TEST_STAMP)

pytest: $(TEST_STAMP)
	$(PY) -m pytest -q -ra tests

bench: $(STAMP)
	$(PY) benchmarks/bench_quadrotor.py
	$(PY) benchmarks/bench_spring_mesh.py
	$(PY) benchmarks/bench_open_quantum.py

bench-models: $(STAMP) bench-eval
	$(PY) benchmarks/bench_models.py
	$(PY) benchmarks/bench_kernel_count.py

# the model evaluation of every system at its full size (2-3 hours each on 2 CPU cores,
# estimated from the reduced runs in docs/metasym.md)
bench-eval: $(STAMP)
	for env in quadrotor spring_mesh quantum; do \
		$(PY) -m metasym_control.cli eval --env $$env --out runs/eval --write-benchmarks || exit 1; \
	done

bench-control: $(STAMP)
	$(PY) benchmarks/bench_control.py
	$(PY) benchmarks/bench_mppi_cpu.py

weights: $(STAMP)
	$(PY) -m metasym_control.cli train-default --all --out metasym_control/weights

clean:
	rm -rf build .mypy_cache .ruff_cache .pytest_cache outputs
