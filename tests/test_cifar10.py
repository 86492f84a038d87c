"""CIFAR-10 (binary version) as a data source, and classification end to end: top-1 accuracy
in `evaluate`, `finetune` with a teacher and keep-best, `evaluate` and the report of a
classifier from the CLI; bad input is one line and exit code 2."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from graph_util import one_thread
from _formats import CIFAR_RECORD, write_cifar10, write_cifar_file
from fastprune.data import open_dataset
from fastprune.data.cifar10 import Cifar10
from fastprune.train import evaluate
from _cli_run import cli as run_cli



_threads = pytest.fixture(autouse=True)(one_thread)  # tiny models: one thread is fastest

def cli(capsys, *argv: str):
    return run_cli(*argv, capsys=capsys)


@pytest.fixture()
def cifar(tmp_path):
    return tmp_path, write_cifar10(tmp_path)


def test_records_read_back_as_written(cifar):
    root, written = cifar
    train = open_dataset(f"cifar10:{root}")  # the folder the archive unpacks to is found inside
    im, lab = written["train"]
    assert len(train) == len(lab) == 40 and train.num_classes == 10
    for i in (0, 23, 24, 39):  # both sides of the file boundary
        x, y = train[i]
        assert x.dtype == torch.float32 and x.shape == (3, 32, 32) and y.dtype == torch.int64 and y.ndim == 0
        np.testing.assert_array_equal((x.numpy() * 255).round().astype(np.uint8), im[i])
        assert int(y) == lab[i]
    test = open_dataset(f"cifar10:{root / 'cifar-10-batches-bin'}:split=test,n=5")
    tim, tlab = written["test"]
    assert len(test) == 5
    np.testing.assert_array_equal([int(test[i][1]) for i in range(5)], tlab[:5])
    np.testing.assert_array_equal((test[4][0].numpy() * 255).round().astype(np.uint8), tim[4])


def test_red_plane_comes_first(tmp_path):
    """A record is label, 1024 red, 1024 green, 1024 blue bytes: one pure-green image."""
    (tmp_path / "test_batch.bin").write_bytes(bytes([7]) + bytes(1024) + bytes([200]) * 1024 + bytes(1024))
    x, y = Cifar10(tmp_path, split="test")[0]
    assert int(y) == 7
    assert float(x[0].max()) == 0 and float(x[2].max()) == 0 and torch.allclose(x[1], torch.full((32, 32), 200 / 255))


def test_augment_is_a_shift_and_flip_of_the_image(cifar):
    root, written = cifar
    plain = open_dataset(f"cifar10:{root}")
    aug = open_dataset(f"cifar10:{root}:augment=true,seed=3")
    changed = 0
    for epoch in range(3):
        aug.set_epoch(epoch)
        for i in range(8):
            a, b = plain[i][0].numpy(), aug[i][0].numpy()
            assert torch.equal(aug[i][0], aug[i][0])  # a pure function of (seed, epoch, index)
            pad = np.zeros((3, 40, 40), np.float32)
            pad[:, 4:36, 4:36] = a
            hits = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                    if np.array_equal(b, (lambda s: s[:, :, ::-1] if f else s)(pad[:, dy:dy + 32, dx:dx + 32]))]
            assert hits, "an augmented image is a 4-pixel shift (zero padded) of the record, maybe flipped"
            changed += not np.array_equal(a, b)
    assert changed > 12


def test_bad_folders_and_files_are_one_clear_error(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    write_cifar10(tmp_path / "a")
    batch = tmp_path / "a" / "cifar-10-batches-bin" / "data_batch_2.bin"
    batch.write_bytes(batch.read_bytes()[:-100])  # a truncated download
    code, out = cli(capsys, "evaluate", "--model", "vgg16:width=0.0625", "--data", f"cifar10:{tmp_path / 'a'}")
    assert code == 2 and out.err.count("\n") == 1 and "data_batch_2.bin" in out.err and "truncated" in out.err
    assert "Traceback" not in out.err
    pickled = tmp_path / "py"
    pickled.mkdir()
    (pickled / "data_batch_1").write_bytes(b"\x80\x04not read")
    with pytest.raises(ValueError, match="pickled Python version"):
        open_dataset(f"cifar10:{pickled}")
    bad = tmp_path / "bad"
    bad.mkdir()
    write_cifar_file(bad / "test_batch.bin", np.zeros((2, 3, 32, 32), np.uint8), np.array([3, 12], np.uint8))
    with pytest.raises(ValueError, match="record 1 has label 12"):
        open_dataset(f"cifar10:{bad}:split=test")
    with pytest.raises(ValueError, match="no data_batch"):
        open_dataset(f"cifar10:{bad}")
    with pytest.raises(ValueError, match="split must be"):
        open_dataset(f"cifar10:{bad}:split=val")
    with pytest.raises(ValueError, match="no tiling"):
        open_dataset(f"cifar10:{bad}:split=test,tile=16")
    assert (bad / "test_batch.bin").stat().st_size == 2 * CIFAR_RECORD  # inputs are never touched


class _Fixed(nn.Module):
    """Logits = a fixed linear map of the mean colour: an independent classifier to score."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 10, 1)
        torch.manual_seed(1)
        nn.init.normal_(self.conv.weight)

    def forward(self, x):
        return self.conv(x).mean((2, 3))


def test_evaluate_reports_top1_accuracy(cifar):
    root, written = cifar
    data = open_dataset(f"cifar10:{root}")
    model = _Fixed()
    res = evaluate(model, data, batch_size=7)
    x = torch.stack([data[i][0] for i in range(len(data))])
    pred = model(x).argmax(1).numpy()
    lab = written["train"][1]
    assert res["accuracy"] == pytest.approx(float(np.mean(pred == lab)))
    assert res["samples"] == len(lab)
    for k in range(10):
        if (lab == k).any():
            assert res["class_accuracy"][k] == pytest.approx(float(np.mean(pred[lab == k] == k)))
    assert "building_iou" not in res


def test_classifier_end_to_end_from_the_cli(cifar, capsys):
    root, written = cifar
    d = root / "out"
    spec = "vgg16:width=0.0625"
    train, test = f"cifar10:{root}", f"cifar10:{root}:split=test"
    assert cli(capsys, "finetune", "--model", spec, "--data", train, "--val-data", test, "--epochs", "2",
               "--batch-size", "8", "--keep-best", "accuracy", "--out", d / "base")[0] == 0
    assert cli(capsys, "score", "--model", d / "base", "--data", train, "--out", d / "s.fps")[0] == 0
    assert cli(capsys, "plan", d / "s.fps", "--method", "l1", "--ratio", "0.5", "--out", d / "p.json")[0] == 0
    assert cli(capsys, "prune", "--model", d / "base", "--plan", d / "p.json", "--out", d / "pr")[0] == 0
    code, out = cli(capsys, "finetune", "--model", d / "pr", "--teacher", d / "base", "--distill", "0.7",
                    "--data", train, "--val-data", test, "--epochs", "2", "--batch-size", "8",
                    "--keep-best", "accuracy", "--out", d / "ft")
    assert code == 0 and "top-1 accuracy" in out.out
    doc = json.loads((d / "ft" / "fastprune-model.json").read_text())
    assert doc["finetune"]["teacher"] == str(d / "base") and doc["finetune"]["distill"] == 0.7
    assert doc["finetune"]["best"]["accuracy"] == pytest.approx(doc["metrics"]["accuracy"])
    assert cli(capsys, "evaluate", "--model", d / "ft", "--data", test, "--out", d / "m.json")[0] == 0
    m = json.loads((d / "m.json").read_text())
    from fastprune.cli.artifacts import load_model

    model = load_model(str(d / "ft")).model
    x = torch.stack([torch.from_numpy(im.astype(np.float32) / 255) for im in written["test"][0]])
    with torch.no_grad():
        acc = float((model(x).argmax(1).numpy() == written["test"][1]).mean())
    assert m["accuracy"] == pytest.approx(acc) and m["samples"] == 16 and "iou" not in m
    assert cli(capsys, "report", "--model", d / "base", "--pruned", d / "ft", "--data", test, "--repeats", "1",
               "--out", d / "rep")[0] == 0
    summ = json.loads((d / "rep" / "summary.json").read_text())
    assert summ["l1"]["accuracy"] == pytest.approx(acc)
    assert summ["l1"]["accuracy_change"] == pytest.approx(acc - summ["baseline"]["accuracy"])
    assert summ["baseline"]["latency"]["input_shape"] == [1, 3, 32, 32]
    assert "top-1 accuracy" in (d / "rep" / "index.html").read_text()


def test_finetune_options_are_checked(cifar, capsys):
    root, _ = cifar
    for extra, words in ((["--keep-best", "accuracy"], "--val-data"), (["--distill", "1.5"], "--distill"),
                         (["--teacher-weights", "x.safetensors"], "--teacher")):
        code, out = cli(capsys, "finetune", "--model", "vgg16:width=0.0625", "--data", f"cifar10:{root}",
                        "--epochs", "1", "--out", root / "o", *extra)
        assert code == 2 and words in out.err and out.err.count("\n") == 1
    code, out = cli(capsys, "finetune", "--model", "vgg16:width=0.0625", "--data", f"cifar10:{root}",
                    "--val-data", f"cifar10:{root}:split=test", "--epochs", "1", "--keep-best", "iou",
                    "--out", root / "o")
    assert code == 2 and "keep_best='iou' is not a metric" in out.err


def test_folder_specs_take_options_after_the_path():
    from fastprune.data import parse_spec

    assert parse_spec("cifar10:/d/c:split=test,n=5") == ("cifar10", "/d/c", {"split": "test", "n": 5})
    assert parse_spec("inria:/data/a:b/train:tile=256,samples=64") == \
        ("inria", "/data/a:b/train", {"tile": 256, "samples": 64})
    assert parse_spec("camvid:/data/camvid:v2") == ("camvid", "/data/camvid:v2", {})  # not key=value: a path
    with pytest.raises(ValueError, match="needs a path"):
        parse_spec("inria:")


def test_a_classifier_result_in_the_report():
    from fastprune.report import ModelResult, summary

    base, pruned = ModelResult(100, 1000, 2.0, accuracy=0.9), ModelResult(40, 300, 1.0, accuracy=0.85,
                                                                         before_finetune={"accuracy": 0.5})
    s = summary({"baseline": base, "x": pruned})
    assert s["x"]["accuracy_change"] == pytest.approx(-0.05) and "iou" not in s["x"]
    assert s["x"]["before_finetune"] == {"accuracy": 0.5}
    with pytest.raises(ValueError, match="segmentation.*classification"):
        ModelResult(1, 1, 1.0, 0.5, 0.5, 0.5, accuracy=0.5)
    with pytest.raises(ValueError, match="lacks"):
        ModelResult(1, 1, 1.0, accuracy=0.5, before_finetune={"iou": 0.1})
    with pytest.raises(ValueError, match="classification result, the baseline a segmentation"):
        summary({"baseline": ModelResult(1, 1, 1.0, 0.5, 0.5, 0.5), "x": pruned})

