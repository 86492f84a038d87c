"""Small models and data shared by the collect/plan tests."""
import torch
from torch import nn


def small_cnn(width: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.Conv2d(2 * width, width, 3, padding=1, stride=2), nn.ReLU(),
        nn.Conv2d(width, 4, 1),
    )


def batches(n: int = 6, size: int = 16, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, size, size, generator=g) for _ in range(n)]


class Planted(nn.Module):
    """Input: 8 latent channels + 64 noise channels; layer `mix` makes 64 channels that are
    mixtures of the 8 latents (clustered: channel j mostly follows latent j // 8) plus noise."""

    def __init__(self, seed: int = 0, noise: float = 0.1):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        a = 0.15 * torch.randn(64, 8, generator=g)
        for j in range(64):
            a[j, j // 8] = 0.8 + 0.4 * torch.rand(1, generator=g).item()
        w = torch.cat([a, noise * torch.eye(64)], dim=1)
        self.mix = nn.Conv2d(72, 64, 1, bias=False)
        self.mix.weight.data.copy_(w[:, :, None, None])
        self.head = nn.Conv2d(64, 4, 3, padding=1)

    def forward(self, x):
        return self.head(self.mix(x))


def planted_batches(n: int = 4, size: int = 32, batch: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 72, size, size, generator=g) for _ in range(n)]
