"""The end-to-end model: a CLIP-architecture backbone plus the study's head over [image, text].

Which backbone parameters train is data (`freeze`), and the optimiser's parameter groups come
from each parameter's depth in its tower (`param_groups`); the parameter names of each tower come
from the backbone's family (CLIP, SigLIP, VisionTextDualEncoder), so layer-wise learning-rate decay
works for every supported architecture without per-model code.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.nn import functional as F

from tagcons.embed.families import family_of
from tagcons.embed.features import image_features, text_features
from tagcons.finetune.config import ALL_LAYERS
from tagcons.heads.mlp import build_mlp
from tagcons.labels import DEFAULT_SCALE

log = logging.getLogger(__name__)


class StudyHead(nn.Module):
    """Linear(2d -> hidden) - ReLU - Dropout - Linear(hidden -> K), as in the study (K = 5 there)."""

    def __init__(self, dim: int, hidden: int = 256, dropout: float = 0.3, n_classes: int = DEFAULT_SCALE.n_classes):
        super().__init__()
        self.n_classes = n_classes
        self.net = build_mlp(2 * dim, hidden, dropout, n_classes)  # the fit-head mlp's layers: --init-head maps 1:1

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)

    @torch.no_grad()
    def load_linear(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Make the head compute exactly `weight @ x + bias` (a linear probe) at the start.

        With ReLU, x = relu(x) - relu(-x): hidden units 0..4 carry +Wx, 5..9 carry -Wx, the output
        layer subtracts them. The other hidden units keep their random input weights and get zero
        output weights, so they start silent and learn during fine-tuning.
        """
        first, last, k = self.net[0], self.net[3], self.n_classes
        if first.out_features < 2 * k:
            raise ValueError(f"a hidden size of {first.out_features} cannot hold a {k}-class linear probe")
        first.weight[:k] = weight
        first.weight[k : 2 * k] = -weight
        first.bias[: 2 * k] = 0.0
        last.weight.zero_()
        eye = torch.eye(k, dtype=last.weight.dtype)
        last.weight[:, :k] = eye
        last.weight[:, k : 2 * k] = -eye
        last.bias.copy_(bias)


class FinetuneModel(nn.Module):
    """logits = head([normalise(image features), normalise(text features)])."""

    def __init__(
        self, clip: nn.Module, hidden: int = 256, dropout: float = 0.3, n_classes: int = DEFAULT_SCALE.n_classes
    ):
        super().__init__()
        self.clip = clip
        self.head = StudyHead(family_of(clip.config).feature_width(clip.config), hidden, dropout, n_classes)

    def embed(self, pixel_values, input_ids, attention_mask) -> torch.Tensor:
        image = F.normalize(image_features(self.clip, pixel_values).float(), dim=-1)
        return torch.cat([image, self.text(input_ids, attention_mask)], dim=-1)

    def text(self, input_ids, attention_mask) -> torch.Tensor:
        """Normalised text features; for [templates, batch, tokens] the normalised mean over templates,
        as heads see a prompt-ensemble cache (mean of normalised features, normalised when joined)."""
        if input_ids.dim() == 2:
            return F.normalize(text_features(self.clip, input_ids, attention_mask).float(), dim=-1)
        per_template = [self.text(ids, mask) for ids, mask in zip(input_ids, attention_mask)]
        return F.normalize(torch.stack(per_template).mean(dim=0), dim=-1)

    def forward(self, pixel_values, input_ids, attention_mask) -> torch.Tensor:
        return self.head(self.embed(pixel_values, input_ids, attention_mask))


def tower_depth(name: str, n_layers: dict[str, int], family) -> tuple[str, int] | None:
    """(tower, depth) of a backbone parameter: 0 embeddings, i+1 block i, n+1 final norm/projection."""
    match = family.layer_regex().match(name)
    if match:
        return match.group(1), int(match.group(2)) + 1
    for tower, top in family.tower_tops.items():
        if name.startswith(top):
            return tower, n_layers[tower] + 1
        if name.startswith(tower + "."):
            return tower, 0
    return None  # logit_scale and anything outside the two towers


def n_layers(clip: nn.Module) -> dict[str, int]:
    return {
        "vision_model": clip.config.vision_config.num_hidden_layers,
        "text_model": clip.config.text_config.num_hidden_layers,
    }


def freeze(clip: nn.Module, unfreeze_vision: int, unfreeze_text: int) -> dict[str, int]:
    """Train the last N blocks (and the final norm + projection) of each tower; freeze the rest.

    `logit_scale` always stays frozen: the head does not use it, and the export must keep it.
    Returns the number of trainable parameters per tower.
    """
    layers, family = n_layers(clip), family_of(clip.config)
    keep = {"vision_model": unfreeze_vision, "text_model": unfreeze_text}
    counts = {"vision_model": 0, "text_model": 0}
    for name, parameter in clip.named_parameters():
        place = tower_depth(name, layers, family)
        trains = place is not None and _trains(keep[place[0]], place[1], layers[place[0]])
        parameter.requires_grad_(trains)
        if trains:
            counts[place[0]] += parameter.numel()
    log.info("trainable backbone parameters: vision %d, text %d", counts["vision_model"], counts["text_model"])
    return counts


def _trains(keep: int, depth: int, n: int) -> bool:
    if keep == ALL_LAYERS or keep > n:
        return True
    return keep > 0 and depth > n - keep


def param_groups(
    model: FinetuneModel, lr: float, head_lr: float, weight_decay: float, layer_decay: float
) -> list[dict]:
    """Groups by (lr, decay): lr * layer_decay ** (distance from the tower's top); no decay on biases/norms."""
    layers, family = n_layers(model.clip), family_of(model.clip.config)
    groups: dict[tuple[float, float], list] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if name.startswith("head."):
            group_lr = head_lr
        else:
            tower, depth = tower_depth(name[len("clip.") :], layers, family)
            group_lr = lr * layer_decay ** (layers[tower] + 1 - depth)
        decay = 0.0 if parameter.ndim < 2 else weight_decay
        groups.setdefault((group_lr, decay), []).append(parameter)
    return [{"params": ps, "lr": group_lr, "weight_decay": decay} for (group_lr, decay), ps in sorted(groups.items())]


def backbone_state(model: FinetuneModel) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().cpu().contiguous() for name, tensor in model.clip.state_dict().items()}


def trainable_state(model: FinetuneModel) -> dict[str, torch.Tensor]:
    """The parameters that change (trainable backbone parts + head): what a checkpoint must hold."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad} | {
        name for name, _ in model.head.named_parameters(prefix="head")
    }
    return {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items() if name in trainable}
