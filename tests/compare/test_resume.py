"""Kill a running ``losskit compare`` with SIGKILL and check that the rerun reuses every finished cell."""
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import losskit

SRC = str(Path(losskit.__file__).resolve().parents[1])


def _rows(db: Path):
    """(id, loss, hyper, seed, finished_at) of every stored cell; [] while the store does not exist yet."""
    if not db.exists():
        return []
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT id, loss, hyper, seed, finished_at FROM cells ORDER BY id").fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError:  # created but no table yet
        return []


def test_resume_after_sigkill(tmp_path):
    db = tmp_path / "store.sqlite"
    cmd = [sys.executable, "-m", "losskit", "compare", "digits", "--losses", "cross_entropy,gce[q=0.5]",
           "--seeds", "3", "--epochs", "25", "--store", str(db), "--out", str(tmp_path / "rep"), "-q"]
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 90
    try:
        while not _rows(db):
            assert proc.poll() is None, "the run ended before a cell was stored: " + proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no finished cell within 90 s"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = _rows(db)  # what the killed run had committed
    assert 1 <= len(before) < 6, f"the kill should land mid-run; {len(before)} of 6 cells were stored"

    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{6 - len(before)} trained, reused {len(before)} from the store" in rerun.stdout
    after = _rows(db)
    assert len(after) == 6
    assert {(r[1], r[2], r[3]) for r in after} == {(loss, hyper, seed) for loss, hyper in
                                                  {(r[1], r[2]) for r in after} for seed in range(3)}
    assert len({(r[1], r[2]) for r in after}) == 2
    # the cells finished before the kill were not recomputed: same row ids, same timestamps
    assert set(before) <= set(after)
    assert (tmp_path / "rep" / "leaderboard.csv").is_file()
