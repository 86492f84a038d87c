"""Issue 15: mutations of a statistics file (.fps), a plan and a model folder's JSON give either
the unchanged result or a clear error (exit code 2 / the CLI's UsageError), never an internal
error, a crash or a silently different plan. Each mutation is tried as is (the checksum must
catch it) and re-sealed with a valid checksum (the content checks must then hold on their own:
a clear error, or a result the mutated content legitimately gives)."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("fastprune.models")

from _cli_run import build_run, cli  # noqa: E402
from fastprune._documents import seal  # noqa: E402

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8) | st.sampled_from(["..", "/etc/passwd", "subprocess:getoutput:cmd=id", "unet:depth=40"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=8)
FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return build_run(tmp_path_factory.mktemp("fuzz"))


def _paths(doc, prefix=()):
    """Every (path) to a value inside a JSON document."""
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:6]):
            yield from _paths(v, prefix + (i,))


@st.composite
def mutations(draw, doc):
    """(mutated copy of doc, description): a value replaced, a key deleted or a key added."""
    doc = json.loads(json.dumps(doc))
    paths = [p for p in _paths(doc) if p]
    path = draw(st.sampled_from(paths))
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    how = draw(st.sampled_from(["replace", "delete", "add"]))
    if how == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    elif how == "add" and isinstance(parent, dict):
        parent[draw(st.text(max_size=6))] = draw(JSON_VALUES)
    else:
        parent[path[-1]] = draw(JSON_VALUES)
    return doc, f"{how} {path}"


def _outcome(code, out_file):
    assert code in (0, 2), f"exit code {code}: an internal error"
    return json.loads(out_file.read_text())["keep"] if code == 0 else None


def _strip(doc):
    return {k: v for k, v in doc.items() if k != "checksum"}


@FUZZ
@given(data=st.data())
def test_statistics_description_mutations(run, tmp_path_factory, data):
    from safetensors.torch import load, save

    d = tmp_path_factory.mktemp("s")
    raw = (run / "s.fps").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    doc = json.loads(json.loads(raw[8:8 + n])["__metadata__"]["fastprune"])
    tensors = load(raw)
    want = json.loads((run / "l1.json").read_text())["keep"]
    mutated, what = data.draw(mutations(_strip(doc)))
    for sealed in (False, True):
        body = seal(mutated) if sealed else {**mutated, "checksum": doc["checksum"]}
        (d / "s.fps").write_bytes(save(tensors, metadata={"fastprune": json.dumps(body)}))
        (d / "p.json").unlink(missing_ok=True)
        got = _outcome(cli("plan", d / "s.fps", "--method", "l1", "--ratio", "0.5", "--model", run / "base",
                           "--out", d / "p.json")[0], d / "p.json")
        if not sealed:
            assert got is None or got == want, what  # the checksum lets nothing different through


@FUZZ
@given(data=st.data(), flips=st.lists(st.integers(0, 10**9), min_size=1, max_size=3))
def test_statistics_byte_flips(run, tmp_path_factory, data, flips):
    d = tmp_path_factory.mktemp("b")
    raw = bytearray((run / "s.fps").read_bytes())
    for f in flips:
        raw[f % len(raw)] ^= 1 << (f % 8)
    (d / "s.fps").write_bytes(bytes(raw))
    got = _outcome(cli("plan", d / "s.fps", "--method", "l1", "--ratio", "0.5", "--model", run / "base",
                       "--out", d / "p.json")[0], d / "p.json")
    assert got is None or got == json.loads((run / "l1.json").read_text())["keep"]


@settings(FUZZ, max_examples=12)  # each accepted plan is a whole prune
@given(data=st.data())
def test_plan_mutations(run, tmp_path_factory, data):
    from fastprune.cli.artifacts import load_model

    d = tmp_path_factory.mktemp("p")
    doc = json.loads((run / "l1.json").read_text())
    mutated, what = data.draw(mutations(_strip(doc)))
    ref = load_model(str(run / "pruned")).model.state_dict()
    for sealed in (False, True):
        (d / "l1.json").write_text(json.dumps(seal(mutated) if sealed else {**mutated, "checksum": doc["checksum"]}))
        shutil.rmtree(d / "o", ignore_errors=True)
        code, _ = cli("prune", "--model", run / "base", "--plan", d / "l1.json", "--out", d / "o")
        assert code in (0, 2), f"{what}: exit code {code}"
        if code == 0 and not sealed:
            got = load_model(str(d / "o")).model.state_dict()
            assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref), what


@FUZZ
@given(data=st.data(), which=st.sampled_from(["base", "pruned"]))
def test_model_folder_mutations(run, tmp_path_factory, data, which):
    from fastprune.cli.artifacts import load_model
    from fastprune.cli.errors import UsageError

    d = tmp_path_factory.mktemp("m")
    shutil.copytree(run / which, d / "m")
    marker = d / "m" / "fastprune-model.json"
    doc = json.loads(marker.read_text())
    mutated, what = data.draw(mutations(_strip(doc)))
    ref = load_model(str(run / which)).model.state_dict()
    for sealed in (False, True):
        marker.write_text(json.dumps(seal(mutated) if sealed else {**mutated, "checksum": doc["checksum"]}))
        try:
            got = load_model(str(d / "m")).model.state_dict()
        except UsageError:
            continue
        assert sealed or (got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)), what
