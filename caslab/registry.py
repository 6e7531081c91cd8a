"""How plug-ins register by name: mock CAS services, balancer drivers and client kinds alike.

A `Registry` knows the names its plug-ins may have (a tuple of `caslab.vocab`) and the package whose
modules hold them. Each plug-in module registers its class with `@registry.register` when imported; the
registry imports every module of its package the first time it is asked for a plug-in, so adding a
plug-in is adding a module. A name outside the vocabulary, or a name registered twice, raises at once.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T", bound=type)


class NotRegistered(LookupError):
    """No plug-in of that name; the message lists the ones there are."""


class Registry(Generic[T]):
    def __init__(self, what: str, names: tuple[str, ...], package: str, name_of: Callable[[T], str]) -> None:
        """`what` names the kind of plug-in in messages ("service", "balancer driver"); `names` are the
        allowed names; `package` is the dotted name of the package to import; `name_of` reads a plug-in
        class's name (its `id`, `name`, `client_kind`)."""
        self.what = what
        self.names = names
        self.package = package
        self.name_of = name_of
        self._plugins: dict[str, T] = {}
        self._loaded = False

    def register(self, cls: T) -> T:
        """Class decorator: make `cls` known under its name."""
        name = self.name_of(cls)
        if name not in self.names:
            raise ValueError(f"{self.what} {name!r} is not one of caslab's: {', '.join(self.names)}")
        if name in self._plugins:
            first = self._plugins[name].__module__
            raise ValueError(f"{self.what} {name!r} registered twice ({first}, {cls.__module__})")
        self._plugins[name] = cls
        return cls

    def load(self) -> None:
        """Import every module of the package, so each plug-in registers itself (once)."""
        if self._loaded:
            return
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self.package}.{module.name}")
        self._loaded = True

    def __getitem__(self, name: str) -> T:
        self.load()
        if name not in self._plugins:
            raise NotRegistered(f"unknown {self.what} {name!r}; available: {', '.join(self)}")
        return self._plugins[name]

    def __contains__(self, name: object) -> bool:
        self.load()
        return name in self._plugins

    def __iter__(self) -> Iterator[str]:
        self.load()
        return iter(sorted(self._plugins, key=self.names.index))

    def __len__(self) -> int:
        self.load()
        return len(self._plugins)

    @contextlib.contextmanager
    def replaced(self, cls: T) -> Iterator[T]:
        """Within the block, `cls` stands in for the plug-in of its name (a name of the vocabulary): for
        tests that need a plug-in to behave in a given way."""
        self.load()
        name = self.name_of(cls)
        if name not in self.names:
            raise ValueError(f"{self.what} {name!r} is not one of caslab's: {', '.join(self.names)}")
        saved = self._plugins.get(name)
        self._plugins[name] = cls
        try:
            yield cls
        finally:
            if saved is None:
                del self._plugins[name]
            else:
                self._plugins[name] = saved

    def items(self) -> list[tuple[str, T]]:
        return [(name, self._plugins[name]) for name in self]
