"""losskit: the training-objective layer for PyTorch.

>>> import losskit
>>> losskit.functional.focal(logits, target, gamma=2.0)
>>> losskit.nn.FocalLoss(gamma=2.0)(logits, target)
>>> losskit.get("focal").source
"""
from __future__ import annotations

__version__ = "0.1.0"

from .checks import checks, set_checks
from .errors import LossInputError
from .reduce import LossComponents
from .registry import Entry, Example, entries, get, ids
from . import functional, nn  # noqa: E402  (imports every family)

__all__ = ["LossInputError", "LossComponents", "set_checks", "checks", "get", "entries", "ids", "Entry",
           "Example", "functional", "nn", "__version__"]
