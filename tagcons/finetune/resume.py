"""A fine-tuning run's directory and checkpoints: a new run, `--overwrite` or `--resume`.

Before training: a run directory that holds a checkpoint is replaced only with `--overwrite` and continued only
with `--resume`, whose settings and fit / validation / test rows must be the interrupted run's. During it:
rank 0 saves `checkpoints/last` after every epoch (`checkpoints/best` when the epoch is the best so far,
history.json beside them); `--resume` restores the weights, optimiser, schedule, scaler, random state and the
`TrainingState`.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from tagcons.distributed import DistContext
from tagcons.errors import BadInputError
from tagcons.evaluate.provenance import side_hashes
from tagcons.evaluate.rundir import CONFIG_FILE, read_json, write_json
from tagcons.finetune import checkpoint
from tagcons.finetune.config import FinetuneConfig
from tagcons.finetune.loop import Trainer
from tagcons.finetune.partition import FinetunePartition
from tagcons.finetune.training_state import TrainingState
from tagcons.labels import AUTO

log = logging.getLogger(__name__)
CHECKPOINTS = "checkpoints"


def _check_run_dir(config: FinetuneConfig, dist: DistContext) -> None:
    last = config.run_dir / CHECKPOINTS / "last"
    checkpoint.recover_checkpoint(last)
    if config.resume and config.overwrite:
        raise BadInputError("--resume continues the run in --out and --overwrite replaces it: pass one of them")
    if config.overwrite:
        _remove_run(config.run_dir, last, dist)
    if config.resume and not last.is_dir():
        raise BadInputError(f"{config.run_dir}: no checkpoint to resume ({last} is missing); run without --resume")
    if not config.resume and last.is_dir():
        raise BadInputError(
            f"{config.run_dir}: already holds a fine-tuning run; pass --resume to continue it, --overwrite to replace "
            "it, or choose another --out"
        )


def _remove_run(run_dir: Path, last: Path, dist: DistContext) -> None:
    """--overwrite: the fine-tuning run in ``run_dir`` (it has a checkpoint) is deleted before the new one starts."""
    if dist.is_main and last.is_dir():
        log.warning("%s: replacing the fine-tuning run there (--overwrite)", run_dir)
        shutil.rmtree(run_dir)
    dist.barrier()


RESUME_MAY_CHANGE = {
    "overwrite",
    "epochs",
    "patience",
    "device",
    "workers",
    "out",
    "data",
    "images",
    "init_head",
    "allow_unverified_init",
}


def _resumed_head_init(config: FinetuneConfig) -> str:
    """The interrupted run's head_init; refuses a resume whose settings differ from the run's."""
    saved = read_json(config.run_dir / CONFIG_FILE)
    requested = config.to_dict()
    if requested["scale"] == AUTO:  # the run recorded the range auto resolved to
        requested.pop("scale")
    changed = sorted(k for k, v in requested.items() if k not in RESUME_MAY_CHANGE and saved.get(k, v) != v)
    if changed:
        shown = ", ".join(f"{k}: {saved[k]!r} -> {requested[k]!r}" for k in changed[:5])
        raise BadInputError(
            f"{config.run_dir}: --resume with other settings than the run's ({shown}); "
            "resume with the same flags or start a new --out"
        )
    return saved.get("head_init", "resumed")


def _check_resumed_partition(config: FinetuneConfig, partition: FinetunePartition) -> None:
    """--resume must see the same fit / validation / test rows: else trained rows could land in test."""
    saved = read_json(config.run_dir / CONFIG_FILE).get("parts")
    if saved is None:
        log.warning("%s: the run predates part hashes; cannot check that --resume sees the same rows", config.run_dir)
        return
    current = side_hashes(partition.side_keys())
    changed = [name for name in current if saved.get(name) != current[name]]
    if changed:
        raise BadInputError(
            f"{config.run_dir}: --resume with other rows than the run's (the {', '.join(changed)} part(s) changed: "
            "another --data, --images or failed images); rows already trained on could now be tested. "
            "Resume with the run's --data and --images, or start a new --out"
        )


def _save_epoch(config, model, trainer: Trainer, state: TrainingState, dist: DistContext) -> None:
    if dist.is_main:
        root = config.run_dir / CHECKPOINTS
        if state.best_epoch == state.epoch:
            checkpoint.save_checkpoint(
                root / "best", model, {"epoch": state.epoch, "score": list(state.best_score or [])}
            )
        checkpoint.save_checkpoint(root / "last", model, _checkpoint_state(trainer, state))
        write_json(config.run_dir / "history.json", state.history)
    dist.barrier()


def _checkpoint_state(trainer: Trainer, state: TrainingState) -> dict:
    return {
        "optimizer": trainer.optimizer.state_dict(),
        "schedule": trainer.schedule.state_dict(),
        "scaler": trainer.precision.scaler.state_dict(),
        "rng": checkpoint.rng_state(),
        "progress": {
            "epoch": state.epoch,
            "best_score": list(state.best_score or []),
            "best_epoch": state.best_epoch,
            "waited": state.waited,
            "stopped": state.stopped,
            "history": state.history,
        },
    }


def _resume(config, model, trainer: Trainer) -> TrainingState:
    last = config.run_dir / CHECKPOINTS / "last"
    checkpoint.load_weights(last, model)
    state = checkpoint.load_state(last)
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.schedule.load_state_dict(state["schedule"])
    trainer.precision.scaler.load_state_dict(state["scaler"])
    checkpoint.set_rng_state(state["rng"])
    saved = state["progress"]
    log.info("resuming %s after epoch %d", config.run_dir, saved["epoch"])
    return TrainingState(
        saved["epoch"],
        tuple(saved["best_score"]) or None,
        saved["best_epoch"],
        saved["waited"],
        saved["stopped"],
        saved["history"],
    )
