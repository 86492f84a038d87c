"""Running the CLI in-process for the tests of artifacts, outputs and user errors (issue 15)."""
from __future__ import annotations

import json
import re
from pathlib import Path

from fastprune.cli.main import main

SPEC = "unet:base_width=4,depth=1,upsample=bilinear"
DATA = "synthetic:n=4,size=32,seed=3"


def cli(*argv, capsys=None):
    """(exit code, captured output) of `fastprune ARGV`."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr() if capsys is not None else None


def one_line_error(code, out, *words):
    """A user error: exit code 2 and one line on stderr holding every word (after the progress
    lines of any epochs that ran)."""
    assert code == 2, out
    lines = [ln for ln in out.err.strip().splitlines() if not re.match(r"epoch \d+/\d+: loss ", ln)]
    assert len(lines) == 1 and "Traceback" not in out.err and "internal error" not in out.err, out.err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def build_run(d: Path) -> Path:
    """base/ (trained one epoch), s.fps, l1.json, pruned/ under `d`."""
    steps = [
        ("finetune", "--model", SPEC, "--data", "synthetic:n=8,size=32,seed=0", "--epochs", "1", "--batch-size", "4",
         "--out", d / "base"),
        ("score", "--model", d / "base", "--data", DATA, "--batch-size", "2", "--out", d / "s.fps"),
        ("plan", d / "s.fps", "--method", "l1", "--ratio", "0.5", "--out", d / "l1.json"),
        ("prune", "--model", d / "base", "--plan", d / "l1.json", "--out", d / "pruned"),
    ]
    for argv in steps:
        code, _ = cli(*argv)
        assert code == 0, argv
    return d


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes (to prove nothing changed)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def reseal(path: Path, edit) -> None:
    """Apply `edit(doc)` to a JSON artifact and give it a valid checksum again (a forger knows
    the algorithm: these tests prove the content checks, not the checksum, catch it)."""
    from fastprune._documents import seal

    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(seal(doc)))
