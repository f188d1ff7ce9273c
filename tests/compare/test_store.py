import sqlite3

from losskit.compare import CellKey, ResultStore, run


def _run(losses, **kw):
    kw = {"seeds": 1, "epochs": 1, "store": "r.sqlite", "out": None, "quiet": True, **kw}
    return run("digits", losses=losses, **kw)


def test_cells_are_keyed_by_loss_hyperparameters_seed_and_training():
    first = _run("cross_entropy,gce[q=0.5]")
    assert (first.trained, first.reused) == (2, 0)
    same = _run("cross_entropy,gce[q=0.5]")
    assert (same.trained, same.reused) == (0, 2)
    assert [c.metrics for c in same.cells] == [c.metrics for c in first.cells]
    assert [c.row_id for c in same.cells] == [c.row_id for c in first.cells]
    assert _run("gce[q=0.3]").trained == 1  # another hyperparameter value: another cell
    assert _run("gce[q=0.7]").trained == 1
    assert _run("gce").reused == 1  # the effective hyperparameters are the key: q=0.7 is gce's default
    more = _run("cross_entropy", seeds=2)
    assert (more.trained, more.reused) == (1, 1)  # seed 1 is new
    assert _run("cross_entropy", epochs=2).trained == 1  # another training config
    assert _run("cross_entropy", lr=1e-2).trained == 1
    noisy = run("digits-noisy", losses="cross_entropy", seeds=1, epochs=1, store="r.sqlite", out=None, quiet=True)
    assert noisy.trained == 1  # another task
    fresh = _run("cross_entropy,gce[q=0.5]", fresh=True)
    assert (fresh.trained, fresh.reused) == (2, 0)
    with ResultStore("r.sqlite") as db:
        assert len(db) == 8  # fresh replaced its two rows
        rows = db.all()
    assert {r.key.loss for r in rows} == {"cross_entropy", "gce"}
    assert all(r.key.version == __import__("losskit").__version__ for r in rows)


def test_store_schema_and_commit_per_cell(tmp_path):
    db = ResultStore(tmp_path / "x.sqlite")
    key = CellKey.make("t", {"b": 1, "a": 2}, "gce", {"q": 0.5}, 0, {"epochs": 1}, "0.1.0")
    assert key.task_options == '{"a":2,"b":1}'  # canonical JSON, sorted keys
    row = db.put(key, {"accuracy": 0.5}, 1.25)
    # visible to another connection at once: the row is committed
    con = sqlite3.connect(tmp_path / "x.sqlite")
    cols = [r[1] for r in con.execute("PRAGMA table_info(cells)")]
    assert cols == ["id", "task", "task_options", "loss", "hyper", "seed", "train_config", "version", "metrics",
                    "wall_time", "finished_at"]
    assert con.execute("SELECT id, wall_time FROM cells").fetchall() == [(row.row_id, 1.25)]
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    got = db.get(key)
    assert got.metrics == {"accuracy": 0.5} and got.finished_at == row.finished_at
    assert db.get(CellKey.make("t", {"a": 2, "b": 1}, "gce", {"q": 0.5}, 1, {"epochs": 1}, "0.1.0")) is None
    db.close()
