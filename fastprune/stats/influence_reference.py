"""Float64 pure-PyTorch oracles for the influence kernels: explicit convolutions and unfold.

Slow and memory-hungry on purpose (they materialise what the kernels avoid); tests only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .influence_geometry import ConvGeometry


def _padded(x: torch.Tensor, g: ConvGeometry) -> torch.Tensor:
    return F.pad(x.to(torch.float64), (g.pl, g.pr, g.pt, g.pb))


def unfold_reference(x: torch.Tensor, g: ConvGeometry) -> torch.Tensor:
    """(N, C*kh*kw, L) float64 patches in torch unfold's row order."""
    return F.unfold(_padded(x, g), (g.kh, g.kw), dilation=(g.dh, g.dw), stride=(g.sh, g.sw))


def conv_influence_reference(x: torch.Tensor, weight: torch.Tensor, stride=1, padding=0,
                             dilation=1, groups: int = 1) -> torch.Tensor:
    """I_c = sum_n sum_o ||conv(A_c, W[o, c])||^2 by one depthwise float64 convolution per channel."""
    g = ConvGeometry.parse(tuple(weight.shape[2:]), stride, padding, dilation)
    n, c = x.shape[:2]
    cout, cg = weight.shape[:2]
    og = cout // groups
    w64 = weight.to(torch.float64)
    # channel ch = grp*cg + l reads weights W[grp*og:(grp+1)*og, l]
    rows = []
    for ch in range(c):
        grp, loc = divmod(ch, cg)
        rows.append(w64[grp * og:(grp + 1) * og, loc])
    wc = torch.stack(rows).reshape(c * og, 1, g.kh, g.kw)
    y = F.conv2d(_padded(x, g), wc, stride=(g.sh, g.sw), dilation=(g.dh, g.dw), groups=c)
    return y.square().sum(dim=(0, 2, 3)).reshape(c, og).sum(dim=1)


def auto_moments_reference(x: torch.Tensor, g: ConvGeometry) -> torch.Tensor:
    """R (C, k, k) float64: R[c, t, t'] = sum over images and output positions of A_c(t) A_c(t')."""
    u = unfold_reference(x, g)
    n, _, L = u.shape
    u = u.reshape(n, x.shape[1], g.taps, L)
    return torch.einsum("nctl,ncsl->cts", u, u)


def patch_gram_reference(x: torch.Tensor, g: ConvGeometry, positions: torch.Tensor | None = None) -> torch.Tensor:
    """sum of U U^T over images and output positions (or the (image, position) rows given)."""
    u = unfold_reference(x, g)
    if positions is None:
        return torch.einsum("ndl,nel->de", u, u)
    cols = u[positions[:, 0], :, positions[:, 1]]  # (M, D)
    return cols.T @ cols


def nci_w_reference(weight: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """sum_{o, t} |W[o, c, t]| per input channel, output channels of c's group only."""
    cout, cg = weight.shape[:2]
    og = cout // groups
    a = weight.to(torch.float64).abs().reshape(groups, og, cg, -1)
    return a.sum(dim=(1, 3)).reshape(groups * cg)
