"""Run the benchmark suite (benchmarks/test_bench_*.py, pytest-benchmark) and print each result
with the machine's limits measured in the same run: sgemm rate (torch.matmul) and memory
bandwidth (large copy). Benchmarks that record `extra_info['flops']` or `extra_info['bytes']`
are shown as a fraction of those limits; within a group, times are also shown relative to the
group's baseline (a benchmark whose name contains 'baseline' or 'torch')."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HELP = "run the kernel and end-to-end benchmarks against this machine's limits"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--path", metavar="DIR", help="benchmarks folder (default: ./benchmarks or the source tree's)")
    p.add_argument("-k", dest="select", metavar="EXPR", help="only benchmarks matching this pytest -k expression")
    p.add_argument("--quick", action="store_true", help="smaller limit measurements")
    p.add_argument("--json", metavar="FILE", help="write limits and results as JSON")


def find_benchmarks(path: str | None) -> Path:
    from ..errors import UsageError

    if path:
        p = Path(path)
        if not p.is_dir():
            raise UsageError(f"benchmarks folder not found: {p}")
        return p
    for p in (Path.cwd() / "benchmarks", Path(__file__).resolve().parents[3] / "benchmarks"):
        if p.is_dir() and any(p.glob("test_bench_*.py")):
            return p
    raise UsageError("no benchmarks folder found (it ships with the source tree): pass --path DIR")


def summarize(doc: dict, lim: dict) -> list[dict]:
    """One row per benchmark: median time, rates and ratios (pure, for testing)."""
    rows = []
    for b in doc.get("benchmarks", []):
        extra = b.get("extra_info") or {}
        med = float(b["stats"]["median"])
        row = {"name": b.get("name") or b.get("fullname"), "group": b.get("group"), "median_s": med}
        if extra.get("flops"):
            row["gflops"] = float(extra["flops"]) / med / 1e9
            row["of_sgemm"] = row["gflops"] / lim["sgemm_gflops"]
        if extra.get("bytes"):
            row["gbps"] = float(extra["bytes"]) / med / 1e9
            row["of_copy"] = row["gbps"] / lim["copy_gbps"]
        rows.append(row)
    by_group: dict = {}
    for r in rows:
        by_group.setdefault(r["group"], []).append(r)
    for grp in by_group.values():
        base = next((r for r in grp if any(w in r["name"].lower() for w in ("baseline", "torch"))), None)
        if base is not None:
            for r in grp:
                r["speedup_vs_" + base["name"]] = base["median_s"] / r["median_s"]
    return rows


def run(args: argparse.Namespace) -> int:
    from ...report.machine import limits
    from ..errors import UsageError

    folder = find_benchmarks(args.path)
    print("measuring this machine's limits ...", flush=True)
    lim = limits(args.quick)
    print(f"sgemm (torch.matmul fp32): {lim['sgemm_gflops']:.1f} GFLOP/s; copy: {lim['copy_gbps']:.1f} GB/s "
          f"(read+write); torch threads: {lim['threads']}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        cmd = [sys.executable, "-m", "pytest", str(folder), "--benchmark-only", f"--benchmark-json={out}",
               "-q", "-p", "no:cacheprovider"]
        if args.select:
            cmd += ["-k", args.select]
        proc = subprocess.run(cmd)
        if not out.is_file():
            raise UsageError(f"the benchmarks did not run (pytest exit code {proc.returncode})")
        doc = json.loads(out.read_text())
    rows = summarize(doc, lim)
    print(f"\n{'benchmark':<58} {'median':>10} {'GFLOP/s':>8} {'of sgemm':>8} {'GB/s':>7} {'of copy':>7}  ratios")
    for r in rows:
        ratios = ", ".join(f"{v:.2f}x {k[11:]}" for k, v in r.items() if k.startswith("speedup_vs_"))
        print(f"{r['name'][:58]:<58} {1e3 * r['median_s']:>8.3f}ms "
              f"{r.get('gflops', float('nan')):>8.1f} {r.get('of_sgemm', float('nan')):>8.2f} "
              f"{r.get('gbps', float('nan')):>7.1f} {r.get('of_copy', float('nan')):>7.2f}  {ratios}")
    if args.json:
        Path(args.json).write_text(json.dumps({"limits": lim, "benchmarks": rows}, indent=1))
    return 0 if proc.returncode == 0 else 1
