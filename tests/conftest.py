"""Shared fixtures: no network, small files written on the fly."""

import gc
import importlib
import json
import logging
import os
import sys
from pathlib import Path

import pytest

# Never touch the hub from tests: a failed lookup must fail at once, not after retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Under `make mutate` this file is first imported in mutmut's fork server, and every mutant's test run is a
# fork of it: libraries imported here are imported once, not once per mutant (3 s of a 4 s fit-head test).
MUTATION_PRELOAD = (
    "pandas",
    "pyarrow.csv",
    "h5py",
    "scipy.stats",
    "sklearn.linear_model",
    "sklearn.feature_extraction.text",
    "sklearn.model_selection",
    "sklearn.metrics",
    "matplotlib.pyplot",
    "matplotlib.font_manager",
    "lightgbm",
    "torch",
)
if "mutmut" in sys.modules:
    os.environ.setdefault("MPLBACKEND", "Agg")
    for module in MUTATION_PRELOAD:
        importlib.import_module(module)
    # Out of the garbage collector's sight: a forked mutant's collections would otherwise walk, and so copy,
    # every page of these libraries' objects (0.3 s per mutant on 2 cores). torch._dynamo is left out for the
    # same reason: it would save the mlp tests 2.5 s but cost every mutant 0.15 s more to fork.
    gc.freeze()

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_CSV = REPO_ROOT.parent / "shared" / "data" / "combined_data.csv"


@pytest.fixture(autouse=True)
def no_cli_log_handler_outlives_its_test():
    """A command run in-process (`main([...])`) installs the CLI's stderr handler on the "tagcons" logger;
    left there, the next test's library calls would log into its captured stderr (one-line checks failed
    in a random order). Each test starts and ends without it."""
    logger = logging.getLogger("tagcons")
    saved = (list(logger.handlers), logger.level)
    yield
    logger.handlers[:], level = saved
    logger.setLevel(level)


@pytest.fixture
def write_csv(tmp_path):
    """Write rows (list of lists) under a header to a CSV file and return its path."""

    def write(rows, header=("Image Filename", "Hashtag", "Score"), name="pairs.csv", encoding="utf-8", sep=","):
        lines = [sep.join(header)] + [sep.join(str(cell) for cell in row) for row in rows]
        path = tmp_path / name
        path.write_text("\n".join(lines) + "\n", encoding=encoding)
        return path

    return write


@pytest.fixture
def reference_csv():
    if not REFERENCE_CSV.is_file():
        pytest.skip("reference data ../shared/data/combined_data.csv is not present (only beside the project)")
    return REFERENCE_CSV


def pytest_collection_modifyitems(config, items):
    """Under mutmut (`make mutate`) only: quickest tests first, so a mutant costs its quickest killing test.

    Files are kept together (module fixtures are built once): the file holding the quickest test runs first.
    The durations are the ones mutmut measured in its clean run (mutmut-stats.json in its working folder).
    """
    stats = Path("mutmut-stats.json")
    if not os.environ.get("MUTANT_UNDER_TEST") or not stats.is_file():
        return
    seconds = json.loads(stats.read_text(encoding="utf-8")).get("duration_by_test", {})
    quickest_in_file: dict[str, float] = {}
    for item in items:
        file = item.nodeid.split("::")[0]
        quickest_in_file[file] = min(quickest_in_file.get(file, float("inf")), seconds.get(item.nodeid, float("inf")))
    items.sort(key=lambda item: (quickest_in_file[item.nodeid.split("::")[0]], seconds.get(item.nodeid, float("inf"))))
