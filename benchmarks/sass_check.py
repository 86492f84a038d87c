"""SASS check of compiled CUDA kernels: 64-bit integer division / remainder helpers (CALLs into a
subroutine built on I2F.U64.RP + MUFU.RCP) and where they sit relative to the loops.

Usage: python benchmarks/sass_check.py KERNELS.sass   (the output of `cuobjdump -sass file.o`)
Prints, per kernel: instruction count, loops (backward branches) holding FFMAs or shared loads,
every call into a 64-bit division helper and whether it lies inside a loop, and how many other
calls there are. Exit status 1 when a div64 call lies inside a loop that also holds FFMA, DADD, LDS or LDG
(an element loop)."""
from __future__ import annotations

import re
import sys


def kernels(text: str):
    for part in re.split(r"\n\s*Function : ", text)[1:]:
        name = part.split("\n", 1)[0].strip()
        ins = [(int(a, 16), t.strip()) for a, t in re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", part)]
        yield name, ins


def main(path: str) -> int:
    bad = 0
    for name, ins in kernels(open(path).read()):
        op = lambda t: re.sub(r"^@!?U?P\w+\s+", "", t).split()[0] if t else ""  # noqa: E731
        loops = []
        for a, t in ins:
            m = re.search(r"\bBRA\b.*?(0x[0-9a-f]+)", t)
            if m and int(m.group(1), 16) < a:
                loops.append((int(m.group(1), 16), a))
        calls = [(a, int(re.search(r"0x[0-9a-f]+", t).group(0), 16)) for a, t in ins if op(t).startswith("CALL")]
        short = re.sub(r"_ZN9fastprune\w*?_GLOBAL__N__\w+?_cu_\w{8}", "", name)[:70]
        print(f"{short}: {len(ins)} instructions, {len(loops)} loops")
        for lo, hi in loops:
            body = [op(t) for a, t in ins if lo <= a <= hi]
            n_ffma, n_lds = sum(o.startswith("FFMA") for o in body), sum(o.startswith("LDS") for o in body)
            if n_ffma or n_lds:
                print(f"   loop {lo:#x}-{hi:#x}: {len(body)} instructions, {n_ffma} FFMA, {n_lds} LDS")
        helpers = 0
        for a, target in calls:
            sub = [op(t) for b, t in ins if target <= b < target + 0x200]
            if not any(o.startswith("I2F.U64") for o in sub):
                helpers += 1  # e.g. sm_80's subroutine for a shuffle in code it cannot prove convergent
                continue
            inside = [(lo, hi) for lo, hi in loops if lo <= a <= hi]
            element = [
                (lo, hi) for lo, hi in inside
                if any(op(t).startswith(("FFMA", "DADD", "LDS", "LDG")) for b, t in ins if lo <= b <= hi)
            ]
            where = "outside loops" if not inside else f"inside loop(s) {[(hex(l), hex(h)) for l, h in inside]}"
            print(f"   div64 call at {a:#x}: {where}")
            if element:
                bad += 1
                print("   ^ 64-bit division inside an element loop")
        if helpers:
            print(f"   {helpers} other call(s) (no 64-bit division)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
