"""The result store: one SQLite row per finished (task, loss, hyperparameters, seed, training, version) cell.

Each row is committed as soon as its cell finishes (WAL journal), so a killed run loses only the
cell in flight and the next run reuses every finished one. Schema (table ``cells``)::

    id            INTEGER PRIMARY KEY AUTOINCREMENT
    task          TEXT     task name ("digits-noisy", "file:mydata")
    task_options  TEXT     JSON, sorted keys: the task's options and its data fingerprint
    loss          TEXT     registry id
    hyper         TEXT     JSON, sorted keys: the effective hyperparameters (defaults + overrides;
                           values compare fills from the training set as "auto:...")
    seed          INTEGER
    train_config  TEXT     JSON, sorted keys: epochs, batch size, lr, weight decay, hidden, model
    version       TEXT     losskit.__version__
    metrics       TEXT     JSON: accuracy, macro_f1, balanced_accuracy, ece, train_accuracy, final_loss
    wall_time     REAL     seconds spent training and evaluating the cell
    finished_at   TEXT     UTC ISO-8601 timestamp
    UNIQUE (task, task_options, loss, hyper, seed, train_config, version)
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["CellKey", "StoredCell", "ResultStore", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    task         TEXT    NOT NULL,
    task_options TEXT    NOT NULL,
    loss         TEXT    NOT NULL,
    hyper        TEXT    NOT NULL,
    seed         INTEGER NOT NULL,
    train_config TEXT    NOT NULL,
    version      TEXT    NOT NULL,
    metrics      TEXT    NOT NULL,
    wall_time    REAL    NOT NULL,
    finished_at  TEXT    NOT NULL,
    UNIQUE (task, task_options, loss, hyper, seed, train_config, version)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class CellKey:
    """What identifies a cell. The JSON fields are canonical strings (sorted keys, no spaces)."""

    task: str
    task_options: str
    loss: str
    hyper: str
    seed: int
    train_config: str
    version: str

    @classmethod
    def make(cls, task: str, task_options: dict, loss: str, hyper: dict, seed: int, train_config: dict,
             version: str) -> "CellKey":
        return cls(task, _dumps(task_options), loss, _dumps(hyper), int(seed), _dumps(train_config), version)

    def astuple(self) -> tuple:
        return (self.task, self.task_options, self.loss, self.hyper, self.seed, self.train_config, self.version)


@dataclass(frozen=True)
class StoredCell:
    row_id: int
    key: CellKey
    metrics: dict[str, float]
    wall_time: float
    finished_at: str


_KEY_COLS = "task, task_options, loss, hyper, seed, train_config, version"


class ResultStore:
    """``ResultStore(path)`` opens (creating) the database; ``ResultStore(None)`` keeps results in memory."""

    def __init__(self, path: str | Path | None):
        self.path = None if path is None else Path(path)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = sqlite3.connect(":memory:" if self.path is None else str(self.path), timeout=30.0)
        if self.path is not None:
            self._con.execute("PRAGMA journal_mode=WAL")
            self._con.execute("PRAGMA synchronous=NORMAL")
        with self._con:
            self._con.executescript(_SCHEMA)
            self._con.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self._con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _row(self, row) -> StoredCell:
        return StoredCell(row[0], CellKey(*row[1:8]), json.loads(row[8]), row[9], row[10])

    def get(self, key: CellKey) -> StoredCell | None:
        where = " AND ".join(f"{c.strip()} = ?" for c in _KEY_COLS.split(","))
        row = self._con.execute(f"SELECT id, {_KEY_COLS}, metrics, wall_time, finished_at FROM cells WHERE {where}",
                                key.astuple()).fetchone()
        return None if row is None else self._row(row)

    def put(self, key: CellKey, metrics: dict[str, float], wall_time: float) -> StoredCell:
        """Insert (or replace) a finished cell and commit at once."""
        finished = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        with self._con:  # one transaction, committed on exit
            cur = self._con.execute(
                f"INSERT OR REPLACE INTO cells ({_KEY_COLS}, metrics, wall_time, finished_at) "
                f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                key.astuple() + (_dumps(metrics), float(wall_time), finished))
        return StoredCell(cur.lastrowid, key, dict(metrics), float(wall_time), finished)

    def all(self) -> list[StoredCell]:
        rows = self._con.execute(f"SELECT id, {_KEY_COLS}, metrics, wall_time, finished_at FROM cells ORDER BY id")
        return [self._row(r) for r in rows]

    def __len__(self) -> int:
        return self._con.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
