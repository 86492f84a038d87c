"""The format tag and version every JSON document fastprune writes carries, checked on load:
a foreign or newer file is refused with the kind of file it should have been."""
from __future__ import annotations

from typing import Any


def check_tag(doc: Any, fmt: str, version: int, noun: str, kind: str) -> None:
    """ValueError unless `doc` is a dict tagged `fmt` at `version` (noun: "plan", "statistics
    file"; kind: the word before "format version")."""
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise ValueError(f"fastprune: not a fastprune {noun} (missing format tag '{fmt}')")
    if doc.get("version") != version:
        raise ValueError(f"fastprune: {kind} format version {doc.get('version')} is not supported (expected {version})")
