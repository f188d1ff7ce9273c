import pytest
import torch

import losskit


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    losskit.set_checks(True)
    yield
    losskit.set_checks(True)
