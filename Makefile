# segdcn: `make demo` and `make test` install everything they need into .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch and torchvision are pinned: this pair has matching C++ ABIs (and lies on the
# development machines' disk); the extension is compiled against this torch.
TORCH := torch==2.14.1 torchvision==0.29.1
KERNELS := $(wildcard kernels/*.h kernels/*.cpp kernels/*/*.h kernels/*/*.cpp kernels/*/*.cu kernels/*/*.cuh)
STAMP := $(VENV)/.segdcn-installed
PIP_INSTALL_SEGDCN := MAX_JOBS=$${MAX_JOBS:-2} $(PY) -m pip install --no-build-isolation -e '.[dev]'
PYTEST_ARGS ?=

.PHONY: install install-demo build test test-slow test-gpu demo bench lint clean

install: $(STAMP)

$(VENV)/.torch-installed:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install $(TORCH)
	touch $@

# Reinstalls (and rebuilds segdcn._C) only when the package metadata or the kernels change.
$(STAMP): $(VENV)/.torch-installed pyproject.toml setup.py $(KERNELS)
	rm -f $(CPU_STAMP)
	$(PIP_INSTALL_SEGDCN)
	touch $@

# The demo on a machine without a GPU cannot run the CUDA kernels, and building them costs about four
# of its fifteen minutes: it takes an up-to-date full install when there is one, else a CPU-only build.
# Each build removes the other's stamp, so `make test` afterwards rebuilds with the CUDA kernels.
CPU_STAMP := $(VENV)/.segdcn-installed-cpu
$(CPU_STAMP): $(VENV)/.torch-installed pyproject.toml setup.py $(KERNELS)
	rm -f $(STAMP)
	SEGDCN_CUDA=0 $(PIP_INSTALL_SEGDCN)
	touch $@

install-demo:
	@if $(MAKE) -q install || nvidia-smi -L >/dev/null 2>&1; then $(MAKE) install; else $(MAKE) $(CPU_STAMP); fi

# Incremental rebuild of the extension in place, for kernel development.
build: install
	MAX_JOBS=$${MAX_JOBS:-2} $(PY) setup.py build_ext --inplace

test: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: install
	$(PY) -m pytest -m "slow" $(PYTEST_ARGS)

test-gpu: install
	$(PY) -m pytest -m "gpu" $(PYTEST_ARGS)

# The paper's Table 1 ablation in miniature (conf/experiment/demo.yaml): the synthetic shapes set (written
# once; the script does nothing when the same set is there), a sweep over 0 and 3 deformable layers x 2
# seeds as two parallel single-thread jobs (faster than one two-thread job on 2 cores), then the table.
# Each step is one line and reads the previous one's files under $(DEMO_DIR).
# DEMO_ARGS adds overrides to every job, e.g. make demo DEMO_ARGS="trainer.max_iters=3000".
DEMO_DIR := outputs/demo/$(shell date +%Y-%m-%d_%H-%M-%S)
DEMO_DATA := data/synthetic
DEMO_ARGS ?=
demo: install-demo
	$(PY) scripts/make_synthetic.py --out $(DEMO_DATA) --seed 0 --no-progress
	$(VENV)/bin/segdcn-train -m experiment=demo model.dcn.layers=0,3 seed=0,1 hydra/launcher=joblib_local \
		dataset.root=$(DEMO_DATA) hydra.sweep.dir=$(DEMO_DIR) $(DEMO_ARGS)
	$(PY) scripts/ablation_table.py $(DEMO_DIR) --rows 0,3
	$(VENV)/bin/segdcn-export ckpt=$$(cat $(DEMO_DIR)/best_run.txt)/checkpoints/best.pt format=onnx out=$(DEMO_DIR)/export

bench: install
	$(PY) scripts/bench_ops.py --threads 1,2 --json bench_ops.json

lint: install
	$(VENV)/bin/ruff check segdcn scripts tests setup.py
	$(VENV)/bin/ruff format --check segdcn scripts tests setup.py

clean:
	rm -rf build segdcn/_C*.so *.egg-info
