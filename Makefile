# `make run` starts the app, `make test` runs every test, `make bench` prints the benchmarks.
# Both create .venv on first use and reinstall only when a requirements file changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.deps: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.deps requirements-dev.txt
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

run: $(VENV)/.deps
	@echo "Starting the explorer at http://localhost:8501 (Ctrl-C stops it)"
	$(BIN)/python -m streamlit run app.py

test: $(VENV)/.dev
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup  # two workers: the suite is sized for two cores; Ray tests share one

bench: $(VENV)/.deps
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache
