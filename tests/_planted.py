"""A small segmentation-like task with planted redundancy, for the gates tests.

A narrow random "teacher" CNN (conv-BN-ReLU x2, 1x1 head) labels random images per pixel
(soft labels: its class probabilities, so cross-entropy is smallest at the teacher itself).
The model under test is the teacher widened without changing its function: each hidden
layer gets two duplicated filters (consumer weights split 0.7 / 0.3 between the original
and the copy) and two dead filters (a ReLU that never fires). Those 8 channels are the
redundancy the method must find; the 8 original channels are all needed.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn
from torch.nn import functional as F

IN, REAL, CLASSES, HW = 3, 4, 3, 8
DUP_OF = (0, 1)  # layer-1 duplicates copy teacher channels 0 and 1 ...
DUP2_OF = (2, 3)  # ... layer-2 duplicates copy channels 2 and 3
SPLIT = 0.7
WIDE = REAL + 4
REDUNDANT = [4, 5, 6, 7]  # per hidden layer, in the widened model


def chain(c1: int, c2: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(IN, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1, bias=False), nn.BatchNorm2d(c2), nn.ReLU(),
        nn.Conv2d(c2, CLASSES, 1),
    )


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, d: int, s: int) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).data[d] = getattr(src, name).data[s]


def _kill_bn(bn: nn.BatchNorm2d, c: int) -> None:
    bn.weight.data[c], bn.bias.data[c] = 0.1, -20.0  # ReLU(0.1 x̂ - 20) = 0 for any sane x̂
    bn.running_mean.data[c], bn.running_var.data[c] = 0.0, 1.0


@torch.no_grad()
def make_task(seed: int = 0, n_train: int = 128, n_val: int = 64, batch: int = 32):
    """(widened model, teacher, train batches, val batches); widened(x) == teacher(x)."""
    g = torch.Generator().manual_seed(seed)
    teacher = chain(REAL, REAL)
    for m in teacher.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.data = torch.randn(m.weight.shape, generator=g) * (2.0 / m.weight[0].numel()) ** 0.5
    teacher[6].weight.data *= 4.0  # confident labels
    teacher[6].bias.data.zero_()
    x_all = torch.randn(n_train + n_val, IN, HW, HW, generator=g)
    for bn in (teacher[1], teacher[4]):
        bn.momentum = None  # cumulative average: running stats = data stats
        bn.weight.data = 0.5 + torch.rand(REAL, generator=g)
        bn.bias.data = 0.2 * torch.randn(REAL, generator=g)
    teacher.train()
    teacher(x_all)
    teacher.eval()
    y_all = teacher(x_all).softmax(1)  # soft per-pixel labels: the teacher is the loss minimiser

    wide = chain(WIDE, WIDE).eval()
    t1, t4, t6 = teacher[0].weight, teacher[3].weight, teacher[6].weight
    src1 = list(range(REAL)) + list(DUP_OF)  # teacher channel behind each live wide channel
    src2 = list(range(REAL)) + list(DUP2_OF)
    # layer 1 rows
    w0 = torch.randn(WIDE, IN, 3, 3, generator=g) * 0.3
    w0[:6] = t1[src1]
    wide[0].weight.data = w0
    for d, s in enumerate(src1):
        _copy_bn(wide[1], teacher[1], d, s)
    for c in (6, 7):
        _kill_bn(wide[1], c)

    # a consumer's input columns: original column scaled by SPLIT, duplicate by 1 - SPLIT, dead random
    def widen_in(w_t: torch.Tensor, out_rows: int, dup_of: tuple[int, int]) -> torch.Tensor:
        w = torch.randn(out_rows, WIDE, *w_t.shape[2:], generator=g) * 0.3
        w[:, :REAL] = w_t
        for k, s in enumerate(dup_of):
            w[:, s] = SPLIT * w_t[:, s]
            w[:, REAL + k] = (1 - SPLIT) * w_t[:, s]
        return w

    w3 = torch.randn(WIDE, WIDE, 3, 3, generator=g) * 0.3
    w3[:REAL] = widen_in(t4, REAL, DUP_OF)
    w3[REAL:6] = w3[list(DUP2_OF)]
    wide[3].weight.data = w3
    for d, s in enumerate(src2):
        _copy_bn(wide[4], teacher[4], d, s)
    for c in (6, 7):
        _kill_bn(wide[4], c)
    wide[6].weight.data = widen_in(t6, CLASSES, DUP2_OF)
    wide[6].bias.data = teacher[6].bias.data.clone()

    xs, ys = x_all[:n_train], y_all[:n_train]
    xv, yv = x_all[n_train:], y_all[n_train:]
    train = [(xs[i:i + batch], ys[i:i + batch]) for i in range(0, n_train, batch)]
    val = [(xv[i:i + batch], yv[i:i + batch]) for i in range(0, n_val, batch)]
    return wide, teacher, train, val


def member(module: str, kind: str, dim: str, indices) -> SimpleNamespace:
    return SimpleNamespace(module=module, kind=kind, dim=dim, indices=list(indices))


def chain_groups(model: nn.Sequential) -> list[SimpleNamespace]:
    """Channel groups of a conv-BN-ReLU chain, written by hand (the graph layer's contract)."""
    mods = list(model.named_children())
    convs = [i for i, (_, m) in enumerate(mods) if isinstance(m, nn.Conv2d)]
    groups = []
    for gid, (a, b) in enumerate(zip(convs, convs[1:])):
        name, conv = mods[a]
        ch = list(range(conv.out_channels))
        prod = member(name, "conv", "out", ch)
        members = [prod]
        for _, m in mods[a + 1:b]:
            if isinstance(m, nn.BatchNorm2d):
                members.append(member(_, "batchnorm", "out", ch))
        cons = member(mods[b][0], "conv", "in", ch)
        members.append(cons)
        groups.append(SimpleNamespace(id=gid, channels=ch, producers=[prod], consumers=[cons], members=members,
                                      touches_output=False, prunable=True, blocked_by=None))
    return groups


@torch.no_grad()
def remove_from_chain(model: nn.Sequential, removal: dict[str, list[int]]) -> nn.Sequential:
    """Physically remove producer output channels of a chain by slicing (an oracle independent of surgery)."""
    import copy

    out = copy.deepcopy(model)
    names = [n for n, _ in out.named_children()]
    for name, gone in removal.items():
        i = names.index(name)
        conv = out[i]
        keep = [c for c in range(conv.out_channels) if c not in set(gone)]
        new = nn.Conv2d(conv.in_channels, len(keep), conv.kernel_size, padding=conv.padding, bias=conv.bias is not None)
        new.weight.data = conv.weight.data[keep].clone()
        if conv.bias is not None:
            new.bias.data = conv.bias.data[keep].clone()
        out[i] = new
        j = i + 1
        while not isinstance(out[j], nn.Conv2d):
            if isinstance(out[j], nn.BatchNorm2d):
                bn, nb = out[j], nn.BatchNorm2d(len(keep))
                for a in ("weight", "bias", "running_mean", "running_var"):
                    getattr(nb, a).data = getattr(bn, a).data[keep].clone()
                nb.eps = bn.eps
                out[j] = nb
            j += 1
        nxt = out[j]
        nc = nn.Conv2d(len(keep), nxt.out_channels, nxt.kernel_size, padding=nxt.padding, bias=nxt.bias is not None)
        nc.weight.data = nxt.weight.data[:, keep].clone()
        if nxt.bias is not None:
            nc.bias.data = nxt.bias.data.clone()
        out[j] = nc
    return out.eval()


def val_loss(model: nn.Module, data) -> float:
    with torch.no_grad():
        model.eval()
        return sum(float(F.cross_entropy(model(x), y)) * len(x) for x, y in data) / sum(len(x) for x, _ in data)
