"""Checkpoints: `last/` (to resume) and `best/` (to evaluate and export), rewritten every epoch.

Weights go to `model.safetensors` and hold only what trains (trainable backbone blocks + head);
the frozen rest is the backbone as loaded, whose revision the state records and `--resume`
checks. `state.pt` holds optimiser, schedule, loss scaler, RNG streams, epoch and the early-stopping
record as tensors and plain values only, so it loads with `torch.load(weights_only=True)`.
A checkpoint is written to `NAME.tmp` and swapped in (`NAME` -> `NAME.old`, `NAME.tmp` -> `NAME`,
`NAME.old` deleted), so a kill never leaves half of one; `recover_checkpoint` puts a swap a kill
interrupted back in order (every later save and resume calls it), whichever step the kill hit.
"""

from __future__ import annotations

import contextlib
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tagcons.errors import BadInputError
from tagcons.finetune.model import FinetuneModel, trainable_state

WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "state.pt"


def save_checkpoint(directory: Path, model: FinetuneModel, state: dict) -> Path:
    """Write weights + `state` (plain values and tensors) to `directory`, replacing it whole."""
    directory = Path(directory)
    recover_checkpoint(directory)
    staging, retired = _staging(directory), _retired(directory)
    staging.mkdir(parents=True)
    save_file(trainable_state(model), str(staging / WEIGHTS_FILE))
    torch.save(state, staging / STATE_FILE)
    if directory.exists():
        directory.rename(retired)
    staging.rename(directory)
    shutil.rmtree(retired, ignore_errors=True)
    return directory


def recover_checkpoint(directory: Path) -> None:
    """Finish or undo a swap a kill interrupted: afterwards only `directory` (if any) remains.

    `NAME` missing but `NAME.old` present: the kill came between the two renames, so the previous
    checkpoint goes back in place. `NAME` present: any `NAME.old` is a leftover. `NAME.tmp` is always
    an unfinished (or never swapped-in) write.
    """
    directory = Path(directory)
    retired = _retired(directory)
    if retired.is_dir() and not directory.exists():
        with contextlib.suppress(FileNotFoundError):  # another rank may have just done it
            retired.rename(directory)
    shutil.rmtree(retired, ignore_errors=True)
    shutil.rmtree(_staging(directory), ignore_errors=True)


def _staging(directory: Path) -> Path:
    return directory.with_name(directory.name + ".tmp")


def _retired(directory: Path) -> Path:
    return directory.with_name(directory.name + ".old")


def load_weights(directory: Path, model: FinetuneModel) -> None:
    """Put a checkpoint's trainable weights into `model` (which holds the same backbone as loaded)."""
    recover_checkpoint(directory)
    weights = load_file(str(Path(directory) / WEIGHTS_FILE))
    missing = set(trainable_state(model)) - set(weights)
    if missing:
        raise BadInputError(
            f"{directory}: the checkpoint lacks {len(missing)} trainable tensors (e.g. "
            f"{sorted(missing)[0]}); it was written with other --unfreeze-* settings"
        )
    model.load_state_dict(weights, strict=False)


def load_state(directory: Path) -> dict:
    recover_checkpoint(directory)
    path = Path(directory) / STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise BadInputError(f"{path}: no checkpoint to resume from; run without --resume") from e


def rng_state() -> dict:
    """Every random stream the training touches, as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": _plain(random.getstate()),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
