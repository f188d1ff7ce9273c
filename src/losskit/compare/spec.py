"""Loss specifications: ``"cross_entropy,gce[q=0.5],apl[active=nfl;passive=mae]"`` -> :class:`LossSpec` list.

Grammar: specs are separated by commas outside brackets; each is ``id`` or ``id[name=value;...]``
(a ``,`` between hyperparameters inside the brackets works too). Values are read with
:func:`ast.literal_eval` (``0.5``, ``None``, ``(1.0, -0.5)``, ``[0.1, 0.9]``) and kept as strings
otherwise (``active=nfl``). Ids and aliases are resolved through :func:`losskit.get`, so an unknown id
raises :class:`~losskit.LossInputError` with the closest ids; unknown hyperparameter names are
rejected the same way.
"""
from __future__ import annotations

import ast
import difflib
import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import LossInputError
from ..registry import get

__all__ = ["LossSpec", "parse_losses", "parse_loss", "as_spec", "jsonable"]


@dataclass(frozen=True, eq=False)
class LossSpec:
    """One loss to compare: a registry id plus the hyperparameters the user set (not the defaults)."""

    id: str
    hyper: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``id`` or ``id[k=v;...]`` (sorted keys): the name of the row in the leaderboard."""
        if not self.hyper:
            return self.id
        return f"{self.id}[" + ";".join(f"{k}={_show(v)}" for k, v in sorted(self.hyper.items())) + "]"

    @property
    def key(self) -> tuple[str, str]:
        """(id, hyperparameters as sorted JSON): what makes two specs the same loss."""
        return self.id, json.dumps(jsonable(self.hyper), sort_keys=True)

    def __eq__(self, other):
        return isinstance(other, LossSpec) and self.key == other.key

    def __hash__(self):
        return hash(self.key)

    def __str__(self) -> str:
        return self.label


def _show(v: Any) -> str:
    return v if isinstance(v, str) else repr(v)


def jsonable(v: Any) -> Any:
    """A JSON-stable view of a hyperparameter value (tuples as lists, tensors as lists, others by repr)."""
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in sorted(v.items())}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if hasattr(v, "tolist"):
        return v.tolist()
    return repr(v)


def _split(text: str, seps: str) -> list[str]:
    """Split at characters of ``seps`` that are outside brackets, parentheses, braces and quotes."""
    parts, depth, quote, cur = [], 0, None, []
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                raise LossInputError("losses", "balanced brackets", repr(text))
        elif ch in seps and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    if depth != 0 or quote:
        raise LossInputError("losses", "balanced brackets and quotes", repr(text))
    parts.append("".join(cur))
    return parts


def _value(text: str) -> Any:
    text = text.strip()
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def as_spec(id: str, hyper: dict[str, Any] | None = None) -> LossSpec:
    """A validated spec: the id resolved (aliases to their id) and the hyperparameter names checked."""
    try:
        entry = get(id.strip())
    except LossInputError as exc:  # an unknown id: keep get's suggestions, name the argument
        raise LossInputError("losses", exc.expected, exc.got, exc.hint) from None
    hyper = dict(hyper or {})
    allowed = set(entry.defaults) | set(entry.module_kwargs)
    for name in hyper:
        if name not in allowed:
            close = difflib.get_close_matches(name, sorted(allowed), n=3, cutoff=0.5)
            hint = ("did you mean " + ", ".join(repr(c) for c in close) + "?") if close else \
                f"{entry.id} takes: {', '.join(sorted(allowed)) or 'no hyperparameters'}"
            raise LossInputError(f"{entry.id}[{name}]", f"a hyperparameter of {entry.id}", repr(name), hint)
    return LossSpec(entry.id, hyper)


def parse_loss(text: str) -> LossSpec:
    """``"gce[q=0.5]"`` -> ``LossSpec("gce", {"q": 0.5})``."""
    text = text.strip()
    if not text:
        raise LossInputError("losses", "a loss id", "an empty name")
    hyper: dict[str, Any] = {}
    if "[" in text:
        if not text.endswith("]"):
            raise LossInputError("losses", "id[name=value;...] with the bracket closing the spec", repr(text))
        id, body = text[:-1].split("[", 1)
        for item in _split(body, ";,"):
            if not item.strip():
                continue
            if "=" not in item:
                raise LossInputError(f"{id.strip()}[...]", "name=value pairs separated by ';'", repr(item.strip()))
            name, value = item.split("=", 1)
            name = name.strip()
            if name in hyper:
                raise LossInputError(f"{id.strip()}[{name}]", "each hyperparameter once", "it twice")
            hyper[name] = _value(value)
    else:
        id = text
    return as_spec(id, hyper)


def parse_losses(losses: str | list | tuple) -> list[LossSpec]:
    """A comma-separated string, or a list of strings / ``LossSpec`` / ``(id, hyper)`` pairs, validated.

    Duplicate specs (same id and hyperparameters after alias resolution) are an error.
    """
    if isinstance(losses, str):
        items: list = [p for p in _split(losses, ",") if p.strip()]
    else:
        items = list(losses)
    specs = []
    for item in items:
        if isinstance(item, LossSpec):
            spec = as_spec(item.id, item.hyper)
        elif isinstance(item, str):
            spec = parse_loss(item)
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            spec = as_spec(item[0], item[1])
        else:
            raise LossInputError("losses", "loss ids, 'id[k=v]' strings, LossSpec or (id, hyper) pairs", repr(item))
        if any(spec.key == s.key for s in specs):
            raise LossInputError("losses", "each loss once", f"{spec.label} twice")
        specs.append(spec)
    if not specs:
        raise LossInputError("losses", "at least one loss id", "none")
    return specs
