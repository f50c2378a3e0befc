# segdcn: `make demo` and `make test` install everything they need into .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch and torchvision are pinned: this pair has matching C++ ABIs (and lies on the
# development machines' disk); the extension is compiled against this torch.
TORCH := torch==2.14.1 torchvision==0.29.1
KERNELS := $(wildcard kernels/*.h kernels/*.cpp kernels/*/*.h kernels/*/*.cpp kernels/*/*.cu kernels/*/*.cuh)
STAMP := $(VENV)/.segdcn-installed
# The tested dependency set, transitive ones included, pinned: both pip steps install with it (-c), so a
# fresh machine gets what CI tested. `make lock` rewrites it; pyproject.toml keeps the compatible ranges.
LOCK := requirements-lock.txt
PIP_INSTALL_SEGDCN := MAX_JOBS=$${MAX_JOBS:-2} $(PY) -m pip install --no-build-isolation -c $(LOCK) -e '.[dev]'
PYTEST_ARGS ?=

.PHONY: install install-demo lock build test test-slow test-gpu gpu-check demo bench lint clean

install: $(STAMP)

$(VENV)/.torch-installed: $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -c $(LOCK) $(TORCH)
	touch $@

# Reinstalls (and rebuilds segdcn._C) only when the package metadata, the lock or the kernels change.
$(STAMP): $(VENV)/.torch-installed $(LOCK) pyproject.toml setup.py $(KERNELS)
	rm -f $(CPU_STAMP)
	$(PIP_INSTALL_SEGDCN)
	touch $@

# The demo on a machine without a GPU cannot run the CUDA kernels, and building them costs about four
# of its fifteen minutes: it takes an up-to-date full install when there is one, else a CPU-only build.
# Each build removes the other's stamp, so `make test` afterwards rebuilds with the CUDA kernels.
CPU_STAMP := $(VENV)/.segdcn-installed-cpu
$(CPU_STAMP): $(VENV)/.torch-installed $(LOCK) pyproject.toml setup.py $(KERNELS)
	rm -f $(STAMP)
	SEGDCN_CUDA=0 $(PIP_INSTALL_SEGDCN)
	touch $@

# Rewrites $(LOCK) from a throwaway venv: torch, then pyproject's dependencies and dev extra as pyproject
# states them (read with tomllib: Python >= 3.11), without the lock. segdcn itself is not installed there:
# an editable install would build segdcn/_C*.so into this tree, replacing the one .venv runs. --all keeps
# setuptools (a requirement of torch and the build backend), which a plain freeze leaves out before Python 3.12.
# Then `make install` installs the new pins into .venv.
LOCK_VENV := build/lock-venv
LOCK_PY := $(LOCK_VENV)/bin/python
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_PY) -m pip install --upgrade pip
	$(LOCK_PY) -m pip install $(TORCH)
	$(LOCK_PY) -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
		print('\n'.join(p['dependencies'] + p['optional-dependencies']['dev']))" > $(LOCK_VENV)/requirements.txt
	$(LOCK_PY) -m pip install -r $(LOCK_VENV)/requirements.txt
	{ echo "# $(LOCK): the tested dependency set of segdcn, transitive ones included, pinned. Written by"; \
	  echo "# \`make lock\` (do not edit by hand); \`make install\` installs with it as pip constraints (-c)."; \
	  echo "# Made with Python $$($(LOCK_PY) -c 'import platform; print(platform.python_version())')" \
	    "on $$($(LOCK_PY) -c 'import sysconfig; print(sysconfig.get_platform())'), $$($(LOCK_PY) -m pip --version | cut -d' ' -f1-2)."; \
	  $(LOCK_PY) -m pip freeze --all --exclude pip --exclude-editable | grep -v '^#'; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	rm -rf $(LOCK_VENV)

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

# The GPU check (scripts/gpu_check.py): a build for this GPU, test-gpu's tests, the op and model benchmarks on
# CUDA and the demo's deterministic 200-iteration training twice, with one summary in GPU_CHECK_OUT/gpu_check.md.
GPU_CHECK_OUT ?= build/gpu_check
gpu-check: install
	$(PY) scripts/gpu_check.py --out $(GPU_CHECK_OUT)

# The paper's Table 1 ablation in miniature (conf/experiment/demo.yaml): the synthetic shapes set (written
# once; the script does nothing when the same set is there), a sweep over 0 and 3 deformable layers x 4
# seeds as two parallel single-thread jobs (faster than one two-thread job on 2 cores), then the table and
# the best deformable run's effective dilation (Table 2's layout; about 30 s over the 300 validation
# images on 2 cores), both also written with their command, commit, date, machine and versions to
# docs/results/ (never edited by hand; docs/results/README.md). plot_run.py draws the runs' loss, mIoU and
# offsets from their metrics.jsonl into $(DEMO_DIR)/curves.png.
# Each step is one line and reads the previous one's files under $(DEMO_DIR).
# DEMO_ARGS adds overrides to every job, e.g. make demo DEMO_ARGS="trainer.max_iters=3000".
DEMO_DIR := outputs/demo/$(shell date +%Y-%m-%d_%H-%M-%S)
DEMO_DATA := data/synthetic
DEMO_ARGS ?=
# Four seeds a row: a deformable row's mIoU after 1,000 steps varies by several points between seeds
# (docs/demo.md, "How much a seed moves it"), so two seeds made the table a draw.
DEMO_SEEDS ?= 0,1,2,3
demo: install-demo
	$(PY) scripts/make_synthetic.py --out $(DEMO_DATA) --seed 0 --no-progress
	$(VENV)/bin/segdcn-train -m experiment=demo model.dcn.layers=0,3 seed=$(DEMO_SEEDS) hydra/launcher=joblib_local \
		dataset.root=$(DEMO_DATA) hydra.sweep.dir=$(DEMO_DIR) $(DEMO_ARGS)
	$(PY) scripts/plot_run.py $(DEMO_DIR) --out $(DEMO_DIR)/curves.png
	$(PY) scripts/ablation_table.py $(DEMO_DIR) --rows 0,3 --results docs/results/demo.md
	$(PY) scripts/receptive_field_stats.py --sweep $(DEMO_DIR) --dcn-layers 3 --results docs/results/demo_effective_dilation.md
	$(VENV)/bin/segdcn-export ckpt=$$(cat $(DEMO_DIR)/best_deformable_run.txt)/checkpoints/best.pt format=onnx out=$(DEMO_DIR)/export

# The CPU op, model and data pipeline benchmarks, written with their provenance to docs/results/. The
# model benchmark runs twice: DeepLab-R101 at the paper's size, and the demo's model as one demo job runs it.
DEMO_MODEL := --depth 18 --width 16 --output-stride 8 --size 64 --batch 16 --num-classes 6 --threads 1 --repeat 5
bench: install
	$(PY) scripts/bench_ops.py --threads 1,2 --memory --json docs/results/bench_ops.json --results docs/results/bench_ops.md
	$(PY) scripts/bench_model.py --json docs/results/bench_model.json --results docs/results/bench_model.md
	$(PY) scripts/bench_model.py $(DEMO_MODEL) --json docs/results/bench_model_demo.json --results docs/results/bench_model_demo.md
	$(PY) scripts/bench_data.py --results docs/results/bench_data.md

lint: install
	$(VENV)/bin/ruff check segdcn scripts tests setup.py
	$(VENV)/bin/ruff format --check segdcn scripts tests setup.py

clean:
	rm -rf build segdcn/_C*.so *.egg-info
