import os
import subprocess
import sys

import pytest

import fastprune


def test_build_info_reports_what_was_built():
    info = fastprune.build_info()
    assert info["version"] == fastprune.__version__
    assert "baseline" in info["cpu_isas_compiled"]
    assert info["cpu_isa_active"] in info["cpu_isas_compiled"]
    assert isinstance(info["cuda_built"], bool)
    assert info["cuda_available"] == (info["cuda_built"] and info["cuda_device_count"] > 0)
    if info["cuda_built"]:
        assert info["cuda_archs"], "a CUDA build must say which archs it holds"


def test_env_override_forces_baseline_isa(tmp_path):
    code = "import fastprune; print(fastprune.cpu_isa())"
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastprune.__file__)))
    env = dict(os.environ, FASTPRUNE_CPU_ISA="baseline", PYTHONPATH=root)  # the fastprune under test
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "baseline"


def test_set_cpu_isa_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown CPU ISA"):
        fastprune.set_cpu_isa("sse9")
    fastprune.set_cpu_isa("auto")
    assert fastprune.cpu_isa() == fastprune.build_info()["cpu_isa_best"]
