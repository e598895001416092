"""Text templates: how a hashtag is put into words for the text tower.

One template (default "{}") stores the model's projected features as they are. Several form a
prompt ensemble: a text's cached features are the mean of its L2-normalised features under each
template. The cache's `text_template` attribute holds the single template, or a JSON list of the
templates of an ensemble; either way it is part of the fingerprint.
"""

from __future__ import annotations

import json

from tagcons.errors import BadInputError


def check_templates(templates) -> tuple[str, ...]:
    templates = tuple(templates)
    if not templates:
        raise BadInputError("--text-template needs at least one template, e.g. --text-template '{}'")
    for template in templates:
        if "{}" not in template:
            raise BadInputError(f"--text-template '{template}' has no '{{}}' where the hashtag goes")
    if len(set(templates)) < len(templates):
        raise BadInputError(f"--text-template lists a template twice ({', '.join(templates)}); give each once")
    return templates


def template_attr(templates) -> str:
    """The cache attribute: the template itself, or a JSON list for an ensemble."""
    templates = tuple(templates)
    return templates[0] if len(templates) == 1 else json.dumps(list(templates), ensure_ascii=False)


def templates_from_attr(value: str) -> tuple[str, ...]:
    """Inverse of `template_attr`."""
    if value.startswith("["):
        return tuple(json.loads(value))
    return (value,)
