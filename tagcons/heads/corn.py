"""CORN, a rank-consistent ordinal loss for neural heads (Shi, Cao and Raschka, 2021).

The network has K - 1 outputs. Output k is trained, on the rows whose score is above k (scores
0-based), to tell whether the score is also above k + 1: a conditional probability. Chaining them,
P(score > k) = prod_{j <= k} sigmoid(output_j), which can only fall as k grows, so the cumulative
probabilities never cross (rank consistency) whatever the weights.

With class weights (the balanced weights every weighting head uses, `tagcons.labels.class_weights`)
each row's terms count w[score] times, and the mean divides by the summed weights, as torch's weighted
cross-entropy does; without them the loss is coral_pytorch's ``corn_loss``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def corn_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean binary cross-entropy of every conditional task over the rows it applies to; target is 0-based.

    ``weight`` (one per class) weighs each row by its class: sum of w * BCE over sum of w."""
    rows = torch.ones_like(logits[:, 0]) if weight is None else weight.to(logits.dtype)[target]
    total, count = logits.new_zeros(()), logits.new_zeros(())
    for k in range(logits.shape[1]):
        applies = target >= k
        if applies.any():
            above = (target[applies] > k).to(logits.dtype)
            losses = F.binary_cross_entropy_with_logits(logits[applies, k], above, reduction="none")
            total = total + (rows[applies] * losses).sum()
            count = count + rows[applies].sum()
    return total / count if count > 0 else total  # no task applies: 0


def corn_cumulative(logits: torch.Tensor) -> torch.Tensor:
    """P(score > k) for k = 0..K-2: cumulative products of the conditional probabilities."""
    return torch.cumprod(torch.sigmoid(logits), dim=1)


def corn_proba(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities [n, K] from the K - 1 CORN outputs."""
    above = corn_cumulative(logits)
    ones = torch.ones_like(above[:, :1])
    zeros = torch.zeros_like(above[:, :1])
    return torch.cat([ones, above], dim=1) - torch.cat([above, zeros], dim=1)
