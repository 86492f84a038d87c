"""`Statistics`: the per-group accumulators one scoring pass leaves, weights-free.

Keyed by the dependency graph's channel groups: one `ChannelMoments` (with covariance) per
group over the feature map its primary consumer sees, one `InfluenceMoments` (and optionally a
`PatchGram`) per consuming convolution, optional Taylor sums. Saved as one safetensors file
whose metadata holds the JSON description (format tag, graph fingerprint, group metadata),
never pickle. Merging is exact (the accumulators' merge rule), so batches, files and processes
combine: `merge`, `all_reduce`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from fastprune._documents import check_tag
from fastprune.graph.graph import DependencyGraph, Member

FORMAT = "fastprune.statistics"
VERSION = 1
_KINDS = ("moments", "influence", "patch_gram", "features")


def _accumulator_class(kind: str):
    if kind in ("moments", "features"):
        from .moments import ChannelMoments
        return ChannelMoments
    from .influence import InfluenceMoments, PatchGram
    return InfluenceMoments if kind == "influence" else PatchGram


def _split_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors go to safetensors, everything else (ints, floats, tuples, strings) to JSON."""
    tensors, other = {}, {}
    for k, v in state.items():
        if isinstance(v, torch.Tensor):
            tensors[k] = v.detach().cpu().contiguous()
        else:
            other[k] = v
    return tensors, other


_MEMBER_FIELDS = ("module", "kind", "dim", "indices", "block", "param", "axis")


def _member(doc: dict[str, Any]) -> Member:
    """A graph `Member` from its saved dict (files before block/param/axis were saved: block 1)."""
    return Member(**{k: doc[k] for k in _MEMBER_FIELDS if k in doc})


@dataclass
class GroupInfo:
    """What planning needs to know about a channel group without the model's weights: the
    graph's own `Member`s (module, kind, dim, indices, block, param, axis)."""
    id: str
    channels: int
    producers: list[Member]
    consumers: list[Member]
    members: list[Member]
    primary: str | None = None        # consumer whose input the moments describe
    prunable: bool = True
    touches_output: bool = False

    def __post_init__(self) -> None:
        for role in ("producers", "consumers", "members"):
            setattr(self, role, [m if isinstance(m, Member) else _member(m) for m in getattr(self, role)])

    def consumer(self, module: str) -> Member:
        """The consumer member of module `module`."""
        for c in self.consumers:
            if c.module == module:
                return c
        raise KeyError(f"fastprune: module {module!r} does not consume channel group {self.id}")

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for role in ("producers", "consumers", "members"):
            out[role] = [asdict(m) for m in out[role]]
        return out


@dataclass
class Statistics:
    """Accumulators per channel group plus the graph fingerprint (see module docstring)."""

    fingerprint: str
    groups: dict[str, GroupInfo]
    moments: dict[str, Any] = field(default_factory=dict)                # gid -> ChannelMoments
    influence: dict[str, dict[str, Any]] = field(default_factory=dict)   # gid -> consumer -> InfluenceMoments
    patch_gram: dict[str, dict[str, Any]] = field(default_factory=dict)  # gid -> consumer -> PatchGram
    features: dict[str, dict[str, Any]] = field(default_factory=dict)    # gid -> linear consumer -> ChannelMoments
    taylor: dict[str, torch.Tensor] = field(default_factory=dict)        # gid -> (C,) float64 sum over images
    taylor_count: dict[str, int] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    # ---- access -----------------------------------------------------------------------
    def group(self, gid: str) -> GroupInfo:
        try:
            return self.groups[str(gid)]
        except KeyError:
            raise KeyError(f"fastprune: no statistics for channel group {gid!r}") from None

    def group_of(self, producer: str) -> str:
        """The id of the group whose producers include module `producer`."""
        for gid, g in self.groups.items():
            if any(p.module == producer for p in g.producers):
                return gid
        raise KeyError(f"fastprune: no channel group is produced by {producer!r}")

    def check_model(self, model: torch.nn.Module, example_inputs: Any) -> None:
        """Raise ValueError if these statistics were not collected on a model with this graph."""
        fp = DependencyGraph(model, example_inputs).fingerprint()
        if fp != self.fingerprint:
            raise ValueError(
                "fastprune: these statistics come from a different model (graph fingerprint "
                f"{self.fingerprint[:12]}..., this model's is {fp[:12]}...)")

    # ---- merging ----------------------------------------------------------------------
    def _check_compatible(self, other: "Statistics") -> None:
        if not isinstance(other, Statistics):
            raise TypeError(f"fastprune: can only merge Statistics, got {type(other).__name__}")
        if other.fingerprint != self.fingerprint:
            raise ValueError("fastprune: cannot merge statistics of different models (graph fingerprints differ)")
        if set(other.moments) != set(self.moments) or \
                {g: set(v) for g, v in other.influence.items()} != {g: set(v) for g, v in self.influence.items()} or \
                {g: set(v) for g, v in other.patch_gram.items()} != {g: set(v) for g, v in self.patch_gram.items()} or \
                {g: set(v) for g, v in other.features.items()} != {g: set(v) for g, v in self.features.items()} or \
                set(other.taylor) != set(self.taylor):
            raise ValueError("fastprune: cannot merge statistics collected with different options")

    def merge(self, other: "Statistics") -> "Statistics":
        """Combine `other` into self exactly (Chan's pairwise rule in the accumulators)."""
        self._check_compatible(other)
        for gid, acc in self.moments.items():
            acc.merge(other.moments[gid])
        for table, other_table in ((self.influence, other.influence), (self.patch_gram, other.patch_gram),
                                   (self.features, other.features)):
            for gid, per in table.items():
                for cname, acc in per.items():
                    acc.merge(other_table[gid][cname])
        for gid in self.taylor:
            self.taylor[gid] = self.taylor[gid] + other.taylor[gid]
            self.taylor_count[gid] += other.taylor_count[gid]
        self.meta["batches"] = int(self.meta.get("batches", 0)) + int(other.meta.get("batches", 0))
        return self

    def copy(self) -> "Statistics":
        return Statistics.from_bytes(self.to_bytes())

    # ---- serialisation ----------------------------------------------------------------
    def _tables(self):
        yield "moments", {gid: {"": acc} for gid, acc in self.moments.items()}
        yield "influence", self.influence
        yield "patch_gram", self.patch_gram
        yield "features", self.features

    def to_bytes(self) -> bytes:
        from safetensors.torch import save
        tensors: dict[str, torch.Tensor] = {}
        states: dict[str, Any] = {}
        for kind, table in self._tables():
            for gid, per in table.items():
                for cname, acc in per.items():
                    t, other = _split_state(acc.state_dict())
                    key = f"{kind}|{gid}|{cname}"
                    states[key] = {"other": other, "tensors": sorted(t)}
                    for k, v in t.items():
                        tensors[f"{key}|{k}"] = v
        for gid, v in self.taylor.items():
            tensors[f"taylor|{gid}"] = v.detach().cpu().to(torch.float64).contiguous()
        doc = {
            "format": FORMAT, "version": VERSION, "fingerprint": self.fingerprint,
            "groups": {g: info.to_dict() for g, info in self.groups.items()},
            "states": states, "taylor_count": self.taylor_count, "meta": self.meta,
        }
        return save(tensors, metadata={"fastprune": json.dumps(doc)})

    @classmethod
    def from_bytes(cls, data: bytes) -> "Statistics":
        from safetensors.torch import load
        try:
            tensors = load(data)
            header_len = int.from_bytes(data[:8], "little")
            header = json.loads(data[8:8 + header_len])
            doc = json.loads(header["__metadata__"]["fastprune"])
        except Exception as exc:  # safetensors raises its own error types
            raise ValueError(f"fastprune: not a statistics file (corrupt or not safetensors: {exc})") from None
        check_tag(doc, FORMAT, VERSION, "statistics file", "statistics")
        try:
            groups = {g: GroupInfo(**info) for g, info in doc["groups"].items()}
            stats = cls(fingerprint=doc["fingerprint"], groups=groups, meta=doc.get("meta", {}),
                        taylor_count={g: int(c) for g, c in doc.get("taylor_count", {}).items()})
            for key, st in doc["states"].items():
                kind, gid, cname = key.split("|", 2)
                if kind not in _KINDS:
                    raise ValueError(f"unknown accumulator kind {kind!r}")
                state = dict(st["other"])
                for k in st["tensors"]:
                    state[k] = tensors[f"{key}|{k}"]
                acc = _accumulator_class(kind).from_state_dict(state)
                if kind == "moments":
                    stats.moments[gid] = acc
                else:
                    getattr(stats, kind).setdefault(gid, {})[cname] = acc
            for gid in stats.taylor_count:
                stats.taylor[gid] = tensors[f"taylor|{gid}"]
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"fastprune: corrupt statistics file ({exc!r})") from None
        return stats

    def save(self, path: str | Path) -> None:
        """Write one safetensors file (tensors) with a JSON description in its metadata."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(self.to_bytes())
        tmp.replace(path)  # atomic: an interrupted save never leaves a half-written file

    @classmethod
    def load(cls, path: str | Path, model: torch.nn.Module | None = None, example_inputs: Any = None) -> "Statistics":
        """Read a file written by `save`; with `model` (and `example_inputs`, or the input
        shape recorded at collection), refuse statistics of a different model."""
        stats = cls.from_bytes(Path(path).read_bytes())
        if model is not None:
            stats.check_model(model, example_inputs if example_inputs is not None else stats.example_inputs(model))
        return stats

    def example_inputs(self, model: torch.nn.Module | None = None) -> torch.Tensor:
        """Zeros shaped like the example input recorded at collection (on the model's device)."""
        spec = self.meta.get("example_input")
        if not spec:
            raise ValueError("fastprune: these statistics record no example input shape; pass example_inputs")
        device = next(model.parameters()).device if model is not None and any(True for _ in model.parameters()) else "cpu"
        return torch.zeros(spec["shape"], dtype=getattr(torch, spec["dtype"]), device=device)

    # ---- distributed ------------------------------------------------------------------
    def all_reduce(self, group: Any = None) -> "Statistics":
        """Under torch.distributed: every rank ends with the exact merge of all ranks'
        statistics (gathered as safetensors bytes and merged in rank order, identical on
        every rank). No-op when torch.distributed is not initialised."""
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()):
            return self
        blob = torch.frombuffer(bytearray(self.to_bytes()), dtype=torch.uint8)
        backend = dist.get_backend(group)
        device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
        size = torch.tensor([blob.numel()], dtype=torch.int64, device=device)
        world = dist.get_world_size(group)
        sizes = [torch.zeros_like(size) for _ in range(world)]
        dist.all_gather(sizes, size, group=group)
        longest = int(max(s.item() for s in sizes))
        padded = torch.zeros(longest, dtype=torch.uint8, device=device)
        padded[: blob.numel()] = blob.to(device)
        bufs = [torch.zeros_like(padded) for _ in range(world)]
        dist.all_gather(bufs, padded, group=group)
        parts = [Statistics.from_bytes(bytes(b[: int(s.item())].cpu().numpy().tobytes())) for b, s in zip(bufs, sizes)]
        merged = parts[0]
        for p in parts[1:]:
            merged.merge(p)
        self.__dict__.update(merged.__dict__)
        return self
