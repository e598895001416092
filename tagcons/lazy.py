"""PEP 562 lazy exports: a package names what it offers and loads each module on first use.

Importing a package then costs nothing, so a command imports only the libraries it uses (a threshold
fit never loads torch, a no-op embed never loads scikit-learn).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], object]:
    """A module-level ``__getattr__`` resolving each name of ``exports`` (name -> module) on first use."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        return getattr(importlib.import_module(exports[name]), name)

    return __getattr__
