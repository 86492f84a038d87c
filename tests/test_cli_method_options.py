"""Method options on the command line that a paper's setup could get wrong silently: each is
one clear error (one line on stderr, exit code 2, nothing written)."""
from __future__ import annotations

from _cli_run import cli
from fastprune.cli.main import main


def test_plan_variance_where_it_has_no_use_is_one_error(tmp_path, capsys):
    for method, extra, words in (("msd_nci", [], "no use with --method msd_nci"),
                                 ("lfa", ["--factors", "kaiser"], "with --factors kaiser it has no use"),
                                 ("gates", [], "prunes by --tolerance alone: drop --variance")):
        code, out = cli("plan", tmp_path / "s.fps", "--method", method, "--variance", "0.9", *extra,
                        "--out", tmp_path / "p.json", capsys=capsys)
        assert code == 2 and words in out.err and out.err.count("\n") == 1
    assert not (tmp_path / "p.json").exists()


def test_lfa_variance_alone_implies_factors_variance(monkeypatch, tmp_path):
    """`plan --method lfa --variance tau` counts factors by tau (it used to fall back to Kaiser
    silently): the planner receives factors="variance"."""
    import fastprune.cli.commands.plan as cmd

    seen = {}

    def stop(args):
        seen.update(factors=args.factors, variance=args.variance)
        raise KeyboardInterrupt

    monkeypatch.setattr(cmd, "model_of_stats", stop)
    code = main(["plan", str(tmp_path / "s.fps"), "--method", "lfa", "--variance", "0.9", "--out", str(tmp_path / "p.json")])
    assert code == 130  # stopped where the statistics would be loaded
    assert seen == {"factors": "variance", "variance": 0.9}
