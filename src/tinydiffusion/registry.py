"""One registry shape for every kind of named thing (models, samplers, schedules, presets, ...): name -> entry,
a one-line description, and the one sentence an unknown name gets. `tinydiffusion list KIND` prints them."""
from __future__ import annotations

from typing import Any, Callable, Iterator

from .errors import UserError


class Registry:
    """Names in the order they were added, each with an entry (a function, a dataclass, None) and a description.

    >>> SCHEDULES = Registry("schedule")
    >>> SCHEDULES.add("linear", linear_betas, "DDPM's linear betas")
    >>> SCHEDULES.get("cosine")  # UserError: Unknown schedule 'cosine'; choose one of: linear.
    """

    def __init__(self, kind: str, hint: str = ""):
        self.kind, self.hint = kind, hint  # hint: appended to the error, e.g. " (see `tinydiffusion presets`)"
        self._entries: dict[str, Any] = {}
        self._texts: dict[str, str] = {}

    def add(self, name: str, entry: Any = None, text: str | None = None) -> Any:
        """Register entry under name; the description defaults to the first line of the entry's docstring."""
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = entry
        doc = (getattr(entry, "__doc__", None) or "").strip() if not isinstance(entry, (str, tuple)) else ""
        self._texts[name] = text if text is not None else (doc.splitlines()[0] if doc else "")
        return entry

    def register(self, name: str, text: str | None = None) -> Callable:
        """Decorator form of add."""
        return lambda entry: self.add(name, entry, text)

    def get(self, name: str) -> Any:
        """The entry, or the one sentence that names every choice."""
        if name not in self._entries:
            raise UserError(f"Unknown {self.kind} '{name}'; choose one of: {', '.join(self._entries)}{self.hint}.")
        return self._entries[name]

    def check(self, name: str) -> str:
        """name itself, once known to be registered."""
        self.get(name)
        return name

    def text(self, name: str) -> str:
        return self._texts[name]

    def descriptions(self) -> dict[str, str]:
        return dict(self._texts)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def items(self):
        return self._entries.items()
