"""Module faces of every registered loss: ``losskit.nn.FocalLoss(gamma=2.0)(logits, target)``.

Classes are made from the registry (one per entry, named after its id); entries that keep state or
own parameters (heads, stateful losses) bring their own class.
"""
from __future__ import annotations

from . import families as _families  # noqa: F401  (registers every entry)
from .module import LossModule, make_module_class
from .registry import attach_module, entries

__all__ = ["LossModule"]

for _entry in entries():
    if _entry.module is None:
        attach_module(_entry.id, make_module_class(_entry))
    globals()[_entry.module.__name__] = _entry.module
    __all__.append(_entry.module.__name__)
del _entry
