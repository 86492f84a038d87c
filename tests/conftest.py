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


@pytest.fixture
def run_python(tmp_path):
    """Run `python ARGS...` in a child that imports the fastprune under test.

    The child starts in tmp_path, so a source checkout's uncompiled fastprune/ folder in the
    current directory cannot shadow the installed (or in-place built) package.
    """
    import subprocess
    import sys

    import fastprune

    root = os.path.dirname(os.path.dirname(os.path.abspath(fastprune.__file__)))

    def run(*args: str, env: dict | None = None):
        full = dict(os.environ, PYTHONPATH=root, **(env or {}))
        return subprocess.run([sys.executable, *args], cwd=tmp_path, env=full, capture_output=True, text=True)

    return run

