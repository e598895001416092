# make test / make demo work on a fresh clone: they create .venv and install what is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# A CPU build of torch: pinned so pip takes the local wheel instead of a multi-GB CUDA download.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
# A second environment with the lowest supported versions (.ci/min-constraints.txt).
VENV_MIN := .venv-min
STAMP_MIN := $(VENV_MIN)/.installed
# A third one with torchvision (.ci/decode-constraints.txt) for the tests of the real decode_jpeg.
VENV_DECODE := .venv-decode
STAMP_DECODE := $(VENV_DECODE)/.installed
# The tests that need torchvision (they skip in .venv, naming this target).
DECODE_TESTS := tests/test_gpu_decode.py

.PHONY: test test-min test-decode demo docs install bench mutate mutate-all clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,docs,onnx,ray]"
	touch $(STAMP)

$(STAMP_MIN): setup.cfg pyproject.toml .ci/min-constraints.txt
	$(PYTHON) -m venv $(VENV_MIN)
	$(VENV_MIN)/bin/python -m pip install -q --upgrade pip
	$(VENV_MIN)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(VENV_MIN)/bin/python -m pip install -q -c .ci/min-constraints.txt -e ".[test]"
	touch $(STAMP_MIN)

$(STAMP_DECODE): setup.cfg pyproject.toml .ci/decode-constraints.txt
	$(PYTHON) -m venv $(VENV_DECODE)
	$(VENV_DECODE)/bin/python -m pip install -q --upgrade pip
	$(VENV_DECODE)/bin/python -m pip install -q -c .ci/decode-constraints.txt torchvision -e ".[test]"
	touch $(STAMP_DECODE)

install: $(STAMP)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q tests
	$(MAKE) --no-print-directory docs

# The documentation site (mkdocs.yml) into build/site; --strict: a broken link or reference fails it.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -q

# The suite at the lowest supported transformers (CI runs it after `make test`).
test-min: $(STAMP_MIN)
	$(VENV_MIN)/bin/python -m pytest -q -p no:cacheprovider tests

# The --decode gpu path with the real torchvision decode_jpeg on CPU tensors (CI runs it after test-min).
test-decode: $(STAMP_DECODE)
	TAGCONS_REQUIRE_TORCHVISION=1 $(VENV_DECODE)/bin/python -m pytest -q -p no:cacheprovider $(DECODE_TESTS)

demo: $(STAMP)
	$(VENV)/bin/tagcons demo --out demo_out

# Mutation score of the evaluation core: mutmut once per module of pyproject.toml's [tool.tagcons.mutate],
# with that module's tests; writes benchmarks/results/mutation.json (see docs/mutation.md). By default only
# the modules whose code, tests or settings changed since their recorded result; MUTATE=all (or
# `make mutate-all`) runs every one; MUTATE_ARGS passes more (e.g. --jobs 2 --max-children 1).
MUTATE ?= changed
MUTATE_ARGS ?=
mutate: $(STAMP)
	$(PY) benchmarks/mutation.py $(if $(filter all,$(MUTATE)),--all) $(MUTATE_ARGS)

mutate-all: $(STAMP)
	$(PY) benchmarks/mutation.py --all $(MUTATE_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/embed_throughput.py
	$(PY) benchmarks/heads.py
	$(PY) benchmarks/finetune_step.py
	$(PY) benchmarks/cache_scale.py

clean:
	rm -rf demo_out .pytest_cache mutants
