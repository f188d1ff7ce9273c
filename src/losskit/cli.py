"""The ``losskit`` command: ``list``, ``info`` and ``compare``.

Plain argparse so that ``list`` and ``info`` work with nothing but torch installed; ``compare`` needs
the ``cli`` extras (rich, matplotlib, scikit-learn).
"""
from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main", "build_parser"]


def _cmd_list(args) -> int:
    import losskit

    entries = losskit.entries(args.family)
    if args.family and not entries:
        families = sorted({e.family for e in losskit.entries()})
        print(f"losskit: no family {args.family!r}; families: {', '.join(families)}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([e.metadata() for e in entries], indent=1))
        return 0
    rows = [(e.id, e.kind, e.family, str(e.tier), e.oracle, e.source) for e in entries]
    header = ("id", "kind", "family", "tier", "oracle", "source")
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(r[i]) for r in rows + [header]) for i in range(5)]
        for r in [header] + rows:
            print("  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5][:60])
        return 0
    table = Table(title=f"losskit: {len(rows)} entries")
    for h in header:
        table.add_column(h, overflow="fold")
    for r in rows:
        table.add_row(*r)
    Console().print(table)
    return 0


def _usage_snippet(entry) -> str:
    inputs = ", ".join(entry.data_inputs)
    hyper = ", ".join(f"{k}={v!r}" for k, v in entry.defaults.items()
                      if k not in ("reduction", "ignore_index") and v is not None)
    call_hyper = f", {hyper}" if hyper else ""
    return (f"import losskit\n"
            f"loss = losskit.functional.{entry.id}({inputs}{call_hyper})\n"
            f"module = losskit.nn.{entry.module_name}({hyper})\n"
            f"loss = module({inputs})")


def _cmd_info(args) -> int:
    import losskit
    from losskit.errors import LossInputError

    try:
        entry = losskit.get(args.id)
    except LossInputError as exc:
        print(f"losskit: {exc}", file=sys.stderr)
        return 2
    if args.json:
        meta = entry.metadata()
        meta["doc"] = entry.doc
        meta["usage"] = _usage_snippet(entry)
        print(json.dumps(meta, indent=1))
        return 0
    lines = [
        f"{entry.id}  ({entry.kind}, {entry.family}, tier {entry.tier})",
        "",
        entry.doc,
        "",
        f"input      {entry.input_kind}: {', '.join(entry.data_inputs)}",
        "defaults   " + (", ".join(f"{k}={v!r}" for k, v in entry.defaults.items()) or "none"),
        f"source     {entry.source}",
        f"oracle     {entry.oracle}",
        f"schedules  {', '.join(entry.schedules)}",
        f"module     losskit.nn.{entry.module_name}",
        "",
        "usage:",
        _usage_snippet(entry),
    ]
    print("\n".join(lines))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="losskit", description="The training-objective layer for PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="list the registered losses")
    p.add_argument("--family", help="only this family (e.g. classification)")
    p.add_argument("--json", action="store_true", help="machine-readable, stable keys")
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("info", help="formula, defaults, source, oracle and usage of one loss")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("compare", help="train one small model per (loss, seed) on a task and rank the losses")
    from .compare import cli as compare_cli

    compare_cli.add_arguments(p)
    p.set_defaults(func=compare_cli.run)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
