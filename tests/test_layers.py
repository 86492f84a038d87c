"""design.md's layer order holds as imports: every `import` in fastprune/ (at module level or
inside a function) names the same or a lower layer; models and data import no engine code."""
import ast
from pathlib import Path

import fastprune

ROOT = Path(fastprune.__file__).parent
# lowest first; a module may import its own layer and the ones before it
LAYERS = [("_ext", "_views", "_documents"), ("graph",), ("stats",), ("criteria",), ("planning",), ("surgery",),
          ("train",), ("workflows",), ("report",), ("cli",)]
STANDALONE = ("models", "data")  # leaves: import only themselves and the base modules
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _part(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "fastprune" or len(parts) < 2:
        return None
    return parts[1] if (ROOT / parts[1]).is_dir() or parts[1] in RANK else "_ext"  # root names: base


def _imports(path: Path):
    rel = path.relative_to(ROOT.parent).with_suffix("")
    pkg = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    if rel.name == "__init__":
        pkg = list(rel.parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod == "fastprune" or (node.level and not node.module and len(base) == 1):
                for a in node.names:
                    yield node.lineno, f"fastprune.{a.name}"
            else:
                yield node.lineno, mod


def violations():
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        if len(rel.parts) < 3 and rel.name == "__init__":
            continue  # the package root's lazy table names every layer
        me = rel.parts[1] if len(rel.parts) > 2 else rel.parts[1]
        for line, mod in _imports(path):
            other = _part(mod)
            if other is None or other == me:
                continue
            if me in STANDALONE:
                ok = other in LAYERS[0]
            elif other in STANDALONE:
                ok = True
            else:
                ok = other in RANK and RANK[other] <= RANK.get(me, len(LAYERS))
            if not ok:
                out.append(f"{rel}:{line} imports {mod}")
    return out


def test_no_import_goes_up_a_layer():
    assert violations() == []


def test_the_walk_sees_function_local_imports(tmp_path, monkeypatch):
    # the oracle can fail: an upward import inside a function is found
    bad = ROOT / "graph" / "_layer_probe.py"
    bad.write_text("def f():\n    from fastprune.planning import plan\n    return plan\n")
    try:
        assert any("_layer_probe" in v and "fastprune.planning" in v for v in violations())
    finally:
        bad.unlink()
