# The README's commands. Each target runs scripts/setup.sh first, which is a
# no-op (a stamp check, ~0 s) once the venv matches requirements/ and the patches.
VENV ?= .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
CORES ?= all
PYTEST_ARGS ?=

.PHONY: setup test all_tables report bench dry-run lint slurm-up slurm-down clean-results

setup:
	bash scripts/setup.sh

test: setup
	python -m pytest $(PYTEST_ARGS)

all_tables: setup
	snakemake --cores $(CORES) all_tables

# snakemake's own report (provenance, runtimes) with the tables and figures
report: all_tables
	snakemake --report report.html

# a real single-node Slurm on this machine (root; installs slurm-wlm + munge if missing)
slurm-up:
	bash scripts/slurm/cluster.sh start

slurm-down:
	bash scripts/slurm/cluster.sh stop

# bench/results/*.json and bench/results/summary.md (ratios measured in one run)
bench: setup
	OMP_NUM_THREADS=$$(nproc) PYTHONPATH=src python bench/run_all.py

dry-run: setup
	snakemake -n all_tables

lint: setup
	snakemake --lint

clean-results:
	rm -rf results tables runs logs benchmarks report.html
