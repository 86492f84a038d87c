import os

import pytest
import torch

os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars stay quiet in tests


def pytest_collection_modifyitems(config, items):
    import fastprune

    if fastprune.cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device and fastprune's CUDA back-end")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
