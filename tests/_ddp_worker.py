"""Worker for the two-process gloo DDP test (module-level so that spawn can import it)."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from safetensors.torch import save_file


def run(rank: int, world: int, folder: str) -> None:
    os.environ.setdefault("TQDM_DISABLE", "1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world)
    try:
        from fastprune.data import open_dataset
        from fastprune.models import UNet
        from fastprune.train import evaluate, fit
        torch.manual_seed(0)
        model = UNet(base_width=4, depth=1, batch_norm=False)
        data = open_dataset("synthetic:n=8,size=32,seed=4")
        fit(model, data, epochs=2, lr=5e-2, batch_size=2, optimizer="sgd", shuffle=False, progress=False)
        # each rank evaluates half the scenes; confusion matrices are summed across ranks
        half = torch.utils.data.Subset(data, list(range(rank, len(data), world)))
        metrics = evaluate(model, half, 2)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}
                  | {"confusion": torch.tensor(metrics["confusion"])}, f"{folder}/rank{rank}.safetensors")
    finally:
        dist.destroy_process_group()
