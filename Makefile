# Two entry points: `make demo` runs the whole chain on the embedded demo data,
# `make test` runs every test plus the Snakemake linters. Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CORES ?= 2

.PHONY: setup demo test lint format clean-demo

$(PY):
	python3 -m venv $(VENV)

# torch/torchvision are installed first with exact versions so pip takes the local
# wheels (a CUDA build from the normal index on a user's machine).
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# The chain, then its report (Snakemake's own, one self-contained HTML file).
demo: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/snakemake demo --cores $(CORES) --configfile config/demo.yaml
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/snakemake demo --report results/demo/report.html --cores $(CORES) --configfile config/demo.yaml
	@echo "report: $(abspath results/demo/report.html)"

lint: $(STAMP)
	$(VENV)/bin/ruff check cosmos_posttrain workflow tests benchmarks
	$(VENV)/bin/ruff format --check cosmos_posttrain workflow tests benchmarks
	$(VENV)/bin/snakefmt --check Snakefile rules
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/snakemake --lint --cores 1

format: $(STAMP)
	$(VENV)/bin/ruff check --fix cosmos_posttrain workflow tests benchmarks
	$(VENV)/bin/ruff format cosmos_posttrain workflow tests benchmarks
	$(VENV)/bin/snakefmt Snakefile rules

test: $(STAMP) lint
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/python -m pytest -q tests
