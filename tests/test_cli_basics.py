"""The CLI's frame: --help everywhere, `info`, SPEC parsing, checkpoints, and every user error
ending in one line on stderr with exit code 2 (no traceback)."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from fastprune.cli.errors import UsageError, one_line
from fastprune.cli.main import COMMANDS, main
from fastprune.cli.specs import (example_input, load_weights, parse_model_spec, parse_options, parse_size,
                                 read_state_dict, save_weights)


def tiny_net(width: int = 4) -> nn.Module:
    """A factory for `test_cli_basics:tiny_net` specs."""
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 2, 1))


def not_a_module():
    return 42


class Evil:
    """An arbitrary pickled object: weights_only loading must refuse it."""


def run_cli(argv, capsys):
    """main(argv) in-process: (exit code, stdout, stderr)."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: --help (0) and usage errors (2)
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_user_error(code, err, *words):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], lines[0]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_for_every_command(command, capsys):
    code, out, _ = run_cli([command, "--help"], capsys)
    assert code == 0
    assert f"fastprune {command}" in out and "--" in out


def test_top_level_help_lists_commands(capsys):
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0
    for c in COMMANDS:
        assert c in out


def test_info_reports_build(capsys):
    import fastprune

    code, out, _ = run_cli(["info", "--json"], capsys)
    assert code == 0
    info = json.loads(out)
    assert info["fastprune"] == fastprune.__version__
    assert info["build.cpu_isa_active"] == fastprune.cpu_isa()
    assert info["build.cuda_built"] == fastprune.build_info()["cuda_built"]
    code, out, _ = run_cli(["info"], capsys)
    assert code == 0 and "cpu_isa_active" in out and "torch" in out


@pytest.mark.parametrize("argv,words", [
    (["bogus"], ["invalid choice"]),
    (["score", "--model", "unet"], ["--data", "--out"]),
    (["plan", "x.fps", "--method", "lfa", "--variance", "0.9", "--ratio", "0.5", "--out", "p.json"], ["not allowed"]),
    (["evaluate", "--model", "unet", "--data", "synthetic", "--batch-size", "two"], ["invalid int"]),
])
def test_argument_errors_are_one_line(argv, words, capsys):
    code, _, err = run_cli(argv, capsys)
    assert_user_error(code, err, *words)


def test_missing_files_are_one_line(tmp_path, capsys):
    code, _, err = run_cli(["plan", str(tmp_path / "none.fps"), "--method", "lfa", "--out", str(tmp_path / "p.json")], capsys)
    assert_user_error(code, err, "statistics file not found")
    code, _, err = run_cli(["prune", "--model", "test_cli_basics:tiny_net", "--plan", str(tmp_path / "p.json"),
                            "--out", str(tmp_path / "o")], capsys)
    assert_user_error(code, err, "plan file not found")
    code, _, err = run_cli(["evaluate", "--model", "test_cli_basics:tiny_net", "--weights", str(tmp_path / "w.pt"),
                            "--data", "synthetic"], capsys)
    assert_user_error(code, err, "checkpoint not found")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("spec,words", [
    ("nosuchnet", ["unknown model SPEC"]),
    ("unet:width", ["bad option"]),
    ("no_such_module_xyz:factory", ["cannot import"]),
    ("test_cli_basics:missing", ["no callable"]),
    ("test_cli_basics:not_a_module", ["not a torch nn.Module"]),
    ("test_cli_basics:tiny_net:depth=3", ["depth"]),
])
def test_bad_model_specs_are_one_line(spec, words, tmp_path, capsys):
    code, _, err = run_cli(["score", "--model", spec, "--data", "synthetic", "--out", str(tmp_path / "s.fps")], capsys)
    assert_user_error(code, err, *words)


def test_wrong_weights_for_model_is_one_line(tmp_path, capsys):
    save_weights(tiny_net(8), tmp_path / "w8.safetensors")
    code, _, err = run_cli(["evaluate", "--model", "test_cli_basics:tiny_net:width=4",
                            "--weights", str(tmp_path / "w8.safetensors"), "--data", "synthetic"], capsys)
    assert_user_error(code, err, "do not fit")


def test_entry_point_subprocess_exit_code(tmp_path, run_python):
    proc = run_python("-m", "fastprune.cli.main", "plan", str(tmp_path / "x.fps"), "--method", "lfa",
                      "--out", str(tmp_path / "p.json"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    proc = run_python("-m", "fastprune.cli.main", "info")
    assert proc.returncode == 0 and "fastprune" in proc.stdout


def test_parse_options_and_values():
    assert parse_options("base_width=16,depth=3,batch_norm=false,upsample=bilinear,lr=0.5,x=none") == \
        {"base_width": 16, "depth": 3, "batch_norm": False, "upsample": "bilinear", "lr": 0.5, "x": None}
    assert parse_options("") == {}
    for bad in ("a", "=1", "1a=2", "a=1,,b=2"):
        with pytest.raises(UsageError):
            parse_options(bad)


def test_parse_model_spec_forms():
    s = parse_model_spec("unet:base_width=16,depth=3")
    assert s.builtin and s.name == "unet" and s.options == {"base_width": 16, "depth": 3}
    assert parse_model_spec("SegNet").name == "segnet"
    s = parse_model_spec("my.pkg.nets:build:width=3")
    assert not s.builtin and s.name == "my.pkg.nets:build" and s.options == {"width": 3}
    assert parse_model_spec("mod:factory").options == {}
    for bad in ("", "unknown", "a b:c", "mod:1factory"):
        with pytest.raises(UsageError):
            parse_model_spec(bad)


def test_parse_size():
    assert parse_size("64") == (64, 64) and parse_size("32x48") == (32, 48)
    for bad in ("0", "a", "1x2x3", "-4"):
        with pytest.raises(UsageError):
            parse_size(bad)


def test_checkpoints_round_trip_and_refuse_pickles(tmp_path):
    net = tiny_net()
    save_weights(net, tmp_path / "w.safetensors")
    torch.save(net.state_dict(), tmp_path / "w.pt")
    torch.save({"state_dict": net.state_dict(), "epoch": 3}, tmp_path / "wrapped.pt")
    for name in ("w.safetensors", "w.pt", "wrapped.pt"):
        fresh = tiny_net()
        load_weights(fresh, tmp_path / name)
        for a, b in zip(fresh.state_dict().values(), net.state_dict().values()):
            assert torch.equal(a, b)
    torch.save({"x": Evil()}, tmp_path / "evil.pt")  # pickled class: weights_only refuses it
    with pytest.raises(UsageError, match="weights_only"):
        read_state_dict(tmp_path / "evil.pt")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UsageError, match="safetensors"):
        read_state_dict(tmp_path / "junk.safetensors")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(UsageError, match="state dict"):
        read_state_dict(tmp_path / "list.pt")


def test_example_input_uses_first_conv():
    assert example_input(tiny_net(), (8, 12)).shape == (1, 3, 8, 12)
    with pytest.raises(UsageError):
        example_input(nn.Linear(2, 2))


def test_one_line_strips_prefix_and_newlines():
    assert one_line(ValueError("fastprune: bad\n  thing")) == "bad thing"
    assert one_line(KeyError("k")) == "missing key 'k'"
    assert one_line(FileNotFoundError(2, "No such file or directory", "/x")) == "No such file or directory: /x"


def test_bench_summary_ratios():
    from fastprune.cli.commands.bench import summarize

    doc = {"benchmarks": [
        {"name": "test_gram_torch", "group": "gram", "stats": {"median": 0.02}, "extra_info": {"flops": 2e9}},
        {"name": "test_gram_fastprune", "group": "gram", "stats": {"median": 0.01}, "extra_info": {"flops": 2e9}},
        {"name": "test_stream", "group": "stats", "stats": {"median": 0.5}, "extra_info": {"bytes": 4e9}},
    ]}
    rows = summarize(doc, {"sgemm_gflops": 100.0, "copy_gbps": 16.0})
    assert rows[0]["gflops"] == pytest.approx(100.0) and rows[0]["of_sgemm"] == pytest.approx(1.0)
    assert rows[1]["of_sgemm"] == pytest.approx(2.0)
    assert rows[1]["speedup_vs_test_gram_torch"] == pytest.approx(2.0)
    assert rows[2]["gbps"] == pytest.approx(8.0) and rows[2]["of_copy"] == pytest.approx(0.5)
    assert not any(k.startswith("speedup") for k in rows[2])


def test_bench_missing_folder_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(["bench", "--path", str(tmp_path / "nope")], capsys)
    assert_user_error(code, err, "benchmarks folder not found")


def test_machine_limits_are_positive():
    from fastprune.report.machine import copy_gbps, sgemm_gflops

    assert sgemm_gflops(128, 2) > 0 and copy_gbps(4, 2) > 0
