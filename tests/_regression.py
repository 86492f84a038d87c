"""The plans of main at 09949b7 (before the planning redesign), on a seeded U-Net and
statistics of the demo's synthetic data: `tests/data/plans_09949b7.json` holds their kept
channels, and `test_plan_regression.py` checks the new planner reproduces them channel for
channel. `python tests/_regression.py` wrote the file (with the old code's `plan(**rule)`)."""
import json
import sys
from pathlib import Path

import torch

FIXTURE = Path(__file__).parent / "data" / "plans_09949b7.json"

# (method, old plan() keyword rule); the demo's two plans first
CASES = [("pca_nci", {"variance": 0.99}), ("lfa", {"factors": "variance", "variance": 0.99})]
for _m in ("l1", "random", "msd_nci", "nci"):
    CASES += [(_m, {"ratio": 0.5}), (_m, {"target_macs": 0.5}), (_m, {"variance": 0.95})]
CASES += [("msd_nci", {}), ("msd_nci", {"alpha": 0.5}), ("pca_nci", {}), ("pca_nci", {"ratio": 0.3}),
          ("lfa", {"factors": "kaiser"}), ("lfa", {"ratio": 0.5}), ("l1", {"target_params": 0.4})]


def key(method, rule):
    return method + "|" + ",".join(f"{k}={v}" for k, v in sorted(rule.items()))


def model_and_stats():
    """A seeded U-Net (the demo's layout, narrower) and statistics of 4 batches of the demo's data."""
    import fastprune
    from fastprune.data import open_dataset
    from fastprune.models.unet import UNet
    torch.manual_seed(0)
    model = UNet(base_width=8, depth=2, upsample="bilinear").eval()
    data = open_dataset("synthetic:n=16,size=64,seed=0")
    xs = [torch.stack([data[i + j][0] for j in range(4)]) for i in range(0, 16, 4)]
    stats = fastprune.collect(model, xs, progress=False)
    return model, stats


def exclude(model):
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    return convs[-2:-1]  # the demo's classifier_input


if __name__ == "__main__":
    from fastprune.planning import plan
    model, stats = model_and_stats()
    out = {}
    for method, rule in CASES:
        p = plan(model, stats, method=method, exclude=exclude(model), **rule)
        out[key(method, rule)] = p.keep
        print(key(method, rule), sum(len(v) for v in p.keep.values()), file=sys.stderr)
    FIXTURE.write_text(json.dumps(out, indent=0, sort_keys=True))
