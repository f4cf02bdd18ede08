# The README's commands. Each target runs scripts/setup.sh first, which is a
# no-op (a stamp check, ~0 s) once the venv matches requirements/ and the patches.
VENV ?= .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
CORES ?= all
PYTEST_ARGS ?=

.PHONY: setup test all_tables dry-run lint clean-results

setup:
	bash scripts/setup.sh

test: setup
	python -m pytest $(PYTEST_ARGS)

all_tables: setup
	snakemake --cores $(CORES) all_tables

dry-run: setup
	snakemake -n all_tables

lint: setup
	snakemake --lint

clean-results:
	rm -rf results tables runs logs benchmarks report.html
