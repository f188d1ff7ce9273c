"""The one exception losskit raises for bad input."""
from __future__ import annotations

__all__ = ["LossInputError"]


class LossInputError(ValueError):
    """Bad input to a loss: names the argument, what was expected and what arrived.

    A subclass of :class:`ValueError`, so ``except ValueError`` keeps working.

    >>> raise LossInputError("target", "class indices in [0, 10) or ignore_index=-100", "index 12")
    Traceback (most recent call last):
    ...
    losskit.errors.LossInputError: target: expected class indices in [0, 10) or ignore_index=-100, got index 12
    """

    def __init__(self, argument: str, expected: str, got: str, hint: str | None = None):
        self.argument = argument
        self.expected = expected
        self.got = got
        self.hint = hint
        message = f"{argument}: expected {expected}, got {got}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)

    def __reduce__(self):  # keep the exception picklable across processes
        return (type(self), (self.argument, self.expected, self.got, self.hint))
