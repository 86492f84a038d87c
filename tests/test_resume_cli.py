"""Issue 15 item 6: `score` and `finetune` resume from the CLI (--resume); an unfinished
checkpoint is marked incomplete and `plan` refuses it; resuming with another batch size or
other options is refused; a resumed run ends exactly as an uninterrupted one."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("fastprune.models")

from _cli_run import SPEC, cli, one_line_error  # noqa: E402
from fastprune.stats.statistics import Statistics  # noqa: E402

DATA = "synthetic:n=12,size=32,seed=3"


def _interrupt_after(monkeypatch, module, name, calls):
    """Make module.name raise KeyboardInterrupt on its call number `calls` + 1."""
    real = getattr(module, name)
    seen = {"n": 0}

    def wrapped(*a, **k):
        if seen["n"] == calls:
            raise KeyboardInterrupt
        seen["n"] += 1
        return real(*a, **k)
    monkeypatch.setattr(module, name, wrapped)


def _score(out, *extra, capsys=None):
    return cli("score", "--model", SPEC, "--data", DATA, "--batch-size", "2", "--checkpoint-every", "1",
               "--out", out, *extra, capsys=capsys)


def test_interrupted_score_resumes_to_the_uninterrupted_statistics(tmp_path, monkeypatch, capsys):
    import fastprune.stats.collect as collect_mod

    torch.manual_seed(0)
    assert _score(tmp_path / "whole.fps")[0] == 0
    with monkeypatch.context() as m:
        _interrupt_after(m, collect_mod, "_run", 3)
        torch.manual_seed(0)
        assert _score(tmp_path / "s.fps")[0] == 130
    partial = tmp_path / "s.fps.partial"
    assert not (tmp_path / "s.fps").exists() and partial.is_file()
    assert not Statistics.load(partial).complete and Statistics.load(partial).meta["batches"] == 3
    # plan refuses the unfinished checkpoint, the API too
    capsys.readouterr()
    code, out = cli("plan", partial, "--method", "l1", "--ratio", "0.5", "--model", SPEC, "--out",
                    tmp_path / "p.json", capsys=capsys)
    one_line_error(code, out, "unfinished checkpoint", "--resume")
    # resuming with another batch size is refused (same weights: the SPEC's seeded initialisation)
    torch.manual_seed(0)
    code, out = cli("score", "--model", SPEC, "--data", DATA, "--batch-size", "3", "--out", tmp_path / "s.fps",
                    "--resume", capsys=capsys)
    one_line_error(code, out, "batches of 2", "batches of 3")
    torch.manual_seed(0)
    code, out = cli("score", "--model", SPEC, "--data", "synthetic:n=12,size=32,seed=4", "--batch-size", "2",
                    "--out", tmp_path / "s.fps", "--resume", capsys=capsys)
    one_line_error(code, out, "other options", "data=")
    code, out = _score(tmp_path / "s.fps", "--resume", capsys=capsys)
    one_line_error(code, out, "other weights")  # another initialisation
    torch.manual_seed(0)
    assert _score(tmp_path / "s.fps", "--resume")[0] == 0
    assert not partial.exists()
    a, b = Statistics.load(tmp_path / "whole.fps"), Statistics.load(tmp_path / "s.fps")
    assert b.complete and a.meta["samples"] == b.meta["samples"] == 12
    for gid in a.moments:
        for k, v in a.moments[gid].state_dict().items():
            assert torch.equal(v, b.moments[gid].state_dict()[k]), (gid, k)
        for c in a.influence.get(gid, {}):
            for k, v in a.influence[gid][c].state_dict().items():
                if isinstance(v, torch.Tensor):
                    torch.testing.assert_close(v, b.influence[gid][c].state_dict()[k], rtol=1e-12, atol=0)


def test_resume_without_an_interrupted_run_is_an_error(tmp_path, capsys):
    code, out = _score(tmp_path / "s.fps", "--resume", capsys=capsys)
    one_line_error(code, out, "no interrupted run")


def test_interrupted_finetune_resumes_bit_for_bit(tmp_path, monkeypatch):
    import fastprune.train.loop as loop

    from fastprune.cli.artifacts import load_model

    args = ("finetune", "--model", SPEC, "--data", DATA, "--epochs", "3", "--batch-size", "4", "--lr", "0.01")
    assert cli(*args, "--out", tmp_path / "whole")[0] == 0
    with monkeypatch.context() as m:
        _interrupt_after(m, loop, "save_checkpoint", 1)  # dies while saving after epoch 2
        assert cli(*args, "--out", tmp_path / "ft")[0] == 130
    assert (tmp_path / "ft.partial").is_dir() and not (tmp_path / "ft").exists()
    torch.manual_seed(999)  # another process: other global random state
    assert cli(*args, "--out", tmp_path / "ft", "--resume")[0] == 0
    assert not (tmp_path / "ft.partial").exists()
    a, b = load_model(str(tmp_path / "whole")).model, load_model(str(tmp_path / "ft")).model
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k



def test_resuming_finetune_with_other_options_is_refused(tmp_path, monkeypatch, capsys):
    import fastprune.train.loop as loop

    args = ("finetune", "--model", SPEC, "--data", DATA, "--epochs", "2", "--batch-size", "4", "--out", tmp_path / "ft")
    with monkeypatch.context() as m:
        _interrupt_after(m, loop, "save_checkpoint", 1)
        assert cli(*args)[0] == 130
    capsys.readouterr()
    code, out = cli(*args, "--lr", "0.02", "--resume", capsys=capsys)
    one_line_error(code, out, "other options", "lr=")
    code, out = cli(*args[:4], "synthetic:n=8,size=32,seed=3", *args[5:], "--resume", capsys=capsys)
    one_line_error(code, out, "other options")
