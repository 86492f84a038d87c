"""`fastprune plan --method gates` and `fastprune prune` on its plan, end to end on the CLI.

The tolerance loop of the gates method checks the model WITH its trained gates (and masks),
so the oracle for the pruned model is that gated, masked model built here by hand: the
original checkpoint with every BatchNorm output channel scaled by its gate from the plan
(0 where the plan removes the channel). Not the unfolded checkpoint pruned by the plan,
which is a different network (checked too, so the oracle can tell them apart). The model
is a conv-BN-ReLU chain trained here on synthetic scenes, with two dead filters planted
per hidden layer (a ReLU that never fires): those must go.
"""
from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch
from torch import nn

for _mod in ("fastprune.data", "fastprune.train", "fastprune.graph", "fastprune.surgery", "fastprune.stats.collect",
             "fastprune.planning.planner", "fastprune.train.gates"):
    pytest.importorskip(_mod)

from graph_util import one_thread  # noqa: E402

from fastprune._documents import seal  # noqa: E402
from fastprune.cli.artifacts import load_model  # noqa: E402
from fastprune.cli.specs import read_state_dict, save_weights  # noqa: E402
from _cli_run import cli as run_cli, one_line_error

WIDTH = 8
DEAD = [6, 7]  # planted dead filters in each hidden layer
CHAIN = "test_cli_gates:chain"
TRAIN = "synthetic:n=32,size=48,seed=0,density=3"
VAL = "synthetic:n=16,size=48,seed=1,density=3"
EPS = 0.004  # on pixel accuracy: binds on this task (the loop stops before the last step)
BN_OF = {"0": "1", "3": "4"}  # producer -> the BatchNorm whose output its gate scales

_threads = pytest.fixture(autouse=True, scope="module")(one_thread)


def chain(width: int = WIDTH) -> nn.Module:
    """A factory for `test_cli_gates:chain` specs."""
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.Conv2d(width, 2, 1))


def cli(argv, capsys=None):
    return run_cli(*argv, capsys=capsys)


def pixel_accuracy(model: nn.Module, spec: str) -> float:
    """Independent of fastprune.train.evaluate: argmax against the mask, over every pixel."""
    from fastprune.data import open_dataset

    data = open_dataset(spec)
    correct = total = 0
    model.eval()
    with torch.no_grad():
        for i in range(len(data)):
            x, y = data[i]
            correct += int((model(x[None]).argmax(1)[0] == y).sum())
            total += y.numel()
    return correct / total


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A trained chain with planted dead filters, saved as a checkpoint."""
    from fastprune.data import open_dataset
    from fastprune.train import fit

    d = tmp_path_factory.mktemp("gates_cli")
    torch.manual_seed(0)
    model = chain()
    fit(model, open_dataset(TRAIN), epochs=8, lr=1e-2, batch_size=8, progress=False)
    with torch.no_grad():
        for bn in (model[1], model[4]):
            bn.weight[DEAD], bn.bias[DEAD] = 0.1, -20.0  # ReLU(0.1 x̂ - 20) = 0 on any sane input
    ckpt = save_weights(model, d / "base.safetensors")
    return d, ckpt


@pytest.fixture(scope="module")
def gates_run(base):
    d, ckpt = base
    code, _ = cli(["plan", "--method", "gates", "--model", CHAIN, "--weights", ckpt, "--train-data", TRAIN,
                   "--data", VAL, "--metric", "pixel_accuracy", "--tolerance", EPS, "--gate-epochs", 10,
                   "--out", d / "plans" / "gates.json"])
    assert code == 0
    code, _ = cli(["prune", "--model", CHAIN, "--weights", ckpt, "--plan", d / "plans" / "gates.json",
                   "--input-size", 48, "--out", d / "pruned"])
    assert code == 0
    return d, ckpt


def _plan(path):
    from fastprune.planning.plan import Plan

    return Plan.load(path)


def _original(ckpt) -> nn.Module:
    m = chain()
    m.load_state_dict(read_state_dict(ckpt))
    return m.eval()


def gated_masked(ckpt, plan) -> nn.Module:
    """The model the tolerance loop measured: checkpoint, BN outputs times gate, removed channels 0."""
    m = _original(ckpt)
    mods = dict(m.named_modules())
    for prod, bn in BN_OF.items():
        scale = torch.tensor(plan.layers[prod]["gate"], dtype=torch.float32)
        scale[plan.layers[prod]["removed"]] = 0.0
        mods[bn].register_forward_hook(lambda mod, inp, out, s=scale: out * s[None, :, None, None])
    return m


def test_gates_plan_writes_folded_weights_beside_it(gates_run):
    d, ckpt = gates_run
    plan = _plan(d / "plans" / "gates.json")
    wfile = d / "plans" / "gates.weights.safetensors"
    assert plan.meta["method"] == "gates" and plan.meta["folded"] is True
    assert plan.meta["weights"] == {"file": wfile.name, "sha256": hashlib.sha256(wfile.read_bytes()).hexdigest()}
    assert plan.meta["data"] == {"train": TRAIN, "val": VAL, "metric": "pixel_accuracy"}
    folded, orig = read_state_dict(wfile), read_state_dict(ckpt)
    assert set(folded) == set(orig)
    for prod, bn in BN_OF.items():  # gate g folded into the BN: weight * g, bias * g (removed: g = 0)
        g = torch.tensor(plan.layers[prod]["gate"])
        g[plan.layers[prod]["removed"]] = 0.0
        torch.testing.assert_close(folded[f"{bn}.weight"], orig[f"{bn}.weight"] * g)
        torch.testing.assert_close(folded[f"{bn}.bias"], orig[f"{bn}.bias"] * g)
        assert not torch.allclose(g, torch.ones_like(g))  # the gates moved: folding changes the network
    for name in ("0.weight", "3.weight", "6.weight", "6.bias"):  # base weights were frozen
        torch.testing.assert_close(folded[name], orig[name])


def test_pruned_model_is_the_gated_masked_model(gates_run):
    from fastprune.surgery import prune

    d, ckpt = gates_run
    plan = _plan(d / "plans" / "gates.json")
    loaded = load_model(str(d / "pruned"), trust_code=True)
    assert loaded.pruned and loaded.plan.keep == plan.keep
    pruned = loaded.model.eval()
    assert pruned[0].out_channels == len(plan.keep["0"]) < WIDTH
    x = torch.randn(4, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = pruned(x)
        want = gated_masked(ckpt, plan)(x)
        unfolded = prune(_original(ckpt), plan, x[:1]).eval()(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
    assert not torch.allclose(got, unfolded, rtol=1e-3, atol=1e-3)  # the checkpoint alone is another network


def test_pruned_model_within_tolerance_and_planted_filters_gone(gates_run):
    d, ckpt = gates_run
    plan = _plan(d / "plans" / "gates.json")
    for prod in BN_OF:
        assert set(DEAD) <= set(plan.layers[prod]["removed"])
    base_acc = pixel_accuracy(_original(ckpt), VAL)
    pruned_acc = pixel_accuracy(load_model(str(d / "pruned"), trust_code=True).model, VAL)
    assert plan.meta["baseline"] == pytest.approx(base_acc, abs=1e-9)
    assert base_acc - pruned_acc <= EPS
    # what the loop measured on the gated, masked model is what the pruned model scores (a pixel or two
    # may flip on float rounding of near-ties)
    assert pruned_acc == pytest.approx(plan.meta["selected_value"], abs=3 / (16 * 48 * 48))


def validation_loss(model: nn.Module, spec: str) -> float:
    """Independent of fastprune: the mean over images of each image's pixel-mean cross-entropy."""
    from fastprune.data import open_dataset

    data = open_dataset(spec)
    model.eval()
    with torch.no_grad():
        return sum(float(nn.functional.cross_entropy(model(x[None]), y[None])) for x, y in
                   (data[i] for i in range(len(data)))) / len(data)


def test_gates_tolerance_on_the_validation_loss(base, tmp_path):
    d, ckpt = base
    eps = 0.02
    code, _ = cli(["plan", "--method", "gates", "--model", CHAIN, "--weights", ckpt, "--train-data", TRAIN,
                   "--data", VAL, "--metric", "loss", "--tolerance", eps, "--gate-epochs", 10,
                   "--out", tmp_path / "g.json"])
    assert code == 0
    code, _ = cli(["prune", "--model", CHAIN, "--weights", ckpt, "--plan", tmp_path / "g.json",
                   "--input-size", 48, "--out", tmp_path / "pruned"])
    assert code == 0
    plan = _plan(tmp_path / "g.json")
    assert plan.meta["data"]["metric"] == "loss"
    base_loss = validation_loss(_original(ckpt), VAL)
    pruned_loss = validation_loss(load_model(str(tmp_path / "pruned"), trust_code=True).model, VAL)
    assert plan.meta["baseline"] == pytest.approx(base_loss, rel=1e-5)
    assert pruned_loss - base_loss <= eps + 1e-6  # the loss may rise by at most eps
    assert pruned_loss == pytest.approx(plan.meta["selected_value"], rel=1e-4)
    for prod in BN_OF:  # dead filters cost nothing: they go first
        assert set(DEAD) <= set(plan.layers[prod]["removed"])


def test_a_plan_without_weights_replacing_a_gates_plan_removes_its_weights(gates_run, tmp_path):
    from fastprune.cli.plans import save_plan

    d, _ = gates_run
    plan_path, weights = _copy_plan(d, tmp_path / "p")
    other = tmp_path / "other.weights.safetensors"
    shutil.copy(weights, other)  # the weights of another plan stay
    save_plan(_plan(plan_path), plan_path)  # replaced by a plan that needs no weights
    assert plan_path.is_file() and not weights.exists() and other.is_file()
    assert "weights" not in json.loads(plan_path.read_text())["meta"]


def _copy_plan(d, to):
    to.mkdir()
    for name in ("gates.json", "gates.weights.safetensors"):
        shutil.copy(d / "plans" / name, to / name)
    return to / "gates.json", to / "gates.weights.safetensors"


@pytest.mark.parametrize("damage", ["missing", "tampered", "replaced"])
def test_prune_refuses_missing_or_changed_weights(gates_run, tmp_path, capsys, damage):
    d, ckpt = gates_run
    plan, weights = _copy_plan(d, tmp_path / "p")
    if damage == "missing":
        weights.unlink()
    elif damage == "tampered":
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0x01  # one bit of one tensor
        weights.write_bytes(bytes(data))
    else:  # a valid safetensors file of the right model, but not the one the plan was checked on
        shutil.copy(ckpt, weights)
    code, out = cli(["prune", "--model", CHAIN, "--weights", ckpt, "--plan", plan, "--input-size", 48,
                     "--out", tmp_path / "out"], capsys)
    one_line_error(code, out, str(weights), "not found" if damage == "missing" else "sha256")
    assert not (tmp_path / "out").exists()


def test_prune_refuses_weights_of_another_model(gates_run, tmp_path, capsys):
    d, ckpt = gates_run
    plan_path, weights = _copy_plan(d, tmp_path / "p")
    save_weights(chain(4), weights)
    plan = json.loads(plan_path.read_text())
    plan["meta"]["weights"]["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    plan_path.write_text(json.dumps(seal(plan)))  # a consistent plan: only its weights do not fit
    code, out = cli(["prune", "--model", CHAIN, "--plan", plan_path, "--input-size", 48, "--out", tmp_path / "out"],
                    capsys)
    one_line_error(code, out, str(weights), "do not fit")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("drop, extra, words", [
    ("--train-data", [], ["--train-data"]),
    ("--tolerance", [], ["--tolerance"]),
    ("--data", [], ["--data"]),
    (None, ["--ratio", "0.5"], ["argument --ratio"]),  # argparse: one rule only
    (None, ["--exclude", "0"], ["--exclude"]),
    (None, ["--gate-epochs", "-1"], ["--gate-epochs"]),
    (None, ["--gate-step", "1.5"], ["--gate-step"]),
    (None, ["--gate-init", "zeros"], ["--gate-init"]),
])
def test_gates_argument_errors(tmp_path, capsys, drop, extra, words):
    args = {"--method": "gates", "--model": CHAIN, "--train-data": TRAIN, "--data": VAL, "--tolerance": "0.01",
            "--out": str(tmp_path / "p.json")}
    args.pop(drop, None)
    argv = ["plan", *[x for kv in args.items() for x in kv], *extra]
    code, out = cli(argv, capsys)
    one_line_error(code, out, *words)
    assert not list(tmp_path.iterdir())


def test_statistics_are_needed_by_other_methods(tmp_path, capsys):
    code, out = cli(["plan", "--method", "l1", "--ratio", "0.5", "--model", CHAIN, "--out", tmp_path / "p.json"],
                    capsys)
    one_line_error(code, out, "STATS.fps")
    code, out = cli(["plan", "--method", "l1", "--ratio", "0.5", "--train-data", TRAIN, "--model", CHAIN,
                     "--out", tmp_path / "p.json"], capsys)
    one_line_error(code, out, "--train-data")
    assert not list(tmp_path.iterdir())


def test_ordinary_plan_prunes_the_checkpoint_as_before(base, tmp_path):
    """l1 --ratio: no weights beside the plan; prune applies it to --weights as it always did."""
    from fastprune.surgery import prune

    _, ckpt = base
    steps = [
        ["score", "--model", CHAIN, "--weights", ckpt, "--data", VAL, "--out", tmp_path / "s.fps"],
        ["plan", tmp_path / "s.fps", "--method", "l1", "--ratio", "0.5", "--out", tmp_path / "l1.json",
         "--trust-code"],  # the statistics name the test's own factory: the user confirms it
        ["prune", "--model", CHAIN, "--weights", ckpt, "--plan", tmp_path / "l1.json", "--input-size", 48,
         "--out", tmp_path / "pruned"],
    ]
    for argv in steps:
        assert cli(argv)[0] == 0, argv
    plan = _plan(tmp_path / "l1.json")
    assert "weights" not in plan.meta and not (tmp_path / "l1.weights.safetensors").exists()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(load_model(str(tmp_path / "pruned"), trust_code=True).model.eval()(x),
                                   prune(_original(ckpt), plan, x[:1]).eval()(x))


def test_gates_with_statistics_on_a_unet(tmp_path):
    """A built-in U-Net (skip concatenations couple producers), the model named by STATS.fps, a
    relative ε: the pruned model equals surgery's masking of the folded weights the plan records
    (not the trained checkpoint pruned by the plan), and its metric is within ε."""
    from fastprune.surgery import masked, prune

    spec = "unet:base_width=4,depth=2,upsample=bilinear"
    steps = [
        ["finetune", "--model", spec, "--data", TRAIN, "--epochs", 20, "--lr", 1e-2, "--batch-size", 8,
         "--out", tmp_path / "base"],
        ["score", "--model", tmp_path / "base", "--data", VAL, "--out", tmp_path / "s.fps"],
        ["plan", tmp_path / "s.fps", "--method", "gates", "--train-data", TRAIN, "--data", VAL,
         "--metric", "pixel_accuracy", "--tolerance", 0.01, "--relative", "--gate-epochs", 10,
         "--out", tmp_path / "g.json"],
        ["prune", "--model", tmp_path / "base", "--plan", tmp_path / "g.json", "--input-size", 48,
         "--out", tmp_path / "pruned"],
    ]
    for argv in steps:
        assert cli(argv)[0] == 0, argv
    plan = _plan(tmp_path / "g.json")
    assert plan.meta["tolerance"] == {"epsilon": 0.01, "relative": True, "higher_is_better": True}
    assert plan.removal() and plan.meta["weights"]["file"] == "g.weights.safetensors"
    folded = load_model(spec, str(tmp_path / "g.weights.safetensors")).model.eval()
    base = load_model(str(tmp_path / "base")).model.eval()
    pruned = load_model(str(tmp_path / "pruned"), trust_code=True).model.eval()
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), masked(folded, plan.removal(), x[:1]):
        want = folded(x)
    with torch.no_grad():
        got = pruned(x)
        unfolded = prune(base, plan, x[:1]).eval()(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
    assert not torch.allclose(got, unfolded, rtol=1e-2, atol=1e-2)
    base_acc = pixel_accuracy(base, VAL)
    assert base_acc - pixel_accuracy(pruned, VAL) <= 0.01 * base_acc


def test_gate_init_choices_are_the_method_s():
    """The CLI lists them without importing torch at parse time; they must stay the library's."""
    from fastprune.cli.commands.plan import GATE_INITS
    from fastprune.train.gates import INITS

    assert GATE_INITS == INITS
