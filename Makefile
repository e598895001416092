# make test / make demo work on a fresh clone: they create .venv and install what is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# A CPU build of torch: pinned so pip takes the local wheel instead of a multi-GB CUDA download.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: test demo install bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(VENV)/bin/tagcons demo --out demo_out

bench: $(STAMP)
	$(PY) benchmarks/embed_throughput.py
	$(PY) benchmarks/heads.py
	$(PY) benchmarks/finetune_step.py
	$(PY) benchmarks/cache_scale.py

clean:
	rm -rf demo_out .pytest_cache
