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


def _isa_params() -> list:
    """Every compiled ISA variant; those this CPU cannot run are skipped."""
    import fastprune
    from fastprune._ext import _C

    out = []
    for name in ("baseline", "avx2", "avx512"):
        marks = []
        if name not in _C.compiled_cpu_isas().split(","):
            marks = [pytest.mark.skip(reason=f"{name} not compiled")]
        else:
            try:
                fastprune.set_cpu_isa(name)
            except ValueError:
                marks = [pytest.mark.skip(reason=f"this CPU does not run {name}")]
            fastprune.set_cpu_isa("auto")
        out.append(pytest.param(name, marks=marks))
    return out


@pytest.fixture(params=_isa_params())
def isa(request):
    """Runs a test once per compiled CPU ISA variant (auto again afterwards)."""
    import fastprune

    fastprune.set_cpu_isa(request.param)
    yield fastprune.cpu_isa()
    fastprune.set_cpu_isa("auto")


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

