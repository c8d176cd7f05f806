# Every target sets up what it needs first (tools/setup.sh is idempotent).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export QT_QPA_PLATFORM := offscreen
# QGIS embeds Debian's Python: it sees the venv's torch only with the venv first on PATH.
export PATH := $(abspath $(VENV))/bin:$(PATH)
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup test test-core demo package bench clean

setup:
	@bash tools/setup.sh

$(PY):
	@bash tools/setup.sh

# The whole suite, headless, with real QGIS (pytest-qgis) and qgis_process.
test: setup
	$(PY) -m pytest

test-core: setup
	$(PY) -m pytest tests/core

# The main job: classify the bundled sample DEM with the bundled default model.
demo: setup
	$(PY) -m landform_plugin.core demo --out artifacts/demo

package: setup
	$(PY) tools/package.py --out dist

bench: setup
	$(PY) bench/terrain_factors.py
	$(PY) bench/classify.py
	$(PY) bench/distributed.py
	$(PY) bench/accuracy.py
	$(PY) bench/robustness.py

clean:
	rm -rf artifacts dist .pytest_cache
