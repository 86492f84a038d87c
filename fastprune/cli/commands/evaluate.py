"""Metrics of a model on a data set (a segmentation network: pixel accuracy, building IoU,
mIoU; a classifier: top-1 accuracy), its size and MACs, and optionally its CPU latency;
prints a table and writes JSON with --out."""
from __future__ import annotations

import argparse
import json

HELP = "evaluate a model: metrics, params, MACs, optional CPU latency"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..artifacts import add_trust_code

    p.add_argument("--model", required=True, metavar="SPEC", help="model SPEC or model folder")
    p.add_argument("--weights", metavar="CKPT", help="checkpoint")
    p.add_argument("--data", required=True, metavar="SPEC", help="data SPEC")
    p.add_argument("--batch-size", type=int, default=8, help="batch size (default 8)")
    p.add_argument("--latency", action="store_true", help="also time the CPU forward pass")
    p.add_argument("--threads", type=int, default=None, help="torch threads for the latency measurement")
    p.add_argument("--out", metavar="FILE.json", help="write the results as JSON")
    add_trust_code(p)


def run(args: argparse.Namespace) -> int:
    from ..._documents import plain
    from ..._files import atomic_write
    from ..artifacts import load_model
    from ..errors import UsageError
    from ..outputs import METRICS_FORMAT, check_output
    from ..specs import open_data

    if args.batch_size < 1 or args.threads is not None and args.threads < 1:
        raise UsageError("need --batch-size >= 1 and --threads >= 1")
    check_output(args, args.out, "metrics")
    loaded = load_model(args.model, args.weights, trust_code=args.trust_code)
    data = open_data(args.data, args.batch_size)
    if len(data) == 0:
        raise UsageError(f"data SPEC {args.data!r} holds no samples")
    from ...graph.cost import count
    from ...report.latency import measure_latency
    from ...train import evaluate

    res = evaluate(loaded.model, data, batch_size=args.batch_size)
    example = data[0][0][None]
    cost = count(loaded.model, example)
    out = {"format": METRICS_FORMAT, "version": 1, "model": args.model, "data": args.data, "params": int(cost.params), "macs": int(cost.macs),
           "input_shape": list(example.shape)}
    if "accuracy" in res:
        out.update(accuracy=float(res["accuracy"]), class_accuracy=[float(x) for x in res["class_accuracy"]],
                   samples=int(res["samples"]))
    else:
        out.update(pixel_accuracy=float(res["pixel_accuracy"]), iou=float(res["building_iou"]),
                   miou=float(res["miou"]), iou_per_class=[float(x) for x in res["iou"]])
    if args.latency:
        lat = measure_latency(loaded.model, example, threads=args.threads)
        out["latency_ms"] = lat.median_ms
        out["latency"] = lat.to_dict()
    for k in ("params", "macs", "accuracy", "pixel_accuracy", "iou", "miou", "latency_ms"):
        if k in out:
            v = out[k]
            print(f"{k:<15} {v:,}" if isinstance(v, int) else f"{k:<15} {v:.4f}")
    if args.out:
        atomic_write(args.out, json.dumps(plain(out), indent=1))
    return 0
