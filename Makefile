# The two commands: `make run` (whole pipeline on built-in synthetic data) and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
WORK_DIR ?= artifacts
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install run test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' 2>/dev/null || \
	  { echo "widedeep needs Python 3.11: '$(PYTHON)' is $$($(PYTHON) --version 2>&1 || echo missing)." \
	         "Install Python 3.11 or run 'make PYTHON=/path/to/python3.11 ...'." >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

run: install
	$(BIN)/widedeep run --config configs/appstore.toml --work-dir $(WORK_DIR)

test: install
	$(BIN)/python -m pytest -q tests

bench: install
	$(BIN)/python bench/transform.py

clean:
	rm -rf $(WORK_DIR) $(VENV) *.egg-info
