"""Issue 15 items 2, 3 and 8 (last): fastprune never deletes or overwrites a file it did not
write, never writes over its inputs, checks where it writes before the work starts, and
writes atomically (no temporary file survives a failure)."""
from __future__ import annotations

import os
import shutil

import pytest

pytest.importorskip("fastprune.models")

from _cli_run import DATA, SPEC, build_run, cli, one_line_error, snapshot  # noqa: E402
from fastprune._files import atomic_write  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return build_run(tmp_path_factory.mktemp("outputs"))


def test_plan_out_beside_a_users_weights_file_leaves_it_byte_identical(run, tmp_path, capsys):
    """Item 2: `plan --out unet.json` deleted unet.weights.safetensors when unet.json existed."""
    user = tmp_path / "unet.weights.safetensors"
    user.write_bytes(os.urandom(4096))
    theirs = user.read_bytes()
    (tmp_path / "unet.json").write_text('{"mine": true}')  # not a fastprune plan: refused, kept
    code, out = cli("plan", run / "s.fps", "--method", "l1", "--ratio", "0.3", "--out", tmp_path / "unet.json",
                    capsys=capsys)
    one_line_error(code, out, "unet.json", "not a plan file fastprune wrote")
    assert (tmp_path / "unet.json").read_text() == '{"mine": true}' and user.read_bytes() == theirs
    (tmp_path / "unet.json").unlink()
    for _ in range(2):  # written, then replaced by fastprune's own plan: the user's file stays
        code, out = cli("plan", run / "s.fps", "--method", "l1", "--ratio", "0.3", "--out", tmp_path / "unet.json",
                        capsys=capsys)
        assert code == 0, out.err
        assert user.read_bytes() == theirs


def test_gates_plan_would_overwrite_a_users_weights_file_refused_before_work(run, tmp_path, capsys):
    user = tmp_path / "g.weights.safetensors"
    user.write_bytes(b"user data")
    code, out = cli("plan", "--method", "gates", "--model", run / "base", "--train-data", DATA, "--data", DATA,
                    "--tolerance", "0.5", "--gate-epochs", "1", "--out", tmp_path / "g.json", capsys=capsys)
    one_line_error(code, out, "g.weights.safetensors", "did not write")
    assert user.read_bytes() == b"user data" and not (tmp_path / "g.json").exists()


def test_plan_out_equal_to_its_statistics_input_is_refused(run, tmp_path, capsys):
    """Item 3: `plan s.fps --out s.fps` replaced the statistics with JSON."""
    shutil.copy(run / "s.fps", tmp_path / "s.fps")
    before = (tmp_path / "s.fps").read_bytes()
    code, out = cli("plan", tmp_path / "s.fps", "--method", "l1", "--ratio", "0.3", "--out", tmp_path / "s.fps",
                    capsys=capsys)
    one_line_error(code, out, "is the input")
    assert (tmp_path / "s.fps").read_bytes() == before


@pytest.mark.parametrize("where", ["same", "parent"])
def test_prune_out_equal_to_or_containing_the_model_is_refused(run, tmp_path, capsys, where):
    """Item 3: `prune --model base --out base` turned the baseline into a pruned folder."""
    shutil.copytree(run / "base", tmp_path / "base")
    shutil.copy(run / "l1.json", tmp_path / "l1.json")
    before = snapshot(tmp_path)
    out_dir = tmp_path / "base" if where == "same" else tmp_path
    code, out = cli("prune", "--model", tmp_path / "base", "--plan", tmp_path / "l1.json", "--out", out_dir,
                    capsys=capsys)
    one_line_error(code, out, "the input")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("argv, kind", [
    (["score", "--model", SPEC, "--data", DATA], "statistics"),
    (["evaluate", "--model", SPEC, "--data", DATA], "metrics"),
])
def test_outputs_are_checked_before_the_work_starts(tmp_path, capsys, monkeypatch, argv, kind):
    """Item 8: an unwritable output was found only after the whole run (leaving a 1 MB .tmp)."""
    import fastprune.cli.artifacts as artifacts

    def must_not_run(*a, **k):
        raise AssertionError("the model was loaded before the output was checked")
    monkeypatch.setattr(artifacts, "build", must_not_run)
    target = tmp_path / ("x.fps" if kind == "statistics" else "x.json")
    target.write_text("a user's file")
    code, out = cli(*argv, "--out", target, capsys=capsys)
    one_line_error(code, out, str(target), f"not a {kind} file fastprune wrote")
    assert target.read_text() == "a user's file" and sorted(os.listdir(tmp_path)) == [target.name]


def test_model_out_in_a_foreign_non_empty_folder_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    code, out = cli("finetune", "--model", SPEC, "--data", DATA, "--epochs", "1", "--out", tmp_path, capsys=capsys)
    one_line_error(code, out, "fastprune did not write")
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_atomic_write_leaves_no_temporary_file_and_keeps_the_old_content(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def fails(path):
        with open(path, "wb") as f:
            f.write(b"x" * (1 << 20))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, fails)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["f.bin"]


@pytest.mark.parametrize("foreign", ["folder", "file"])
def test_demo_out_that_fastprune_did_not_write_is_refused_before_the_work(tmp_path, capsys, monkeypatch, foreign):
    """`fastprune demo --out DIR` wrote baseline/, stats.fps, plans/ ... into any folder, a user's too."""
    import fastprune.cli.specs as specs

    def must_not_run(*a, **k):
        raise AssertionError("the demo started before its output was checked")
    monkeypatch.setattr(specs, "parse_model_spec", must_not_run)  # the demo's first step
    target = tmp_path / "mine"
    if foreign == "folder":
        target.mkdir()
        (target / "stats.fps").write_text("a user's file")
    else:
        target.write_text("a user's file")
    before = snapshot(tmp_path)
    code, out = cli("demo", "--out", target, capsys=capsys)
    one_line_error(code, out, str(target), "fastprune did not write" if foreign == "folder" else "not a folder")
    assert snapshot(tmp_path) == before


def test_demo_out_may_be_new_empty_or_an_earlier_demos(tmp_path):
    from fastprune.cli.outputs import DEMO_MARKER, check_output

    (tmp_path / "empty").mkdir()
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier" / DEMO_MARKER).write_text("{}")
    (tmp_path / "earlier" / "stats.fps").write_text("the earlier demo's")
    for name in ("new", "empty", "earlier"):
        assert check_output(None, tmp_path / name, "demo") == tmp_path / name
