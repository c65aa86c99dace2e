"""The package's plan as a test: every import, lazy ones included, points down a floor.

A unit is a top-level module or package of ``miam`` (``miam.training``), or a sub-package of
``miam.data`` (``miam.data.contract``). A unit may import from its own floor's units only
when it is that unit; otherwise only from floors below. A module that belongs to no floor
fails the test, so a new package has to be placed on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

import miam

FLOORS = [
    ["miam.errors"],
    ["miam._validation"],
    ["miam.data.contract"],
    ["miam.data.benchmarks", "miam.data.files", "miam.data.synthetic"],
    ["miam.data", "miam.data.registry"],
    ["miam.masking", "miam.scores", "miam.maps"],
    ["miam.models"],
    ["miam.evaluation"],
    ["miam.balance"],
    ["miam.config", "miam.explain"],
    ["miam.training"],
    ["miam.predict"],
    ["miam.cli"],
]
FLOOR = {unit: i for i, units in enumerate(FLOORS) for unit in units}
ROOT = Path(miam.__file__).parent


def unit_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:3] if parts[:2] == ["miam", "data"] and len(parts) > 2 else parts[:2])


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
    return name.removesuffix(".__init__")


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every ``miam`` import in the file, at any depth (lazy imports too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("miam"):
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("miam")]
    return found


def test_every_import_points_down_a_floor():
    modules = sorted(ROOT.rglob("*.py"))
    assert len(modules) > 80                                  # the walk found the package
    unplaced = sorted({unit_of(module_name(p)) for p in modules} - set(FLOOR) - {"miam"})
    assert not unplaced, f"units on no floor: {unplaced}"
    upward = []
    for path in modules:
        here = unit_of(module_name(path))
        if here == "miam":
            continue
        for line, target in imports_of(path):
            there = unit_of(target)
            if there != here and FLOOR[there] >= FLOOR[here]:
                upward.append(f"{path.relative_to(ROOT)}:{line} ({here}, floor {FLOOR[here]}) imports {target} "
                              f"(floor {FLOOR[there]})")
    assert not upward, "\n".join(upward)


def test_the_data_package_has_the_planned_folders():
    folders = sorted(p.name for p in (ROOT / "data").iterdir() if p.is_dir() and p.name != "__pycache__")
    assert folders == ["benchmarks", "contract", "files", "synthetic"]
    loose = sorted(p.name for p in (ROOT / "data").glob("*.py"))
    assert loose == ["__init__.py", "registry.py"]
