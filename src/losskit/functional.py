"""Function faces of every registered loss: ``losskit.functional.focal(logits, target, gamma=2.0)``."""
from __future__ import annotations

from . import families as _families  # noqa: F401  (registers every entry)
from .registry import entries

__all__ = []
for _entry in entries():
    globals()[_entry.id] = _entry.function
    __all__.append(_entry.id)
del _entry
