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

from fastprune._documents import check_seal, check_tag, read_json, seal, weights_digest
from fastprune._files import atomic_write
from fastprune.graph.graph import DependencyGraph, Member

FORMAT = "fastprune.statistics"
VERSION = 1
_KINDS = ("moments", "influence", "patch_gram", "features")
_DTYPES = ("float32", "float64", "float16", "bfloat16")
MAX_EXAMPLE_ELEMENTS = 1 << 26  # an example input is one image: 1 x 4 x 4096 x 4096 at most


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


def _payload(tensors: dict[str, torch.Tensor]) -> list[bytes]:
    """What a statistics file's checksum covers besides its description: every tensor's name,
    dtype, shape and bytes, in name order."""
    out = []
    for k in sorted(tensors):
        t = tensors[k].contiguous()
        out.append(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        out.append(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return out


def _is_index_list(v: Any) -> bool:
    return isinstance(v, list) and all(type(i) is int and i >= 0 for i in v) and len(set(v)) == len(v)


def _check_description(doc: dict[str, Any]) -> None:
    """ValueError unless the description has the types `from_bytes` relies on and an example
    input one image can have (a hand-edited file cannot make loading allocate without bound)."""
    if not isinstance(doc.get("fingerprint"), str) or not isinstance(doc.get("groups"), dict) \
            or not isinstance(doc.get("states"), dict) or not isinstance(doc.get("meta", {}), dict):
        raise ValueError("fingerprint, groups, states or meta of the wrong type")
    for gid, info in doc["groups"].items():
        if not isinstance(info, dict) or type(info.get("channels")) is not int or info["channels"] < 1:
            raise ValueError(f"group {gid!r} has no valid channel count")
        for role in ("producers", "consumers", "members"):
            entries = info.get(role)
            if not isinstance(entries, list) or not all(
                    isinstance(m, dict) and isinstance(m.get("module"), str) and _is_index_list(m.get("indices"))
                    and len(m["indices"]) == info["channels"]
                    and type(m.get("block", 1)) is int and m.get("block", 1) >= 1 for m in entries):
                raise ValueError(f"group {gid!r} has malformed {role}")
    spec = doc.get("meta", {}).get("example_input")
    if spec is not None:
        shape = spec.get("shape") if isinstance(spec, dict) else None
        if not isinstance(shape, list) or not shape or not all(type(d) is int and d >= 1 for d in shape) \
                or spec.get("dtype") not in _DTYPES:
            raise ValueError(f"example input {spec!r} is not a shape of positive ints with a float dtype")
        n = 1
        for d in shape:
            n *= d
        if n > MAX_EXAMPLE_ELEMENTS:
            raise ValueError(f"example input {shape} has {n:,} elements, more than one image "
                             f"({MAX_EXAMPLE_ELEMENTS:,} at most)")


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

    @property
    def complete(self) -> bool:
        """False for a checkpoint of an interrupted `collect` (resume it before planning)."""
        return self.meta.get("complete", True) is not False

    def check_complete(self) -> None:
        if not self.complete:
            raise ValueError(
                f"fastprune: these statistics are an unfinished checkpoint ({self.meta.get('batches', 0)} batches "
                "of an interrupted collection): resume it (`fastprune score ... --resume`) before planning")

    def check_model(self, model: torch.nn.Module, example_inputs: Any, weights: bool = True) -> None:
        """ValueError naming the failed check unless these statistics were collected on a model
        with this graph (fingerprint, and every group's producers and channel indices) and, with
        `weights`, on these weights (digest recorded at collection)."""
        graph = DependencyGraph(model, example_inputs)
        fp = graph.fingerprint()
        if fp != self.fingerprint:
            raise ValueError(
                "fastprune: these statistics come from a different model (graph fingerprint "
                f"{self.fingerprint[:12]}..., this model's is {fp[:12]}...)")
        have = {str(g.id): sorted((str(p.module), [int(i) for i in p.indices]) for p in g.producers)
                for g in graph.groups}
        for gid, info in self.groups.items():
            mine = sorted((p.module, list(p.indices)) for p in info.producers)
            if have.get(gid) != mine:
                raise ValueError(f"fastprune: these statistics describe channel group {gid!r} with producers "
                                 f"and channels the model's graph does not have")
        recorded = self.meta.get("weights_digest")
        if weights and recorded is not None and recorded != weights_digest(model):
            raise ValueError("fastprune: these statistics were collected on other weights of this model "
                             f"(weights digest {str(recorded)[:12]}..., this model's is {weights_digest(model)[:12]}...)")

    def nonfinite(self) -> list[tuple[str, str]]:
        """(group id, consuming layer) of every accumulator whose sums are not finite (finite
        activations too large for them: NaN/Inf input is refused when it arrives). The msd sum is
        not checked: it is NaN where a map has a single pixel (its spatial std is undefined, as
        torch.std's), and an overflow shows in m2 anyway."""
        bad = []
        for kind, table in self._tables():
            for gid, per in table.items():
                for cname, acc in per.items():
                    st = acc.state_dict()
                    keys = ("mean", "m2", "abs_sum") if kind == "moments" else ("moments", "gram")
                    if any(k in st and not bool(torch.isfinite(st[k]).all()) for k in keys):
                        bad.append((gid, cname or self.groups[gid].primary or gid))
        return bad

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
        doc = seal({
            "format": FORMAT, "version": VERSION, "fingerprint": self.fingerprint,
            "groups": {g: info.to_dict() for g, info in self.groups.items()},
            "states": states, "taylor_count": self.taylor_count, "meta": self.meta,
        }, _payload(tensors))
        return save(tensors, metadata={"fastprune": json.dumps(doc, allow_nan=False)})

    @classmethod
    def from_bytes(cls, data: bytes) -> "Statistics":
        from safetensors.torch import load
        try:
            tensors = load(data)
            header_len = int.from_bytes(data[:8], "little")
            header = json.loads(data[8:8 + header_len])
            text = header["__metadata__"]["fastprune"]
        except Exception as exc:  # safetensors raises its own error types
            raise ValueError(f"fastprune: not a statistics file (corrupt or not safetensors: {exc})") from None
        doc = read_json(text, "the statistics file's description")
        check_tag(doc, FORMAT, VERSION, "statistics file", "statistics")
        check_seal(doc, "statistics file", _payload(tensors))
        try:
            _check_description(doc)
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
        except (KeyError, TypeError, AttributeError, ValueError, OverflowError) as exc:
            raise ValueError(f"fastprune: corrupt statistics file ({str(exc)[:200]})") from None
        return stats

    def save(self, path: str | Path) -> None:
        """Write one safetensors file (tensors) with a JSON description in its metadata, atomically
        (an interrupted save never leaves a half-written file)."""
        atomic_write(path, self.to_bytes())

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
