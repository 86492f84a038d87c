"""What every document fastprune writes carries and is checked for on load: a format tag and
version, a checksum of its content, and (for what was computed on a model) the digest of the
weights. A foreign, newer, edited or corrupted file is refused saying which check failed."""
from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Iterable, Mapping

import torch

MAX_JSON_BYTES = 64 << 20  # a plan or a statistics description is far smaller
CHECKSUM = "checksum"


def check_tag(doc: Any, fmt: str, version: int, noun: str, kind: str) -> None:
    """ValueError unless `doc` is a dict tagged `fmt` at `version` (noun: "plan", "statistics
    file"; kind: the word before "format version")."""
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise ValueError(f"fastprune: not a fastprune {noun} (missing format tag '{fmt}')")
    got = doc.get("version")
    if type(got) is not int or got != version:
        raise ValueError(f"fastprune: {kind} format version {got!r} is not supported (expected {version})")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def read_json(text: str | bytes, noun: str) -> Any:
    """Parse a JSON document strictly: no NaN/Infinity, bounded size and nesting; a bad one is a
    ValueError naming `noun`."""
    if len(text) > MAX_JSON_BYTES:
        raise ValueError(f"fastprune: {noun} is larger than {MAX_JSON_BYTES >> 20} MiB: not a file fastprune wrote")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError(f"fastprune: {noun} is nested too deeply: not a file fastprune wrote") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"fastprune: {noun} is not valid JSON ({exc})") from None


def plain(x: Any) -> Any:
    """`x` as plain JSON values: tuples as lists, non-finite floats as None, other objects as str."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, (bool, int, str)) or x is None:
        return x
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if hasattr(x, "item") and getattr(x, "ndim", 1) == 0:  # numpy / torch scalars
        return plain(x.item())
    return str(x)


def canonical(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def sha256(*parts: bytes | memoryview) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.hexdigest()


def seal(doc: dict[str, Any], payload: Iterable[bytes | memoryview] = ()) -> dict[str, Any]:
    """`doc` with its checksum: sha256 of the canonical JSON of the rest and of `payload`."""
    body = {k: v for k, v in doc.items() if k != CHECKSUM}
    return {**body, CHECKSUM: sha256(canonical(body), *payload)}


def check_seal(doc: dict[str, Any], noun: str, payload: Iterable[bytes | memoryview] = ()) -> None:
    """ValueError unless `doc` carries the checksum `seal` gives it (same payload)."""
    want = doc.get(CHECKSUM)
    if not isinstance(want, str):
        raise ValueError(f"fastprune: {noun} carries no checksum (not written by this fastprune, or edited)")
    body = {k: v for k, v in doc.items() if k != CHECKSUM}
    try:
        got = sha256(canonical(body), *payload)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"fastprune: {noun} holds values JSON cannot represent ({exc})") from None
    if got != want:
        raise ValueError(f"fastprune: {noun} fails its checksum: changed or corrupted after fastprune wrote it")


def weights_digest(model_or_state: torch.nn.Module | dict[str, torch.Tensor]) -> str:
    """sha256 of a state dict: names, dtypes, shapes and bytes, in name order (32 hex digits)."""
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():  # the tensor's own bytes, not a copy of them
            h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()[:32]


def changed_argument(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first argument (by name) whose recorded value differs between an earlier run and this
    one, as (name, "name=old (now new)"); None when they agree."""
    k = next((k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)), None)
    return None if k is None else (k, f"{k}={old.get(k)!r} (now {new.get(k)!r})")
