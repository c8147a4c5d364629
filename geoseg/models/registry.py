"""A small typed registry with decorator registration and entry-point plugins."""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from geoseg.errors import GeosegWarning, RegistryError, UnknownNameError

__all__ = ["Registry", "suggest"]

T = TypeVar("T")


def suggest(name: str, known: list[str], kind: str, *,
            listing: str = "available") -> UnknownNameError:
    """Build an ``UnknownNameError`` with a "did you mean" hint and the known names."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ";"
    shown = ", ".join(known[:40]) + (" ..." if len(known) > 40 else "")
    return UnknownNameError(f"unknown {kind} {name!r}{hint} {listing}: {shown}")


class Registry(Generic[T]):
    """Names to objects: built-ins registered by decorator, plugins by entry point.

    Parameters
    ----------
    kind : str
        What the names are, for messages ("architecture").
    group : str
        The entry-point group third parties register in ("geoseg.architectures").
    """

    def __init__(self, kind: str, group: str) -> None:
        self.kind = kind
        self.group = group
        self._builtin: dict[str, T] = {}
        self._aliases: dict[str, str] = {}
        self._loaded: dict[str, T] | None = None

    def register(self, name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Register the decorated object under ``name`` (and ``aliases``)."""

        def decorator(obj: T) -> T:
            for key in (name, *aliases):
                if key in self._builtin or key in self._aliases:
                    raise RegistryError(f"{self.kind} {key!r} is already registered")
            self._builtin[name] = obj
            for alias in aliases:
                self._aliases[alias] = name
            return obj

        return decorator

    def _plugins(self) -> dict[str, T]:
        """Entry points of ``group``, loaded once; a broken plugin only warns."""
        if self._loaded is None:
            loaded: dict[str, T] = {}
            for ep in entry_points(group=self.group):
                if ep.name in self._builtin or ep.name in self._aliases:
                    warnings.warn(f"{self.kind} plugin {ep.name!r} ({ep.value}) shadows a "
                                  "built-in and is ignored", GeosegWarning, stacklevel=2)
                    continue
                try:
                    loaded[ep.name] = ep.load()
                except Exception as exc:  # noqa: BLE001 - a plugin must not break geoseg
                    warnings.warn(f"{self.kind} plugin {ep.name!r} ({ep.value}) failed to "
                                  f"load: {exc}", GeosegWarning, stacklevel=2)
            self._loaded = loaded
        return self._loaded

    def refresh(self) -> None:
        """Forget cached plugins so entry points are read again."""
        self._loaded = None

    def canonical(self, name: str) -> str:
        """Resolve an alias to its registered name; raise for unknown names."""
        key = name.lower()
        if key in self._builtin or key in self._plugins():
            return key
        if key in self._aliases:
            return self._aliases[key]
        raise suggest(name, self.names(with_aliases=True), self.kind)

    def get(self, name: str) -> T:
        """Return the object registered under ``name`` or an alias of it."""
        key = self.canonical(name)
        return self._builtin[key] if key in self._builtin else self._plugins()[key]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = name.lower()
        return key in self._builtin or key in self._aliases or key in self._plugins()

    def names(self, *, with_aliases: bool = False) -> list[str]:
        """Return registered names, built-ins first, then plugins."""
        out = [*self._builtin, *self._plugins()]
        return [*out, *self._aliases] if with_aliases else out

    def aliases(self) -> dict[str, str]:
        """Alias to canonical name."""
        return dict(self._aliases)
