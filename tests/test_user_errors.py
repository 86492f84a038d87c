"""Issue 15 items 5 (CLI side), 7 and 8: every user mistake is one clear line on stderr and
exit code 2 (never an internal error, a traceback, a crash, or a silently accepted value)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("fastprune.models")

from _cli_run import DATA, SPEC, build_run, cli, one_line_error, reseal  # noqa: E402
from fastprune.stats.statistics import Statistics  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return build_run(tmp_path_factory.mktemp("errors"))


class Scale(nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def big_activations():
    """Conv -> x 1e20 (finite, but its squares overflow float32) -> conv -> conv."""
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), Scale(1e20), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(4, 2, 1))


def nan_in_the_middle():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), Scale(float("nan")), nn.Conv2d(4, 4, 3, padding=1),
                         nn.ReLU(), nn.Conv2d(4, 2, 1))


@pytest.mark.parametrize("factory, what", [("big_activations", "overflow"), ("nan_in_the_middle", "non-finite")])
def test_score_names_the_layer_of_overflow_or_nan(tmp_path, capsys, factory, what):
    """Item 5: score on 1e20 activations exited 0 and wrote a file plan rejected; item 7: NaN in
    a middle layer was exit 1 and claimed a checkpoint the CLI never saved."""
    code, out = cli("score", "--model", f"test_user_errors:{factory}", "--data", DATA, "--out", tmp_path / "s.fps",
                    capsys=capsys)
    line = one_line_error(code, out, what, "layer '2'", "output of 0", "nothing was saved")
    assert "checkpoint" not in line
    assert not (tmp_path / "s.fps").exists() and not (tmp_path / "s.fps.partial").exists()


def test_scenes_of_different_sizes(tmp_path, capsys):
    import tifffile

    for sub in ("images", "gt"):
        (tmp_path / "inria" / sub).mkdir(parents=True)
    for name, size in (("a", 40), ("b", 48)):
        tifffile.imwrite(tmp_path / "inria" / "images" / f"{name}.tif", np.zeros((size, size, 3), np.uint8),
                         photometric="rgb")
        tifffile.imwrite(tmp_path / "inria" / "gt" / f"{name}.tif", np.zeros((size, size), np.uint8))
    code, out = cli("evaluate", "--model", SPEC, "--data", f"inria:{tmp_path / 'inria'}", "--batch-size", "2",
                    capsys=capsys)
    one_line_error(code, out, "different sizes", "40x40", "48x48", "tile=")


@pytest.mark.parametrize("command", ["evaluate", "finetune"])
def test_two_class_model_on_multiclass_data(tmp_path, capsys, command):
    data = "synthetic:n=4,size=32,multiclass=true"
    extra = ["--epochs", "1", "--out", tmp_path / "ft"] if command == "finetune" else []
    code, out = cli(command, "--model", SPEC, "--data", data, *extra, capsys=capsys)
    one_line_error(code, out, "class labels 0..3", "predicts 2 classes")


@pytest.mark.parametrize("text, msg", [
    ('{"format": "fastprune.plan", "version": 1, "keep": {}, "channels": {"a": Infinity}}', "Infinity"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
])
def test_plan_json_infinity_or_deep_nesting(run, tmp_path, capsys, text, msg):
    (tmp_path / "p.json").write_text(text)
    code, out = cli("prune", "--model", run / "base", "--plan", tmp_path / "p.json", "--out", tmp_path / "o",
                    capsys=capsys)
    one_line_error(code, out, msg)


def _pruned_copy(run, tmp_path):
    shutil.copytree(run / "pruned", tmp_path / "m")
    return tmp_path / "m"


def _relist(folder):
    """Re-record the sha256 of pruned/edits.json in the folder's marker (a consistent forgery)."""
    from fastprune._documents import sha256

    reseal(folder / "fastprune-model.json",
           lambda d: d.update(files={"pruned/edits.json": sha256((folder / "pruned" / "edits.json").read_bytes())}))


@pytest.mark.parametrize("what", ["spec5", "edits12", "edits_empty", "truncated"])
def test_broken_model_folders(run, tmp_path, capsys, what):
    m = _pruned_copy(run, tmp_path)
    if what == "spec5":
        reseal(m / "fastprune-model.json", lambda d: d.update(spec=5))
        msgs = ["model SPEC recorded in", "5"]
    elif what.startswith("edits"):
        reseal(m / "pruned" / "edits.json", lambda d: d.update(edits=[1, 2] if what == "edits12" else []))
        _relist(m)
        msgs = ["surgery edits" if what == "edits12" else "do not fit"]
    else:
        w = m / "pruned" / "weights.safetensors"
        w.write_bytes(w.read_bytes()[:-100])
        msgs = ["weights.safetensors", "sha256"]
    code, out = cli("evaluate", "--model", m, "--data", DATA, capsys=capsys)
    line = one_line_error(code, out, *msgs)
    assert len(line) < 700  # item 8: the empty edits list gave a 10,188-character line


def test_statistics_with_a_huge_example_input(run, tmp_path, capsys):
    stats = Statistics.load(run / "s.fps")
    stats.meta["example_input"] = {"shape": [1, 3, 100000, 100000], "dtype": "float32"}
    stats.save(tmp_path / "s.fps")  # sealed: only the size limit stands between it and 120 GB
    code, out = cli("plan", tmp_path / "s.fps", "--method", "l1", "--ratio", "0.5", "--out", tmp_path / "p.json",
                    capsys=capsys)
    one_line_error(code, out, "example input", "more than one image")


def test_oversized_builtin_model(capsys):
    code, out = cli("evaluate", "--model", "unet:base_width=4,depth=40", "--data", DATA, capsys=capsys)
    one_line_error(code, out, "choose a smaller width or depth")


def test_negative_stride_numpy_view_is_refused_in_a_child(run_python):
    r = run_python("-c", "import numpy as np, fastprune\n"
                         "a = np.random.rand(2, 3, 4, 4).astype(np.float32)[::-1]\n"
                         "try:\n    fastprune.channel_moments(a)\nexcept ValueError as e:\n    print('refused:', e)\n")
    assert r.returncode == 0 and "refused:" in r.stdout and "negative strides" in r.stdout, r.stderr


@pytest.mark.parametrize("argv, msg", [
    (["plan", "{fps}", "--method", "msd_nci", "--alpha", "nan"], "not a finite number"),
    (["plan", "{fps}", "--method", "pca_nci", "--variance", "inf"], "not a finite number"),
    (["report", "--model", SPEC, "--pruned", "{pruned}", "--data", DATA, "--variance", "nan"], "not a finite number"),
    (["report", "--model", SPEC, "--pruned", "{pruned}", "--data", DATA, "--variance", "5"], "in (0, 1]"),
    (["score", "--model", SPEC, "--data", DATA, "--max-batches", "0"], "at least one batch"),
    (["evaluate", "--model", "", "--data", DATA], "--model is empty"),
    (["finetune", "--model", SPEC, "--data", DATA, "--lr", "nan"], "not a finite number"),
])
def test_nonsense_values_are_refused(run, tmp_path, capsys, argv, msg):
    argv = [a.format(fps=run / "s.fps", pruned=run / "pruned") for a in argv]
    out_flag = {"plan": tmp_path / "p.json", "report": tmp_path / "r", "score": tmp_path / "s.fps",
                "finetune": tmp_path / "ft"}.get(argv[0])
    code, out = cli(*argv, *(["--out", out_flag] if out_flag else []), capsys=capsys)
    one_line_error(code, out, msg)
    assert not out_flag or not out_flag.exists()


@pytest.mark.parametrize("keep", [[0.7], [True]])
def test_fractional_or_boolean_indices_in_a_plan(run, tmp_path, capsys, keep):
    shutil.copy(run / "l1.json", tmp_path / "l1.json")
    name = next(iter(json.loads((tmp_path / "l1.json").read_text())["keep"]))
    reseal(tmp_path / "l1.json", lambda d: d["keep"].update({name: keep}))
    code, out = cli("prune", "--model", run / "base", "--plan", tmp_path / "l1.json", "--out", tmp_path / "o",
                    capsys=capsys)
    one_line_error(code, out, "whole number")


def test_nan_in_a_resumed_collection_names_the_checkpoint(tmp_path):
    import fastprune

    model = nan_in_the_middle()
    with pytest.raises(ValueError, match="nothing was saved"):
        fastprune.collect(model, [torch.randn(2, 3, 8, 8)], checkpoint=tmp_path / "c.fps")


def test_diverging_finetune_is_one_clear_line(tmp_path, capsys):
    """A learning rate that blows the weights up: the non-finite loss is the user's setting, one
    line and exit 2 (it was an internal error, exit 1), and no model folder is written."""
    code, out = cli("finetune", "--model", SPEC, "--data", "synthetic:n=8,size=32", "--epochs", "2", "--lr", "1e30",
                    "--out", tmp_path / "ft", capsys=capsys)
    one_line_error(code, out, "non-finite loss", "learning rate")
    assert not (tmp_path / "ft").exists()
