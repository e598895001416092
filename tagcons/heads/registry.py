"""Head registry: `@register_head("name")` on a Head subclass; the CLI builds its choices from it.

The built-in heads are named here with the module that registers them, so listing names (CLI
choices, `--head all`) imports nothing and a fit imports only its own head's module: a threshold
fit never loads torch or LightGBM.
"""

from __future__ import annotations

import difflib
import importlib

from tagcons.errors import BadInputError
from tagcons.heads.params import check_head_params, check_seed

HEADS: dict[str, type] = {}
BUILTIN_HEADS = {
    "threshold": "tagcons.heads.threshold",
    "logreg": "tagcons.heads.logreg",
    "mlp": "tagcons.heads.mlp",
    "lgbm": "tagcons.heads.lgbm",
    "ordinal": "tagcons.heads.ordinal",
    "svm": "tagcons.heads.svm",
    "xgb": "tagcons.heads.xgb",
    "text-only": "tagcons.heads.baselines",
    "image-prior": "tagcons.heads.baselines",
}
# Built-in heads whose class has PROBABILISTIC False (they only rank; a test holds this to the classes), so
# commands that need probabilities can list their choices without importing every head's module.
BUILTIN_WITHOUT_PROBABILITIES = ("threshold", "image-prior")


def register_head(name: str):
    def decorate(cls):
        if name in HEADS:
            raise ValueError(f"head '{name}' registered twice")  # a programming error, not user input
        cls.name = name
        HEADS[name] = cls
        return cls

    return decorate


def head_names() -> list[str]:
    """Every head's name, registered or built in (without importing the built-in modules)."""
    return sorted(set(HEADS) | set(BUILTIN_HEADS))


def probabilistic_head_names() -> list[str]:
    """The heads that have probabilities (what `audit` needs), without importing the built-in modules."""
    return [
        name
        for name in head_names()
        if name not in BUILTIN_WITHOUT_PROBABILITIES and (name not in HEADS or HEADS[name].PROBABILISTIC)
    ]


def closest_name(name: str, names) -> str | None:
    """The registered name a mistyped ``name`` most likely meant, if any is close."""
    close = difflib.get_close_matches(name, list(names), n=1, cutoff=0.6)
    return close[0] if close else None


def get_head_class(name: str) -> type:
    if name not in HEADS and name in BUILTIN_HEADS:
        importlib.import_module(BUILTIN_HEADS[name])
    try:
        return HEADS[name]
    except KeyError:
        close = closest_name(name, head_names())
        hint = f"did you mean '{close}'? " if close else ""
        raise BadInputError(f"unknown head '{name}'; {hint}choose one of {', '.join(head_names())}") from None


def all_head_classes() -> dict[str, type]:
    """name -> class of every head (imports all built-in heads)."""
    return {name: get_head_class(name) for name in head_names()}


def make_head(name: str, objective: str | None = None, seed: int = 42, params: dict | None = None):
    """Build a head from its name plus the common settings and any head-specific hyperparameters."""
    cls = get_head_class(name)
    params = dict(params or {})
    if objective is not None:
        if objective not in cls.OBJECTIVES:
            raise BadInputError(
                f"--objective {objective} does not apply to head '{name}'; choose one of {', '.join(cls.OBJECTIVES)}"
            )
        params["objective"] = objective
    if "seed" in cls._get_param_names() and "seed" not in params:
        params["seed"] = check_seed(seed)
    unknown = sorted(set(params) - set(cls._get_param_names()))
    if unknown:
        raise BadInputError(
            f"head '{name}' has no setting {', '.join(unknown)}; it has {', '.join(cls._get_param_names())}"
        )
    check_head_params(cls, params)  # before anything is loaded: a bad value fails fast, naming its range
    return cls(**params)
