"""The text pass of `tagcons embed`: each new hashtag (under every template) -> the text tower -> cache parts.

Texts are encoded in length-sorted batches (padding never changes a text's features, only the cost)
and committed every `commit_rows` rows or `commit_seconds`; texts the tokenizer's limit cuts are
counted and warned about.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from tqdm.auto import tqdm

from tagcons.cache.rows import l2_normalise
from tagcons.embed.backbones import Backbone
from tagcons.embed.job import EmbedSummary, EncodeJob

log = logging.getLogger(__name__)


def embed_texts(job: EncodeJob, texts: list[str], summary: EmbedSummary) -> None:
    config = job.config
    known = job.writer.known_texts()
    todo = [t for t in texts if t not in known]
    summary.texts_cached = len(texts) - len(todo)
    if not todo:
        return
    import torch  # with the model: a run with nothing new never imports it

    started = time.perf_counter()
    # Length-sorted batches pad least; padding never changes a text's features (tested), only cost.
    todo.sort(key=lambda t: (len(t.encode("utf-8")), t))
    bar = tqdm(total=len(todo), desc="texts", unit="txt", disable=not config.progress, dynamic_ncols=True)
    keys, arrays, last_commit = [], [], time.monotonic()
    with torch.inference_mode(), bar:
        for start in range(0, len(todo), config.batch_size):
            batch = todo[start : start + config.batch_size]
            keys.extend(batch)
            arrays.append(encode_texts(job.backbone, batch, config.text_templates, config.batch_size, job.device))
            bar.update(len(batch))
            if len(keys) >= config.commit_rows or time.monotonic() - last_commit >= config.commit_seconds:
                job.writer.commit_texts(keys, np.concatenate(arrays))
                keys, arrays, last_commit = [], [], time.monotonic()
    if keys:
        job.writer.commit_texts(keys, np.concatenate(arrays))
    summary.texts_new = len(todo)
    summary.text_seconds = time.perf_counter() - started
    count_truncated(job.backbone, todo, config.text_templates, summary)


EXCERPT_CHARS = 40  # a message quotes this much of a long hashtag


def count_truncated(backbone: Backbone, texts: list[str], templates, summary: EmbedSummary) -> None:
    """Texts the tokenizer's limit cuts (under any template): counted, warned about with an example."""
    from tagcons.embed.features import token_counts

    limit = backbone.max_text_tokens
    cut = set()
    for template in templates:
        counts = token_counts(backbone.tokenizer, [template.format(t) for t in texts])
        cut.update(t for t, n in zip(texts, counts) if n > limit)
    summary.texts_truncated = len(cut)
    if cut:
        summary.truncated_example = min(cut, key=lambda t: (-len(t), t))
        log.warning(
            "%d of %d hashtags are longer than the text tower's %d tokens and were cut (e.g. %s); "
            "their features see only the first %d tokens",
            len(cut),
            len(texts),
            limit,
            excerpt(summary.truncated_example),
            limit,
        )


def excerpt(text: str, chars: int = EXCERPT_CHARS) -> str:
    """A text quoted in a message: whole when short, else its start and its length."""
    return repr(text) if len(text) <= chars else f"{text[:chars]!r}... ({len(text)} characters)"


def encode_texts(backbone: Backbone, texts: list[str], templates, batch_size: int, device) -> np.ndarray:
    """Text features, float32 [len(texts), d], in the order given.

    One template: the projected features as the model gives them. Several (a prompt ensemble, as in
    CLIP's zero-shot practice): the mean over templates of the L2-normalised features.
    """
    if isinstance(templates, str):
        templates = (templates,)
    if len(templates) == 1:
        return _encode_template(backbone, texts, templates[0], batch_size, device)
    per_template = [_encode_template(backbone, texts, t, batch_size, device) for t in templates]
    return np.mean([l2_normalise(f) for f in per_template], axis=0).astype(np.float32)


def _encode_template(backbone: Backbone, texts: list[str], template: str, batch_size: int, device) -> np.ndarray:
    from tagcons.embed.features import text_features

    out = []
    for start in range(0, len(texts), batch_size):
        tokens = backbone.tokenize([template.format(t) for t in texts[start : start + batch_size]])
        tokens = {name: tensor.to(device) for name, tensor in tokens.items()}
        out.append(text_features(backbone.model, **tokens).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, backbone.projection_dim), np.float32)
