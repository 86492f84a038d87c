"""Reads docs/recipes.md the way a user's shell would run it: the ```sh blocks of each `## `
section, in order. A block holds only two kinds of lines (anything else fails, so the page
stays runnable as written):

    NAME=${NAME:-default}      # a variable with its default; the environment may override it
    fastprune COMMAND ARGS...  # a command ($NAME / ${NAME} expanded, backslash continuations)
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "recipes.md"
_ASSIGN = re.compile(r"^([A-Z][A-Z0-9_]*)=\$\{\1:-([^}]*)\}$")
_VAR = re.compile(r"\$(?:\{([A-Z][A-Z0-9_]*)\}|([A-Z][A-Z0-9_]*))")


@dataclass
class Recipe:
    title: str
    defaults: dict[str, str] = field(default_factory=dict)  # in order of appearance
    commands: list[str] = field(default_factory=list)       # unexpanded command lines


def _lines(block: str) -> list[str]:
    out, cur = [], ""
    for raw in block.splitlines():
        line = raw.rstrip()
        if cur:
            line = cur + " " + line.lstrip()
            cur = ""
        if line.endswith("\\"):
            cur = line[:-1].rstrip()
            continue
        text = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if text:
            out.append(text)
    if cur:
        raise ValueError(f"recipes.md: a command ends in a backslash: {cur!r}")
    return out


def parse(text: str | None = None) -> list[Recipe]:
    text = DOC.read_text(encoding="utf-8") if text is None else text
    recipes: list[Recipe] = []
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        title = section.splitlines()[0].strip()
        blocks = re.findall(r"^```sh\n(.*?)^```", section, flags=re.M | re.S)
        if not blocks:
            continue
        r = Recipe(title)
        for block in blocks:
            for line in _lines(block):
                m = _ASSIGN.match(line)
                if m:
                    r.defaults[m.group(1)] = m.group(2)
                elif line.startswith("fastprune "):
                    r.commands.append(line)
                else:
                    raise ValueError(f"recipes.md, {title!r}: not a variable default or a fastprune command: {line!r}")
        recipes.append(r)
    return recipes


def expand(text: str, env: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name not in env:
            raise KeyError(f"recipes.md uses ${name} before giving it a default")
        return env[name]
    return _VAR.sub(sub, text)


def argv(recipe: Recipe, overrides: dict[str, str]) -> list[list[str]]:
    """Each command's argv after `fastprune`, with the variables as the shell would set them."""
    env: dict[str, str] = {}
    for name, default in recipe.defaults.items():
        env[name] = overrides[name] if name in overrides else expand(default, env)
    unknown = set(overrides) - set(env)
    if unknown:
        raise KeyError(f"{recipe.title!r} has no variables {sorted(unknown)}")
    return [shlex.split(expand(c, env))[1:] for c in recipe.commands]
