"""Cost of collect's dependency-graph trace against a forward pass (benchmarks/README.md):
thread CPU time, one thread, best of 3, U-Net base 32 depth 4 on one 512x512 image.
Run: PYTHONPATH=. python benchmarks/trace_cost.py"""
import sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
import torch
torch.set_num_threads(1)
from collect_probe import data, unet
from fastprune.graph import DependencyGraph
model = unet(); x = data(1, 512)[0]
def fwd():
    with torch.no_grad(): model(x)
def best(fn, n=3):
    out = []
    for _ in range(n):
        t0 = time.thread_time(); fn(); out.append(time.thread_time() - t0)
    return min(out)
tf = best(fwd); tt = best(lambda: DependencyGraph(model, x)); tw = best(lambda: DependencyGraph(model, x, trace_size=64))
print(f"thread CPU time, 1 thread: forward 512^2 {tf*1e3:.0f} ms; trace 512^2 {tt*1e3:.0f} ms ({tt/tf:.2f} forward); "
      f"trace on the 64^2 window {tw*1e3:.0f} ms ({tw/tf:.3f} forward, {tw/(6*tf):.3f} of 6 forwards)")
