"""Issue 15 item 1: a file never names code to import. A model folder, a pruned folder or a
statistics file whose SPEC names a Python factory opens nothing and writes nothing unless the
user confirms that factory on the command line (--trust-code)."""
from __future__ import annotations

import json
import sys

import pytest

pytest.importorskip("fastprune.models")

from _cli_run import DATA, SPEC, build_run, cli, one_line_error  # noqa: E402
from fastprune._documents import seal  # noqa: E402
from fastprune.stats.statistics import Statistics  # noqa: E402

EVIL = "subprocess:getoutput:cmd=id > PWNED"
PROBE = "fastprune_probe_evil:make"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return build_run(tmp_path_factory.mktemp("trust"))


@pytest.fixture
def probe(tmp_path, monkeypatch):
    """A module that leaves IMPORTED when imported and CALLED when its factory runs."""
    (tmp_path / "fastprune_probe_evil.py").write_text(
        "import pathlib\npathlib.Path(__file__).with_name('IMPORTED').write_text('x')\n"
        "def make(**kw):\n    pathlib.Path(__file__).with_name('CALLED').write_text('x')\n"
        "    from fastprune.models import create\n"
        f"    return create('unet', base_width=4, depth=1, upsample='bilinear')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("fastprune_probe_evil", None)


def _evil_folder(src, dst, spec, sealed=True):
    import shutil

    shutil.copytree(src, dst)
    marker = dst / "fastprune-model.json"
    doc = json.loads(marker.read_text())
    doc["spec"] = spec
    marker.write_text(json.dumps(seal(doc) if sealed else {k: v for k, v in doc.items() if k != "checksum"}))
    return dst


def _nothing_ran(probe):
    assert not (probe / "PWNED").exists() and not (probe / "IMPORTED").exists() and not (probe / "CALLED").exists()
    assert "fastprune_probe_evil" not in sys.modules


@pytest.mark.parametrize("spec", [EVIL, PROBE])
@pytest.mark.parametrize("sealed", [True, False])
def test_model_folder_naming_code_opens_and_writes_nothing(run, probe, capsys, spec, sealed):
    evil = _evil_folder(run / "base", probe / "evil", spec, sealed)
    before = sorted(p.name for p in probe.iterdir())
    code, out = cli("evaluate", "--model", evil, "--data", DATA, capsys=capsys)
    one_line_error(code, out, "fastprune-model.json" if sealed else "checksum")
    if sealed:
        assert "--trust-code" in out.err
    _nothing_ran(probe)
    assert sorted(p.name for p in probe.iterdir()) == before


def test_pruned_folder_naming_code_in_report(run, probe, capsys):
    evil = _evil_folder(run / "pruned", probe / "evil", PROBE)
    code, out = cli("report", "--model", run / "base", "--pruned", evil, "--data", DATA, "--repeats", "1",
                    "--out", probe / "report", capsys=capsys)
    one_line_error(code, out, "never imports code", "--trust-code")
    _nothing_ran(probe)
    assert not (probe / "report").exists()


def test_statistics_naming_code_in_plan(run, probe, capsys):
    stats = Statistics.load(run / "s.fps")
    stats.meta["model"] = {"spec": EVIL, "weights": None, "folder": None}
    stats.save(probe / "c.fps")  # a valid, sealed statistics file
    code, out = cli("plan", probe / "c.fps", "--method", "l1", "--ratio", "0.3", "--out", probe / "p.json",
                    capsys=capsys)
    one_line_error(code, out, "c.fps", "subprocess:getoutput", "--trust-code")
    _nothing_ran(probe)
    assert not (probe / "p.json").exists()


def test_trust_code_or_an_explicit_model_confirms_a_factory(run, probe, capsys):
    """The user's own factory still works when the user confirms it."""
    stats = Statistics.load(run / "s.fps")
    stats.meta["model"] = {"spec": PROBE, "weights": None, "folder": None}
    stats.save(probe / "c.fps")
    # the factory builds fresh weights: the statistics' weights digest names the right ones
    code, out = cli("plan", probe / "c.fps", "--method", "l1", "--ratio", "0.3", "--out", probe / "p.json",
                    "--trust-code", capsys=capsys)
    one_line_error(code, out, "other weights")  # confirmed, imported, then checked like any model
    assert (probe / "CALLED").exists()
    code, out = cli("plan", probe / "c.fps", "--method", "l1", "--ratio", "0.5", "--out", probe / "p.json",
                    "--model", PROBE, "--weights", run / "base" / "weights.safetensors", capsys=capsys)
    assert code == 0, out.err
    assert json.loads((probe / "p.json").read_text())["keep"] == json.loads((run / "l1.json").read_text())["keep"]
