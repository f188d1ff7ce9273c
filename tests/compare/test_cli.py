import csv
import json
from pathlib import Path

import pytest

from losskit.cli import main


def _main(argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code


def test_cli_end_to_end_writes_the_report(capsys):
    code = _main(["compare", "digits-noisy", "--losses", "cross_entropy,gce[q=0.5]", "--seeds", "2", "--epochs", "2",
                  "--noise", "0.3", "--out", "rep", "--store", "db.sqlite"])
    assert code == 0
    out = capsys.readouterr().out
    assert "gce[q=0.5]" in out and "report: rep" in out and "4 trained, reused 0" in out
    rep = Path("rep")
    assert sorted(p.name for p in rep.iterdir()) == ["config.json", "leaderboard.csv", "leaderboard.md", "metric.png"]
    rows = list(csv.DictReader(open(rep / "leaderboard.csv")))
    assert sorted(r["loss"] for r in rows) == ["cross_entropy", "gce[q=0.5]"]
    assert all(r["n_seeds"] == "2" for r in rows)
    accs = [float(r["accuracy_mean"]) for r in rows]
    assert accs == sorted(accs, reverse=True)
    assert (rep / "metric.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cfg = json.loads((rep / "config.json").read_text())
    assert cfg["task"] == "digits-noisy" and cfg["task_options"]["noise"] == 0.3
    assert cfg["seeds"] == [0, 1] and cfg["epochs"] == 2
    assert [l["label"] for l in cfg["losses"]] == ["cross_entropy", "gce[q=0.5]"]
    assert cfg["losses"][1]["effective"]["q"] == 0.5
    assert {"losskit", "torch"} <= set(cfg["versions"])
    assert "| `gce[q=0.5]` |" in (rep / "leaderboard.md").read_text()
    # a repeated run trains nothing
    assert _main(["compare", "digits-noisy", "--losses", "cross_entropy,gce[q=0.5]", "--seeds", "2", "--epochs", "2",
                  "--noise", "0.3", "--out", "rep", "--store", "db.sqlite", "-q"]) == 0
    assert "0 trained, reused 4" in capsys.readouterr().out


def test_cli_default_paths_and_errors(capsys):
    assert _main(["compare", "digits", "--losses", "cross_entropy,focal", "--seeds", "1", "--epochs", "1", "-q"]) == 0
    assert Path("losskit-results/results.sqlite").is_file()
    (report,) = [p for p in Path("losskit-results").iterdir() if p.is_dir()]
    assert report.name.startswith("digits-")
    capsys.readouterr()
    assert _main(["compare", "digits", "--losses", "cross_entrpy"]) == 2
    assert "did you mean 'cross_entropy'" in capsys.readouterr().err
    assert _main(["compare", "digits", "--noise", "0.2"]) == 2
    assert "--noise" in capsys.readouterr().err


def test_cli_csv_task(tmp_path, capsys):
    from sklearn.datasets import load_wine

    X, y = load_wine(return_X_y=True)
    path = tmp_path / "wine.csv"
    path.write_text("label," + ",".join(f"f{i}" for i in range(X.shape[1])) + "\n"
                    + "\n".join(f"{k}," + ",".join(map(str, r)) for r, k in zip(X, y)) + "\n")
    assert _main(["compare", f"file:{path}", "--target-column", "label", "--losses", "cross_entropy,poly1",
                  "--seeds", "1", "--epochs", "3", "--out", "w", "-q"]) == 0
    out = capsys.readouterr().out
    assert "file:wine" in out and "report: w" in out
    rows = list(csv.DictReader(open("w/leaderboard.csv")))
    assert len(rows) == 2
