# The two commands: `make run` (whole pipeline on built-in synthetic data) and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
WORK_DIR ?= artifacts
export TF_CPP_MIN_LOG_LEVEL := 2

DEMO_DIR ?= artifacts/nightly-demo
DEMO_ROWS ?= 50000

.PHONY: install run test bench bench-quality bench-scale paper-table nightly-demo clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' 2>/dev/null || \
	  { echo "widedeep needs Python 3.11: '$(PYTHON)' is $$($(PYTHON) --version 2>&1 || echo missing)." \
	         "Install Python 3.11 or run 'make PYTHON=/path/to/python3.11 ...'." >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@# PYTHONWARNINGS: setuptools' editable-install notice is ten lines of stars, not news.
	PYTHONWARNINGS=ignore $(BIN)/pip install --quiet -e '.[test]'
	@touch $@

run: install
	$(BIN)/widedeep run --config configs/appstore.toml --work-dir $(WORK_DIR)

test: install
	$(BIN)/python -m pytest -q tests

# torch is the training benchmark's reference (bench-only; `make test` never installs it).
bench: install
	PYTHONWARNINGS=ignore $(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/run_all.py

# Wide & Deep against logistic regression and LightGBM on every dataset there is (README).
bench-quality: install
	PYTHONWARNINGS=ignore $(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/quality.py --tune-trials 12 --tune-minutes 10

# The whole loop at 0.2M, 1M, 3M and 10M rows: time, memory and disk per stage (about
# 25 minutes on 2 cores; README "Scale").
bench-scale: install
	$(BIN)/python bench/scale.py

paper-table: install
	$(BIN)/python bench/paper_table.py

# Three nights of synthetic logs with drift (new apps launch daily): each night warm-starts
# from the model blessed the night before, remapping vocabularies by token.
nightly-demo: install
	rm -rf $(DEMO_DIR)
	for i in 0 1 2; do \
	  day=$$(date -u -d "2026-01-01 +$$i day" +%F) && \
	  $(BIN)/widedeep synth --out $(DEMO_DIR)/logs --rows-per-day $(DEMO_ROWS) \
	    --start-date $$day --first-day-index $$i && \
	  $(BIN)/widedeep nightly --config configs/appstore.toml \
	    --input-template '$(DEMO_DIR)/logs/day={date}/*.csv' --work-dir $(DEMO_DIR)/work \
	    || exit 1; \
	done
	$(BIN)/widedeep history --work-dir $(DEMO_DIR)/work

clean:
	rm -rf $(WORK_DIR) $(VENV) *.egg-info
