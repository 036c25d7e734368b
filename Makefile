# The README's quick start is `make demo` then `make test`; both create .venv when it is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# GPU users: make setup TORCH_SPEC='torch==2.11.0' [TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128]
# — torch is installed first and pinned, so no later dependency can replace it. Changing either
# variable re-runs setup.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX_URL ?=
TORCH_CHOICE := $(VENV)/.torch-choice
EXTRAS ?= hf,datasets,gpu,quant,serve,report,codecarbon,ray,test,dev
STAMP := $(VENV)/.joulebench-installed
PYTEST_ARGS ?=

.PHONY: setup demo test lint format clean FORCE

setup: $(STAMP)

# Rewritten only when TORCH_SPEC / TORCH_INDEX_URL change, so that the stamp below goes stale.
$(TORCH_CHOICE): FORCE
	@mkdir -p $(VENV)
	@choice='$(TORCH_SPEC) $(TORCH_INDEX_URL)'; \
	if [ "$$(cat $@ 2>/dev/null)" != "$$choice" ]; then echo "$$choice" > $@; fi

$(STAMP): pyproject.toml Makefile $(TORCH_CHOICE)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)" $(if $(TORCH_INDEX_URL),--index-url "$(TORCH_INDEX_URL)")
	$(BIN)/python -c 'import torch; print("torch==" + torch.__version__.split("+")[0])' > $(VENV)/constraints.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check -c $(VENV)/constraints.txt -e ".[$(EXTRAS)]"
	$(BIN)/python -c 'import torch, joulebench; print("installed joulebench with torch", torch.__version__)'
	touch $(STAMP)

demo: setup
	$(BIN)/joulebench reproduce --quick --out joulebench-report
	@echo "report: $(CURDIR)/joulebench-report/index.html (store: joulebench-report/results.duckdb)"

# pytest exits 5 when it collected nothing: that must fail, never pass silently.
test: setup
	@bash scripts/ensure_chromium.sh
	@set -o pipefail; $(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format src tests benchmarks scripts
	$(BIN)/ruff check --fix src tests benchmarks scripts

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache joulebench-results joulebench-report
