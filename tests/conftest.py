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


@pytest.fixture
def one_thread():
    """One torch thread and one BLAS thread: tiny models gain nothing from a second one, and on
    a loaded machine the threads wait for each other (a 0.5 ms forward pass of a tiny VGG took
    0.8 s with 2 threads under load, a 64x64 eigh 7 ms instead of 1)."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)
