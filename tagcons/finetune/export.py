"""Export the fine-tuned backbone so `tagcons embed --backbone RUN_DIR/backbone` re-embeds with it.

`--wise-alpha A` exports WiSE-FT's weight-space ensemble (Wortsman et al. 2022):
(1 - A) * zero-shot + A * fine-tuned, tensor by tensor; A = 1 is the fine-tuned backbone.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from tagcons.embed.backbones import Backbone
from tagcons.evaluate.provenance import FINETUNE_EXPORT_FILE

BACKBONE_DIR = "backbone"
PROVENANCE_FILE = FINETUNE_EXPORT_FILE


def interpolate(zero_shot: dict[str, torch.Tensor], fine_tuned: dict[str, torch.Tensor], alpha: float) -> dict:
    """WiSE-FT: the mix of two state dicts; non-float tensors (ids, counters) come from the fine-tuned one."""
    mixed = {}
    for name, tuned in fine_tuned.items():
        start = zero_shot.get(name)
        if start is None or not tuned.is_floating_point():
            mixed[name] = tuned
        elif alpha == 1.0:
            mixed[name] = tuned  # exact, not 0 * start + 1 * tuned
        elif alpha == 0.0:
            mixed[name] = start.to(tuned.dtype)
        else:
            mixed[name] = torch.lerp(start.to(tuned.dtype), tuned, alpha)
    return mixed


def export_backbone(
    backbone: Backbone,
    zero_shot: dict[str, torch.Tensor],
    alpha: float,
    run_dir: Path,
    provenance: dict,
    progress: bool = False,
) -> Path:
    """Write model + processor + tokenizer under run_dir/backbone (the model's weights are WiSE-mixed first)."""
    model = backbone.model
    current = {name: t.detach().cpu() for name, t in model.state_dict().items()}
    model.load_state_dict(interpolate(zero_shot, current, alpha))
    directory = Path(run_dir) / BACKBONE_DIR
    with _transformers_bars(progress):
        backbone.save_pretrained(directory)
    (directory / PROVENANCE_FILE).write_text(
        json.dumps({**provenance, "wise_alpha": alpha}, indent=2) + "\n", encoding="utf-8"
    )
    return directory


@contextlib.contextmanager
def _transformers_bars(show: bool):
    """save_pretrained draws its own tqdm bar; keep it off unless progress bars were asked for."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    if was_on and not show:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on and not show:
            hf_logging.enable_progress_bar()
