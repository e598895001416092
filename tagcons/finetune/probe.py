"""LP-FT's first stage: a linear probe on frozen features, as the head's starting point.

Either read from a `fit-head` run (`--init-head RUN_DIR`, a logreg or mlp head on concat
features) or fitted here: multinomial logistic regression (full-batch L-BFGS in torch) on the
frozen backbone's features of the fit part. A linear probe enters the MLP head exactly
(`StudyHead.load_linear`); an mlp run of the same shape is copied as is.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from tagcons.embed.templates import template_attr, templates_from_attr
from tagcons.errors import BadInputError
from tagcons.evaluate.rundir import CONFIG_FILE, read_json
from tagcons.finetune.model import FinetuneModel
from tagcons.labels import DEFAULT_SCALE, ScoreScale

log = logging.getLogger(__name__)
ABSENT_CLASS_BIAS = -20.0  # a score the probe never saw: never predicted at the start
PROBE_L2 = 1e-3
PROBE_STEPS = 100


class EmbedOnly(nn.Module):
    """Makes `collect_outputs` return the [image, text] features instead of logits."""

    def __init__(self, model: FinetuneModel):
        super().__init__()
        self.model = model

    def forward(self, pixel_values, input_ids, attention_mask):
        return self.model.embed(pixel_values, input_ids, attention_mask)


def fit_linear_probe(
    features: np.ndarray,
    labels: np.ndarray,
    weights: torch.Tensor,
    seed: int,
    score_scale: ScoreScale = DEFAULT_SCALE,
) -> tuple:
    """(weight [K, 2d], bias [K]) of a class-weighted, L2-penalised softmax regression on standardised features."""
    x = torch.as_tensor(features, dtype=torch.float32)
    y = torch.as_tensor(score_scale.column_of(labels).astype(np.int64))
    mean, scale = x.mean(dim=0), x.std(dim=0).clamp_min(1e-6)
    z = (x - mean) / scale
    generator = torch.Generator().manual_seed(seed)
    weight = (torch.randn(score_scale.n_classes, z.shape[1], generator=generator) * 0.01).requires_grad_()
    bias = torch.zeros(score_scale.n_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=PROBE_STEPS, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(z @ weight.T + bias, y, weight=weights) + PROBE_L2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return _fold_standardisation(weight.detach(), bias.detach(), mean, scale)


def _fold_standardisation(weight, bias, mean, scale) -> tuple[torch.Tensor, torch.Tensor]:
    """W((x - m) / s) + b == (W / s) x + (b - (W / s) m): the head sees raw features."""
    folded = weight / scale
    return folded, bias - folded @ mean


def load_init_head(
    model: FinetuneModel, run_dir: str | Path, scale: ScoreScale = DEFAULT_SCALE, templates=("{}",)
) -> str:
    """Start the head from a fit-head run; returns the kind of head read. BadInputError if it does not fit."""
    from tagcons.heads import load_head  # heads pull in sklearn/lightgbm: only when asked for

    check_same_templates(run_dir, templates)
    head = load_head(run_dir)
    dim = model.head.net[0].in_features
    if head.init_kind == "network":
        _copy_mlp(model, head, dim, run_dir, _columns(head, scale, run_dir))
    elif head.init_kind == "linear":
        columns = _columns(head, scale, run_dir)
        model.head.load_linear(*_logreg_linear(head, dim, run_dir, columns, model.head.n_classes))
    else:
        raise BadInputError(
            f"--init-head {run_dir}: a '{head.name}' head cannot start a fine-tuning head; "
            "pass a logreg or mlp run (fit-head --features concat)"
        )
    log.info("head initialised from %s run %s", head.name, run_dir)
    return head.name


def check_same_templates(run_dir: str | Path, templates) -> None:
    """The donor head learnt on texts encoded with its cache's templates; the fine-tune must encode alike."""
    config_path = Path(run_dir) / CONFIG_FILE
    recorded = read_json(config_path).get("text_template") if config_path.is_file() else None
    if recorded is not None and templates_from_attr(recorded) != tuple(templates):
        wanted = " ".join(f"--text-template '{t}'" for t in templates_from_attr(recorded))
        raise BadInputError(
            f"--init-head {run_dir}: its head was fit on texts encoded as {recorded!r}, this fine-tune encodes "
            f"them as {template_attr(templates)!r}; pass {wanted} to finetune"
        )


def _columns(head, scale: ScoreScale, run_dir) -> np.ndarray:
    """The fine-tuning head's column of each score the fit-head run saw."""
    if scale.outside(head.classes_).any():
        raise BadInputError(
            f"--init-head {run_dir}: its scores {head.classes_.tolist()} are not on this run's scale {scale}; "
            "pass the scale the head was fitted with (--scale)"
        )
    return scale.column_of(head.classes_)


def _copy_mlp(model: FinetuneModel, head, dim: int, run_dir, columns: np.ndarray) -> None:
    if head.in_dim_ != dim or head.hidden != model.head.net[0].out_features:
        raise BadInputError(
            f"--init-head {run_dir}: its mlp takes {head.in_dim_} features with {head.hidden} hidden units, "
            f"this backbone's head needs {dim} (concat features) and --hidden {model.head.net[0].out_features}"
        )
    state, net = head.model_.state_dict(), model.head.net
    net[0].load_state_dict({"weight": state["0.weight"], "bias": state["0.bias"]})
    at = torch.as_tensor(columns)  # the scores it saw, among the fine-tuning head's
    with torch.no_grad():  # scores it never saw keep (almost) no probability, as a linear probe's do
        net[3].weight.zero_()
        net[3].bias.fill_(ABSENT_CLASS_BIAS)
        net[3].weight[at], net[3].bias[at] = state["3.weight"], state["3.bias"]


def _logreg_linear(head, dim: int, run_dir, columns: np.ndarray, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    if head.coef_.shape[1] != dim:
        raise BadInputError(
            f"--init-head {run_dir}: its logreg takes {head.coef_.shape[1]} features, this backbone's "
            f"head needs {dim}; fit the head on this backbone's cache with --features concat"
        )
    weight = torch.zeros(n_classes, dim, dtype=torch.float64)
    bias = torch.full((n_classes,), ABSENT_CLASS_BIAS, dtype=torch.float64)
    at = torch.as_tensor(columns)
    coef, intercept = torch.as_tensor(head.coef_), torch.as_tensor(head.intercept_)
    if len(at) == 2 and coef.shape[0] == 1:  # binary logistic regression: one row for the second class
        coef, intercept = (
            torch.cat([torch.zeros_like(coef), coef]),
            torch.cat([torch.zeros(1, dtype=coef.dtype), intercept]),
        )
    folded, folded_bias = _fold_standardisation(
        coef, intercept, torch.as_tensor(head.mean_), torch.as_tensor(head.scale_)
    )
    weight[at], bias[at] = folded, folded_bias
    return weight.float(), bias.float()
