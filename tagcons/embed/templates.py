"""Text templates: how a hashtag is put into words for the text tower.

One template (default "{}") stores the model's projected features as they are. Several form a
prompt ensemble: a text's cached features are the mean of its L2-normalised features under each
template. The cache's `text_template` attribute holds the single template, or a JSON list of the
templates of an ensemble; either way it is part of the fingerprint.
"""

from __future__ import annotations

import json
from string import Formatter

from tagcons.errors import BadInputError


def check_templates(templates) -> tuple[str, ...]:
    templates = tuple(templates)
    if not templates:
        raise BadInputError("--text-template needs at least one template, e.g. --text-template '{}'")
    for template in templates:
        _check_one_field(template)
    if len(set(templates)) < len(templates):
        raise BadInputError(f"--text-template lists a template twice ({', '.join(templates)}); give each once")
    return templates


def _check_one_field(template: str) -> None:
    """One plain ``{}`` where the hashtag goes and no other field (``{{`` and ``}}`` write a brace)."""
    try:
        fields = [(name, spec, convert) for _, name, spec, convert in Formatter().parse(template) if name is not None]
    except ValueError:  # a lone brace
        fields = None
    if fields is None or fields != [("", "", None)]:
        raise BadInputError(
            f"--text-template '{template}': put exactly one plain '{{}}' where the hashtag goes and no other field "
            "(write '{{' or '}}' for a brace)"
        )


def template_attr(templates) -> str:
    """The cache attribute: the template itself, or a JSON list for an ensemble."""
    templates = tuple(templates)
    return templates[0] if len(templates) == 1 else json.dumps(list(templates), ensure_ascii=False)


def templates_from_attr(value: str) -> tuple[str, ...]:
    """Inverse of `template_attr`."""
    if value.startswith("["):
        return tuple(json.loads(value))
    return (value,)
