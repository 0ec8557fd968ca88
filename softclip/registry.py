"""Plain dict registries (targets, divergences, aggregators, readers, launchers, ...).

Usage::

    TARGETS = Registry("loss.target")

    @TARGETS.register("hard")
    def hard_target(...): ...

    TARGETS.get("hard")      # KeyError naming the valid choices and the closest one
    TARGETS.names()          # sorted list, feeds CLI help, config validation and tests
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

from softclip.errors import SoftclipError

T = TypeVar("T")


class RegistryError(SoftclipError, KeyError):
    """An unknown or duplicate registry name (a configuration error). ``str(err)`` is the human message."""

    exit_code = 2
    label = "config error"

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain message
        return str(self.args[0]) if self.args else ""


def closest(name: str, choices: list[str] | tuple[str, ...]) -> str | None:
    """Return the closest choice to ``name`` (difflib ratio >= 0.5), or None."""
    hits = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.5)
    return hits[0] if hits else None


class Registry(Generic[T]):
    """A name -> object map that refuses duplicates and explains misses.

    Args:
        kind: what the names select, e.g. ``"loss.target"``; used in messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; raises RegistryError on duplicates."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise RegistryError(f"{self.kind}: {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """Look up ``name``; an unknown name raises RegistryError listing the choices."""
        try:
            return self._items[name]
        except KeyError:
            hint = closest(name, self.names())
            extra = f" (did you mean {hint!r}?)" if hint else ""
            raise RegistryError(
                f"{self.kind}={name!r} is not one of: {', '.join(self.names())}{extra}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)
