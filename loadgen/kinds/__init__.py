"""Client kinds (DESIGN.md section 4), one module each, registered by name.

A kind is a `loadgen.base.CasUser` subclass with `client_kind` set and decorated with `@register`;
every module of this package is imported when KINDS is first used, so adding a kind is adding a file.
"""

from __future__ import annotations

import importlib
import pkgutil

from lab.model import CLIENT_KINDS
from loadgen.base import CasUser

KINDS: dict[str, type[CasUser]] = {}


def register(cls: type[CasUser]) -> type[CasUser]:
    if cls.client_kind not in CLIENT_KINDS:
        raise ValueError(f"unknown client kind {cls.client_kind!r}")
    KINDS[cls.client_kind] = cls
    return cls


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
