"""Where fine-tuning stands (`TrainingState`): each epoch's record in the history, the best epoch, early stopping.

`epoch_line` is one epoch's figures as the log shows them. `tagcons.finetune.resume` saves the state after
every epoch and restores it for `--resume`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# train_loss and val_loss are computed alike (eval mode, after the epoch, class-weighted), so their gap shows
# over-fitting; train_loss_running is the mean loss during the epoch (dropout on, weights moving).
HISTORY_KEYS = (
    "train_loss",
    "train_loss_running",
    "val_loss",
    "val_accuracy",
    "val_macro_f1",
    "val_qwk",
    "samples_per_s",
)


@dataclass
class TrainingState:
    """What `last/state.pt` records besides the optimiser: where training is and the best so far."""

    epoch: int = 0  # epochs completed
    best_score: tuple[float, float] | None = None  # (validation QWK, -validation loss)
    best_epoch: int = 0
    waited: int = 0
    stopped: bool = False
    history: dict = field(default_factory=lambda: {k: [] for k in HISTORY_KEYS})


EPOCH_NAMES = {
    "train_loss": "train loss",
    "train_loss_running": "running train loss",
    "val_loss": "validation loss",
    "val_accuracy": "validation accuracy",
    "val_macro_f1": "validation macro-F1",
    "val_qwk": "validation QWK",
}


def epoch_line(epoch: int, epochs: int, record: dict) -> str:
    """`epoch 2/3: train loss 1.0767, validation QWK 0.2148, ... (912 samples/s)`: one epoch's figures, readable."""
    figures = [f"{EPOCH_NAMES.get(k, k.replace('_', ' '))} {v:.4f}" for k, v in record.items() if k != "samples_per_s"]
    speed = f" ({record['samples_per_s']:.0f} samples/s)" if "samples_per_s" in record else ""
    return f"epoch {epoch}/{epochs}: {', '.join(figures)}{speed}"


def _advance(state: TrainingState, record: dict, patience: int) -> None:
    """Append the epoch; a better (QWK, then lower loss) validation score becomes the best.

    Without a validation side (--val-size 0) every epoch runs and the last one is kept.
    """
    for key in HISTORY_KEYS:
        if key in record:
            state.history.setdefault(key, []).append(float(record[key]))
    state.epoch += 1
    if "val_qwk" not in record:
        state.best_epoch = state.epoch
        return
    score = (record["val_qwk"], -record["val_loss"])
    if state.best_score is None or score > state.best_score:
        state.best_score, state.best_epoch, state.waited = score, state.epoch, 0
    else:
        state.waited += 1
        state.stopped = patience > 0 and state.waited >= patience
