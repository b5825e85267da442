"""A name-keyed book of recipe factories, shared by every package's recipes (pretrain, lit, captioning, eval)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from pretrain.runtime.config import resolve, to_yaml
from pretrain.runtime.errors import ConfigError

T = TypeVar("T")


class RecipeBook(Mapping[str, Callable[[], T]], Generic[T]):
    """Named factories of typed recipes; each factory's docstring says how to run it and what it should give."""

    def __init__(self, kind: str = "recipe") -> None:
        self.kind = kind
        self._factories: dict[str, Callable[[], T]] = {}

    def register(self, name: str) -> Callable[[Callable[[], T]], Callable[[], T]]:
        """Decorator: file the factory under `name`."""

        def add(fn: Callable[[], T]) -> Callable[[], T]:
            self._factories[name] = fn
            return fn

        return add

    def get(self, name: str) -> T:  # type: ignore[override]
        """A fresh recipe; an unknown name is a one-line ConfigError listing the known ones."""
        if name not in self._factories:
            raise ConfigError(f"unknown {self.kind} '{name}' (known: {', '.join(sorted(self._factories))})")
        return self._factories[name]()

    def describe(self, name: str) -> str:
        """The first line of the recipe's docstring."""
        doc = (self._factories[name].__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    def as_yaml(self, name: str, overrides: list[str] | None = None) -> str:
        """The recipe (with overrides) as YAML, its docstring as leading comments: edit it, pass it to --config."""
        recipe = resolve(self.get(name), None, overrides)
        doc = (self._factories[name].__doc__ or "").strip()
        return "".join(f"# {line.strip()}\n" for line in doc.splitlines()) + to_yaml(recipe)

    def listing(self) -> str:
        width = max((len(n) for n in self._factories), default=0) + 2
        return "\n".join(f"{name:<{width}}{self.describe(name)}" for name in self._factories)

    def __getitem__(self, name: str) -> Callable[[], T]:
        return self._factories[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._factories)

    def __len__(self) -> int:
        return len(self._factories)
