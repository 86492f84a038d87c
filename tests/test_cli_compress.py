"""`fastprune compress`, `fastprune compare` and `prune --reconstruct` from the command line: what
they write, and the user's mistakes (one line on stderr, exit 2, nothing overwritten)."""
from __future__ import annotations

import json

import pytest
import torch

from fastprune.cli.artifacts import load_model
from fastprune.cli.main import main
from fastprune.graph.cost import count
from _cli_run import cli as run_cli

SPEC = "unet:base_width=4,depth=1,upsample=bilinear"
DATA = "synthetic:n=4,size=64,seed=0"
VAL = "synthetic:n=4,size=64,seed=1"


def cli(capsys, *argv: str):
    return run_cli(*argv, capsys=capsys)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("base")
    assert main(["finetune", "--model", SPEC, "--data", DATA, "--epochs", "1", "--batch-size", "4",
                 "--out", str(d / "base")]) == 0
    assert main(["score", "--model", str(d / "base"), "--data", DATA, "--batch-size", "4",
                 "--out", str(d / "plain.fps")]) == 0
    assert main(["score", "--model", str(d / "base"), "--data", DATA, "--batch-size", "4", "--patch-gram",
                 "--out", str(d / "gram.fps")]) == 0
    return d


def test_compress_writes_model_and_report_and_refuses_other_arguments(base, tmp_path, capsys):
    out = tmp_path / "c"
    argv = ["compress", "--model", str(base / "base"), "--data", DATA, "--val-data", VAL, "--test-data", DATA, "--target-macs", "0.5",
            "--steps", "2", "--finetune-epochs", "1", "--stats-batches", "2", "--batch-size", "4",
            "--prune-classifier-input", "--out", str(out)]
    code, io = cli(capsys, *argv)
    assert code == 0, io.err
    pruned = load_model(str(out / "model")).model
    unpruned = load_model(str(base / "base")).model
    x = torch.zeros(1, 3, 64, 64)
    removed = 1 - count(pruned, x).macs / count(unpruned, x).macs
    assert 0.48 <= removed <= 0.6  # reached; 4-8 channels per layer make every count step coarse
    assert json.loads((out / "report" / "summary.json").read_text())["compress"]["macs"] == count(pruned, x).macs
    state = (out / "run" / "compress.json").read_text()
    code, io = cli(capsys, *[a if a != "0.5" else "0.6" for a in argv])
    assert code == 2 and "different arguments: target_macs=0.5" in io.err and len(io.err.strip().splitlines()) == 1
    assert (out / "run" / "compress.json").read_text() == state
    code, io = cli(capsys, *argv, "--allocation", "marginal")  # another allocation: another run
    assert code == 2 and "different arguments" in io.err and "allocation" in io.err
    assert (out / "run" / "compress.json").read_text() == state


def test_compare_with_the_marginal_allocation(base, tmp_path, capsys):
    out = tmp_path / "cmp"
    code, io = cli(capsys, "compare", "--model", str(base / "base"), "--data", DATA, "--val-data", VAL,
                   "--methods", "random", "--allocation", "marginal", "--target-macs", "0.5", "--seeds", "0",
                   "--finetune-epochs", "0", "--stats-batches", "2", "--batch-size", "4", "--out", str(out))
    assert code == 0, io.err
    doc = json.loads((out / "summary.json").read_text())
    assert doc["config"]["pipeline"]["allocation"] == "marginal"
    (row,) = doc["rows"]
    assert abs(row["macs_removed"] - 0.5) <= 0.06  # coarse layers of 4-8 channels
    assert "counts by marginal" in (out / "index.html").read_text()


def test_compare_takes_the_fine_tuning_recipe_and_refuses_a_bad_one(base, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", "--model", str(base / "base"), "--data", DATA, "--val-data", VAL, "--methods", "random",
            "--target-macs", "0.5", "--seeds", "0", "--finetune-epochs", "1", "--stats-batches", "2",
            "--batch-size", "4", "--out", str(out)]
    for flag, bad, word in (("--temperature", "0", "temperature"), ("--temperature", "nan", "--temperature"),
                            ("--keep-best", "iou", "keep_best must be one of building_iou")):
        code, io = cli(capsys, *argv, flag, bad)
        assert code == 2 and word in io.err and len(io.err.strip().splitlines()) == 1 and not out.exists()
    code, io = cli(capsys, *argv, "--temperature", "0.5", "--keep-best", "building_iou")
    assert code == 0, io.err
    pipe = json.loads((out / "summary.json").read_text())["config"]["pipeline"]
    assert pipe["temperature"] == 0.5 and pipe["keep_best"] == "building_iou"
    code, io = cli(capsys, *argv[:-1], str(tmp_path / "cmp2"))
    pipe = json.loads((tmp_path / "cmp2" / "summary.json").read_text())["config"]["pipeline"]
    assert code == 0 and pipe["temperature"] == 1.0 and pipe["keep_best"] is None


def test_compare_refuses_an_unreachable_budget_before_any_work(base, tmp_path, capsys):
    out = tmp_path / "cmp"
    code, io = cli(capsys, "compare", "--model", str(base / "base"), "--data", DATA, "--val-data", VAL,
                   "--target-macs", "0.5", "0.995", "--seeds", "0", "--finetune-epochs", "0", "--out", str(out))
    assert code == 2 and "cannot remove 99.5%" in io.err and "min_channels" in io.err
    assert len(io.err.strip().splitlines()) == 1 and not out.exists()


def test_compare_refuses_a_repeated_seed_method_or_budget(base, tmp_path, capsys):
    """A repeated seed would enter the mean twice and shrink the sd: refused before any work."""
    out = tmp_path / "cmp"
    argv = ["compare", "--model", str(base / "base"), "--data", DATA, "--val-data", VAL, "--finetune-epochs", "0",
            "--out", str(out)]
    for extra, word in ((["--seeds", "3", "1", "3", "--target-macs", "0.5"], "seed 3 given more than once"),
                        (["--methods", "random", "subset", "random", "--target-macs", "0.5"], "method random given"),
                        (["--target-macs", "0.5", "0.5"], "budget 0.5 given")):
        code, io = cli(capsys, *argv, *extra)
        assert code == 2 and word in io.err and len(io.err.strip().splitlines()) == 1 and not out.exists(), io.err


def test_subset_without_the_patch_gram_is_refused(base, tmp_path, capsys):
    code, io = cli(capsys, "plan", str(base / "plain.fps"), "--method", "subset", "--ratio", "0.5",
                   "--out", str(tmp_path / "p.json"))
    assert code == 2 and "patch_gram" in io.err and not (tmp_path / "p.json").exists()


def test_prune_reconstruct(base, tmp_path, capsys):
    code, _ = cli(capsys, "plan", str(base / "gram.fps"), "--method", "subset", "--ratio", "0.5",
                  "--out", str(tmp_path / "p.json"))
    assert code == 0
    code, io = cli(capsys, "prune", "--model", str(base / "base"), "--plan", str(tmp_path / "p.json"),
                   "--reconstruct", "refit", "--out", str(tmp_path / "r"))
    assert code == 2 and "--stats" in io.err and not (tmp_path / "r").exists()
    code, io = cli(capsys, "prune", "--model", str(base / "base"), "--plan", str(tmp_path / "p.json"),
                   "--reconstruct", "refit", "--stats", str(base / "plain.fps"), "--out", str(tmp_path / "r"))
    assert code == 2 and "patch Gram" in io.err and not (tmp_path / "r").exists()
    code, io = cli(capsys, "prune", "--model", str(base / "base"), "--plan", str(tmp_path / "p.json"),
                   "--reconstruct", "refit", "--stats", str(base / "gram.fps"), "--data", DATA,
                   "--out", str(tmp_path / "r"))
    assert code == 0 and "reconstructed by refit" in io.out
    assert load_model(str(tmp_path / "r")).pruned
