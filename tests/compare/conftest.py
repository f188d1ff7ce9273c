import pytest


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Every compare test runs in its own folder: the default store and report paths land there."""
    monkeypatch.chdir(tmp_path)
    yield
