"""Which writing system the hashtags are in, against the languages a backbone's text tower read.

openai/clip-vit-base-patch32 was trained on English text: fed Hangul, its text features carry
almost nothing (Korean retrieval R@1 0.0008 on XM3600 against 0.372 in English). Registry entries
declare their text tower's languages; when most hashtags are in a script none of those languages
is written in, embed warns once with the share and suggests backbones that read it. Checkpoints
of unknown training languages get no warning.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

# Script -> (Unicode ranges, languages written in it). Only scripts a registry entry can speak to.
SCRIPTS = {
    "Hangul": (((0x1100, 0x11FF), (0x3130, 0x318F), (0xA960, 0xA97F), (0xAC00, 0xD7AF)), ("ko",)),
    "Latin": (((0x41, 0x5A), (0x61, 0x7A), (0xC0, 0x24F)), ("en",)),
}
MULTILINGUAL = "multilingual"
MAJORITY = 0.5


def script_of(text: str) -> str | None:
    """The script most of the text's letters are in (None for digits, emoji and the like)."""
    counts = dict.fromkeys(SCRIPTS, 0)
    for char in text:
        code = ord(char)
        for script, (ranges, _) in SCRIPTS.items():
            if any(lo <= code <= hi for lo, hi in ranges):
                counts[script] += 1
    best = max(counts, key=counts.get)
    return best if counts[best] else None


def script_shares(texts) -> dict[str, float]:
    """Share of texts whose letters are mostly in each script."""
    texts = list(texts)
    found = [script_of(t) for t in texts]
    return {script: found.count(script) / len(texts) for script in SCRIPTS} if texts else {}


def reads(languages: tuple[str, ...], script: str) -> bool:
    return MULTILINGUAL in languages or any(lang in languages for lang in SCRIPTS[script][1])


def unread_script(languages: tuple[str, ...] | None, texts) -> tuple[str, float] | None:
    """(script, share) when most texts are in a script the languages do not cover; else None."""
    if languages is None:
        return None
    for script, share in script_shares(texts).items():
        if share > MAJORITY and not reads(languages, script):
            return script, share
    return None


def suggestions(script: str) -> list[str]:
    """Registry aliases whose text tower reads the script."""
    from tagcons.embed.backbones import BACKBONES

    return [name for name, spec in BACKBONES.items() if spec.languages and reads(spec.languages, script)]


def warn_if_unread_script(backbone, texts) -> tuple[str, float] | None:
    """Warn once when most hashtags are in a script the backbone's text tower was not trained on."""
    found = unread_script(backbone.languages, texts)
    if found:
        script, share = found
        log.warning(
            "%.0f%% of the hashtags are written in %s, but backbone %s (%s) was trained on %s text only; "
            "its text features will carry little meaning. Consider --backbone %s",
            100 * share,
            script,
            backbone.name,
            backbone.model_id,
            ", ".join(backbone.languages),
            " or ".join(suggestions(script)),
        )
    return found
