
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


def test_env_override_forces_baseline_isa(run_python):
    out = run_python("-c", "import fastprune; print(fastprune.cpu_isa())", env={"FASTPRUNE_CPU_ISA": "baseline"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "baseline"


def test_set_cpu_isa_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown CPU ISA"):
        fastprune.set_cpu_isa("sse9")
    fastprune.set_cpu_isa("auto")
    assert fastprune.cpu_isa() == fastprune.build_info()["cpu_isa_best"]
