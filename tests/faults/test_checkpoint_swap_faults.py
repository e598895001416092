"""A fine-tune killed at any step of the checkpoint swap resumes and saves again (issue 10, defect 4)."""

import shutil
from pathlib import Path

import pytest
import torch

from tagcons.embed.tiny import build_tiny
from tagcons.finetune import checkpoint
from tagcons.finetune.model import FinetuneModel, freeze


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after the crash point runs, no cleanup handler catches it."""


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = FinetuneModel(build_tiny()[0])
    freeze(model.clip, 1, 0)
    return model


def _kill_during_swap(monkeypatch, step: str) -> None:
    """Crash the next save at `step`: before the first rename, between the renames, or deleting last.old."""
    renames = []
    real_rename, real_rmtree = Path.rename, shutil.rmtree

    def rename(self, target):
        if (step, len(renames)) in (("before_first_rename", 0), ("between_renames", 1)):
            raise Killed(step)
        renames.append(self)
        return real_rename(self, target)

    def rmtree(path, *args, **kwargs):
        if step == "deleting_old" and len(renames) == 2 and str(path).endswith(".old"):
            (Path(path) / checkpoint.WEIGHTS_FILE).unlink()  # half deleted when the kill comes
            raise Killed(step)
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(Path, "rename", rename)
    monkeypatch.setattr(shutil, "rmtree", rmtree)


@pytest.mark.parametrize("step", ["before_first_rename", "between_renames", "deleting_old"])
def test_a_kill_at_any_swap_step_leaves_a_resumable_run(model, tmp_path, monkeypatch, step):
    last = tmp_path / "checkpoints" / "last"
    checkpoint.save_checkpoint(last, model, {"epoch": 1})
    with monkeypatch.context() as patched:
        _kill_during_swap(patched, step)
        with pytest.raises(Killed):
            checkpoint.save_checkpoint(last, model, {"epoch": 2})
    assert checkpoint.load_state(last)["epoch"] in (1, 2)  # resume finds a whole checkpoint
    checkpoint.load_weights(last, model)
    checkpoint.save_checkpoint(last, model, {"epoch": 3})  # and the next epoch's save works
    assert checkpoint.load_state(last)["epoch"] == 3
    assert sorted(p.name for p in last.parent.iterdir()) == ["last"]
