"""`losskit list` / `info` and the `python -m losskit` entry point."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import losskit
from losskit.cli import main

STABLE_KEYS = {"id", "kind", "family", "tier", "oracle", "schedules", "source"}


def run_cli(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def test_list_json_has_every_entry_with_stable_keys(capsys):
    code, out, _ = run_cli(capsys, "list", "--json")
    assert code == 0
    data = json.loads(out)
    assert [e["id"] for e in data] == losskit.ids()
    for e in data:
        assert STABLE_KEYS <= set(e)
        assert e["function"] == f"losskit.functional.{e['id']}"


def test_list_filters_by_family(capsys):
    code, out, _ = run_cli(capsys, "list", "--family", "classification", "--json")
    assert code == 0 and {e["family"] for e in json.loads(out)} == {"classification"}
    code, _, err = run_cli(capsys, "list", "--family", "nope")
    assert code == 2 and "classification" in err


def test_info_shows_formula_defaults_source_oracle_and_usage(capsys):
    code, out, _ = run_cli(capsys, "info", "focal")
    assert code == 0
    for needle in ("(1 − p_y)^γ", "gamma=2.0", "source", "oracle", "losskit.nn.FocalLoss", "losskit.functional.focal"):
        assert needle in out


def test_info_unknown_id_suggests_the_closest(capsys):
    code, _, err = run_cli(capsys, "info", "focall")
    assert code == 2 and "'focal'" in err


def test_python_dash_m_works():
    out = subprocess.run([sys.executable, "-m", "losskit", "list", "--json"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)
