"""Issue 15 item 4: statistics, plans and model folders carry the model-structure fingerprint,
the digest of the weights they were computed on and checksums of their payload; loading checks
them and says which check failed; paths inside a model folder stay inside it."""
from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

pytest.importorskip("fastprune.models")

from _cli_run import DATA, SPEC, build_run, cli, one_line_error, reseal  # noqa: E402
from fastprune.cli.specs import save_weights  # noqa: E402
from fastprune.models import create  # noqa: E402
from fastprune.stats.statistics import Statistics  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = build_run(tmp_path_factory.mktemp("checks"))
    save_weights(create("unet", base_width=4, depth=1, upsample="bilinear"), d / "other.safetensors")
    return d


def test_statistics_of_other_weights_are_refused(run, tmp_path, capsys):
    code, out = cli("plan", run / "s.fps", "--method", "l1", "--ratio", "0.5", "--model", SPEC,
                    "--weights", run / "other.safetensors", "--out", tmp_path / "p.json", capsys=capsys)
    one_line_error(code, out, "collected on other weights")


def test_plan_of_other_weights_is_refused(run, tmp_path, capsys):
    code, out = cli("prune", "--model", SPEC, "--weights", run / "other.safetensors", "--plan", run / "l1.json",
                    "--out", tmp_path / "p", capsys=capsys)
    one_line_error(code, out, "made on other weights")
    assert not (tmp_path / "p").exists()


def test_plan_fingerprint_is_checked(run, tmp_path, capsys):
    shutil.copy(run / "l1.json", tmp_path / "l1.json")
    reseal(tmp_path / "l1.json", lambda d: d["meta"].update(fingerprint="0" * 32))
    code, out = cli("prune", "--model", run / "base", "--plan", tmp_path / "l1.json", "--out", tmp_path / "p",
                    capsys=capsys)
    one_line_error(code, out, "different model (graph fingerprint")


def test_report_refuses_statistics_of_another_model(run, tmp_path, capsys):
    other = tmp_path / "o.fps"
    assert cli("score", "--model", "unet:base_width=6,depth=1,upsample=bilinear", "--data", DATA,
               "--out", other)[0] == 0
    code, out = cli("report", "--model", run / "base", "--pruned", run / "pruned", "--data", DATA, "--stats", other,
                    "--repeats", "1", "--out", tmp_path / "r", capsys=capsys)
    one_line_error(code, out, "--stats", "different model")
    assert not (tmp_path / "r").exists()


def _rewrite_producers(path, out):
    """The issue's probe: producer indices rewritten to 100..115, the file re-sealed."""
    stats = Statistics.load(path)
    g = next(iter(stats.groups.values()))
    g.producers[0] = dataclasses.replace(g.producers[0], indices=list(range(100, 100 + g.channels)))
    stats.save(out)


def test_rewritten_producer_indices_are_refused(run, tmp_path, capsys):
    _rewrite_producers(run / "s.fps", tmp_path / "s.fps")
    code, out = cli("plan", tmp_path / "s.fps", "--method", "l1", "--ratio", "0.5", "--model", run / "base",
                    "--out", tmp_path / "p.json", capsys=capsys)
    one_line_error(code, out, "producers and channels the model's graph does not have")


def test_one_flipped_byte_anywhere_in_the_statistics_is_refused(run, tmp_path, capsys):
    data = (run / "s.fps").read_bytes()
    header = 8 + int.from_bytes(data[:8], "little")
    for pos in (header + 17, len(data) - 3, header // 2):  # tensors, their end, the description
        bad = bytearray(data)
        bad[pos] ^= 0x01
        (tmp_path / "s.fps").write_bytes(bytes(bad))
        code, out = cli("plan", tmp_path / "s.fps", "--method", "l1", "--ratio", "0.5", "--model", run / "base",
                        "--out", tmp_path / "p.json", capsys=capsys)
        one_line_error(code, out, "s.fps")
        assert not (tmp_path / "p.json").exists()


def test_model_folder_with_flipped_weight_bytes_is_refused(run, tmp_path, capsys):
    shutil.copytree(run / "base", tmp_path / "base")
    w = tmp_path / "base" / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-5] ^= 0x40
    w.write_bytes(bytes(data))
    code, out = cli("evaluate", "--model", tmp_path / "base", "--data", DATA, capsys=capsys)
    one_line_error(code, out, "weights.safetensors", "sha256")


@pytest.mark.parametrize("key, value", [("weights", "../other.safetensors"), ("weights", "/etc/passwd"),
                                        ("pruned", "..")])
def test_model_folder_paths_must_stay_inside(run, tmp_path, capsys, key, value):
    src = run / ("pruned" if key == "pruned" else "base")
    shutil.copytree(src, tmp_path / "m")

    def edit(doc):
        doc[key] = value
        doc["files"] = {value: "0" * 64} if key == "weights" else doc["files"]
    reseal(tmp_path / "m" / "fastprune-model.json", edit)
    code, out = cli("evaluate", "--model", tmp_path / "m", "--data", DATA, capsys=capsys)
    one_line_error(code, out, "fastprune-model.json")
    assert "inside the folder" in out.err or "outside the folder" in out.err


@pytest.mark.parametrize("version, msg", [(2, "version 2 is not supported"), ("1", "version '1' is not supported")])
def test_model_folder_version_is_checked(run, tmp_path, capsys, version, msg):
    shutil.copytree(run / "base", tmp_path / "m")
    reseal(tmp_path / "m" / "fastprune-model.json", lambda d: d.update(version=version))
    code, out = cli("evaluate", "--model", tmp_path / "m", "--data", DATA, capsys=capsys)
    one_line_error(code, out, msg)


def test_artifacts_record_fingerprint_weights_digest_and_checksum(run):
    from fastprune._documents import weights_digest
    from fastprune.cli.artifacts import load_model

    model = load_model(str(run / "base")).model
    stats = Statistics.load(run / "s.fps")
    plan = json.loads((run / "l1.json").read_text())
    marker = json.loads((run / "base" / "fastprune-model.json").read_text())
    assert stats.meta["weights_digest"] == plan["meta"]["weights_digest"] == marker["weights_digest"] \
        == weights_digest(model)
    assert plan["meta"]["fingerprint"] == stats.fingerprint
    assert all(len(d["checksum"]) == 64 for d in (plan, marker))
    assert stats.meta["model"]["folder"] == "base"  # relative to the statistics file's folder


def test_model_folder_structure_fingerprint_is_checked(run, tmp_path, capsys):
    marker = json.loads((run / "base" / "fastprune-model.json").read_text())
    assert marker["fingerprint"] == Statistics.load(run / "s.fps").fingerprint
    shutil.copytree(run / "base", tmp_path / "m")
    reseal(tmp_path / "m" / "fastprune-model.json", lambda d: d.update(fingerprint="0" * 32))
    code, out = cli("evaluate", "--model", tmp_path / "m", "--data", DATA, capsys=capsys)
    one_line_error(code, out, "another structure")


def test_weights_digest_is_sha256_of_names_dtypes_shapes_and_bytes():
    import hashlib

    import numpy as np
    import torch

    from fastprune._documents import weights_digest

    g = torch.Generator().manual_seed(3)
    state = {"b.weight": torch.randn(4, 3, 3, 3, generator=g), "a.bias": torch.randn(5, generator=g).half(),
             "c.count": torch.tensor(7), "d.empty": torch.zeros(0, 2), "e.t": torch.randn(3, 4, generator=g).t()}
    h = hashlib.sha256()  # the definition, written out with numpy
    for name in sorted(state):
        t = state[name]
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(np.ascontiguousarray(t.numpy()).tobytes())
    assert weights_digest(state) == h.hexdigest()[:32]
    state["e.t"] = state["e.t"].contiguous()  # the same values in other memory: the same digest
    assert weights_digest(state) == h.hexdigest()[:32]
    state["a.bias"][0] += 1
    assert weights_digest(state) != h.hexdigest()[:32]
