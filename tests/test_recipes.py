"""Every command of docs/recipes.md, as written, on tiny files in each data set's real format:
CIFAR-10 binary records, a CamVid folder of PNGs with colour labels, Inria and AIRS folders of
TIFFs. Only the variables each recipe declares change (data folders, output folder, a tiny
model, one epoch, few samples), so a recipe whose commands stop working fails here."""
from __future__ import annotations

import json

import pytest
import torch

import recipes
from graph_util import one_thread
from _formats import write_aerial, write_camvid, write_cifar10
from fastprune.cli.main import main

RECIPES = {r.title: r for r in recipes.parse()}
TINY = {"EPOCHS": "1", "FT_EPOCHS": "1"}



_threads = pytest.fixture(autouse=True)(one_thread)  # tiny models: one thread is fastest

def _run(title: str, overrides: dict[str, str]) -> None:
    r = RECIPES[title]
    overrides = {k: v for k, v in overrides.items() if k in r.defaults or k not in ("MODEL",)}
    tiny = {k: v for k, v in TINY.items() if k in r.defaults}
    for argv in recipes.argv(r, {**tiny, **overrides}):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: a recipe with an option the CLI does not have
            code = exc.code
        assert code == 0, f"{title}: fastprune {' '.join(argv)}"


def _title(start: str) -> str:
    found = [t for t in RECIPES if t.startswith(start)]
    assert len(found) == 1, (start, list(RECIPES))
    return found[0]


def test_the_page_covers_every_experiment_and_parses():
    titles = " | ".join(RECIPES)
    for words in ("VGG-16 on CIFAR-10: PCA", "VGG-16 on CIFAR-10: LFA1-1", "SegNet on CamVid",
                  "DeepLabv3+ on CamVid", "TernausNet on Inria", "U-Net on AIRS: learned", "U-Net on AIRS: layer pruning"):
        assert words in titles
    for r in RECIPES.values():
        assert r.commands and "OUT" in r.defaults
        for argv in recipes.argv(r, {}):  # the defaults expand: every variable is declared before use
            assert argv[0] in ("finetune", "score", "plan", "prune", "evaluate", "report", "levels"), argv


def test_the_parser_rejects_what_a_test_could_not_run():
    with pytest.raises(ValueError, match="not a variable default or a fastprune command"):
        recipes.parse("## x\n```sh\nOUT=${OUT:-a}\nrm -rf $OUT\n```\n")
    r = recipes.parse("## x\n```sh\nA=${A:-1}\nfastprune plan --x $B\n```\n")[0]
    with pytest.raises(KeyError, match=r"\$B"):
        recipes.argv(r, {})
    r = recipes.parse("## x\n```sh\nA=${A:-1}\nB=${B:-$A/2}\nfastprune plan $B \\\n  --y ${A}  # note\n```\n")[0]
    assert recipes.argv(r, {"A": "z"}) == [["plan", "z/2", "--y", "z"]]


@pytest.mark.slow
def test_vgg16_cifar10_recipes(tmp_path):
    write_cifar10(tmp_path / "data")
    over = {"CIFAR10": str(tmp_path / "data" / "cifar-10-batches-bin"), "OUT": str(tmp_path / "out"),
            "MODEL": "vgg16:width=0.0625"}
    _run(_title("VGG-16 on CIFAR-10: PCA"), over)
    _run(_title("VGG-16 on CIFAR-10: LFA1-1"), over)
    summ = json.loads((tmp_path / "out" / "report" / "summary.json").read_text())
    assert set(summ) == {"baseline", "pca_nci", "lfa"}
    assert all("accuracy" in v for v in summ.values())
    assert summ["lfa"]["params"] < summ["baseline"]["params"]


@pytest.mark.slow
@pytest.mark.parametrize("start, model", [("SegNet on CamVid", "segnet:width=0.0625"),
                                          ("DeepLabv3+ on CamVid", "deeplabv3plus:backbone=resnet18,width=0.125")])
def test_camvid_recipes(tmp_path, start, model):
    write_camvid(tmp_path / "camvid")
    _run(_title(start), {"CAMVID": str(tmp_path / "camvid"), "OUT": str(tmp_path / "out"), "MODEL": model})
    summ = json.loads((tmp_path / "out" / "report" / "summary.json").read_text())
    assert summ["lasso"]["macs"] < summ["baseline"]["macs"]


@pytest.mark.slow
@pytest.mark.parametrize("start, layout, model", [
    ("TernausNet on Inria", "inria", "ternausnet:width=0.125,num_filters=4"),
    ("U-Net on AIRS: learned", "airs", "unet:base_width=4,depth=2")])
def test_aerial_gates_recipes(tmp_path, start, layout, model):
    key = layout.upper()
    write_aerial(tmp_path / "train", layout, n=2, seed=0)
    write_aerial(tmp_path / "val", layout, n=1, seed=1)
    _run(_title(start), {f"{key}_TRAIN": str(tmp_path / "train"), f"{key}_VAL": str(tmp_path / "val"),
                         "OUT": str(tmp_path / "out"), "MODEL": model, "TILE": "64", "SAMPLES": "8"})
    plan = json.loads((tmp_path / "out" / "gates.json").read_text())
    assert plan["meta"]["method"] == "gates"
    assert (tmp_path / "out" / "report" / "summary.json").is_file()


@pytest.mark.slow
def test_unet_layer_pruning_recipe(tmp_path):
    """Layer pruning then filter pruning on tiny AIRS folders; THRESHOLD 0 makes `levels` remove
    every level it may (down to --min-depth 1), so the shallower U-Net is really shallower."""
    from fastprune.cli.artifacts import load_model

    write_aerial(tmp_path / "train", "airs", n=2, seed=0)
    write_aerial(tmp_path / "val", "airs", n=1, seed=1)
    out = tmp_path / "out"
    _run(_title("U-Net on AIRS: layer pruning"),
         {"AIRS_TRAIN": str(tmp_path / "train"), "AIRS_VAL": str(tmp_path / "val"), "OUT": str(out),
          "MODEL": "unet:base_width=4,depth=2", "TILE": "64", "SAMPLES": "8", "SCORE_SAMPLES": "4", "THRESHOLD": "0"})
    assert load_model(str(out / "base")).model.depth == 2 and load_model(str(out / "shallow-ft")).model.depth == 1
    assert load_model(str(out / "pruned-ft")).pruned
    summ = json.loads((out / "report" / "summary.json").read_text())
    shallow = json.loads((out / "shallow-ft.json").read_text())
    assert set(summ) == {"baseline", "pca_nci"} and "iou" in shallow
    assert summ["pca_nci"]["macs"] <= shallow["macs"] < summ["baseline"]["macs"]
    # the report's per-layer costs before pruning are the shallow U-Net's, not --model's
    from fastprune.cli.commands.report import unpruned_count
    from fastprune.graph.cost import count

    base, pruned = load_model(str(out / "base")), load_model(str(out / "pruned-ft"))
    example = torch.zeros(1, 3, 64, 64)
    got = unpruned_count(pruned, base, count(base.model, example), example).per_layer
    assert got == count(load_model(str(out / "shallow-ft")).model, example).per_layer
