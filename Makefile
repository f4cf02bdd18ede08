# The README's commands. Each target runs scripts/setup.sh first, which is a
# no-op (a stamp check, ~0 s) once the venv matches requirements/ and the patches.
VENV ?= .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
CORES ?= all
PYTEST_ARGS ?=
# options for scripts/setup.sh, e.g. SETUP_ARGS="--offline wheelhouse --system-torch" (docs/install.md);
# CUDA=12 on the command line reaches it too (torch 2.9.1 instead of 2.14.1)
SETUP_ARGS ?=

.PHONY: docs-config setup wheelhouse test test-fast lint-check all_tables repro report bench gpu-smoke gpu-node-smoke cost dry-run lint slurm-up slurm-down clean-results

setup:
	bash scripts/setup.sh $(SETUP_ARGS)

# every wheel beyond torch for a machine without network, plus mmcv's sdist and SHA256SUMS
# (scripts/wheelhouse.sh; docs/install.md). Needs no venv: run it on any connected machine.
# NODE=1: only what a GPU node's training and smoke need (requirements/node.txt; docs/gpu-node.md)
WHEELHOUSE ?= wheelhouse
PYTHON_VERSION ?= 3.11
PLATFORM ?= manylinux_2_28_x86_64
wheelhouse:
	bash scripts/wheelhouse.sh --dest $(WHEELHOUSE) --python-version $(PYTHON_VERSION) --platform $(PLATFORM) \
		$(if $(CUDA),--cuda $(CUDA)) $(if $(filter 1,$(WITH_TORCH)),--with-torch) $(if $(filter 1,$(NODE)),--node)

test: setup lint-check
	python -m pytest $(PYTEST_ARGS)

# the developer's lane after each change: every test not marked slow (> ~30 s) and no Slurm test;
# `make test` (CI) runs everything (docs/testing.md)
test-fast: setup lint-check
	python -m pytest -m "not slow and not slurm" $(PYTEST_ARGS)

# the linters `make test` runs first: ruff (pyflakes + pycodestyle, format check) and snakefmt
lint-check: setup
	ruff check src tests bench scripts
	ruff format --check src tests bench scripts
	snakefmt --check Snakefile rules

all_tables: setup
	snakemake --cores $(CORES) all_tables

# the same study through DVC's stages (dvc.yaml); its stages call snakemake, found on PATH here
repro: setup
	dvc repro

# snakemake's own report (provenance, runtimes) with the tables and figures
report: all_tables
	snakemake --report report.html

# a real single-node Slurm on this machine (root; installs slurm-wlm + munge if missing)
# SLURM_NODES=2: two nodes, each in its own network namespace (what CI runs; docs/cluster.md)
SLURM_NODES ?= 1
slurm-up:
	bash scripts/slurm/cluster.sh start --nodes $(SLURM_NODES)

slurm-down:
	bash scripts/slurm/cluster.sh stop

# bench/results/*.json and bench/results/summary.md (ratios measured in one run)
bench: setup
	OMP_NUM_THREADS=$$(nproc) PYTHONPATH=src python bench/run_all.py

# every cell kind of configs/paper.yaml frozen and fine-tuned at the paper's per-GPU batch sizes, the
# in-DAG pretraining and the probe, and a ViT-L, through the real command line within --budget-s
# (540 s on a GPU); writes bench/records/gpu_<device>.json (docs/gpu-smoke.md). DEVICE=cpu: tiny
# sizes (what CI runs). GPU_SMOKE_ARGS: more options, e.g. "--cells k400_temporal --budget-s 300".
DEVICE ?= cuda
GPU_SMOKE_ARGS ?=
gpu-smoke: setup
	python bench/gpu_smoke.py --device $(DEVICE) $(GPU_SMOKE_ARGS)

# a bare GPU node (Python + torch, no network) from a copy of the repository and a node wheelhouse
# (make wheelhouse NODE=1) to bench/records/gpu_<device>.json in one run: install, routed ops on
# the GPU, smoke, record (scripts/gpu-node-smoke.sh; docs/gpu-node.md). Needs no venv: it makes one.
gpu-node-smoke:
	DEVICE=$(DEVICE) bash scripts/gpu-node-smoke.sh $(WHEELHOUSE)

# GPU-hours of configs/paper.yaml's study from a benchmark record (RECORD=bench/records/gpu_<device>.json)
RECORD ?= bench/records/cpu_2core/gpu_smoke_cpu.json
cost: setup
	frozenbench cost --config configs/paper.yaml --record $(RECORD)

# every job with its real threads: a dry run without --cores shows each job capped at 1 thread
dry-run: setup
	snakemake all_tables -n --cores 1000000

lint: setup
	snakemake --lint

clean-results:
	rm -rf results tables runs logs benchmarks report.html

# docs/config.md, the config reference, from the schema (tests/test_config_reference.py holds them equal)
docs-config: setup
	python -m frozenbench.config_reference > docs/config.md.tmp && mv docs/config.md.tmp docs/config.md
