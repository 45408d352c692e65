"""Folder-to-folder imports of the project, and the layering rule they must keep.

    python scripts/import_graph.py            # the graph: "from -> to  (count)" per pair of rooms
    python scripts/import_graph.py --check    # also list every import that breaks the layering (exit 1 if any)
    python scripts/import_graph.py --edges    # every import with file:line

A "room" is a top-level folder (fraud, components, pipeline, serving, fraudctl, tests, bench, scripts) or a
top-level module (transform_module, trainer_module). Imports inside functions count too: a lazy import is
still a dependency. Third-party imports are ignored.

The layering, bottom to top (README "Layout"); each room may import only rooms below it:
  0 fraud            the domain library (fraud.* and third-party packages only)
  1 components       TFX adapters over fraud.*
  2 transform_module, trainer_module   thin preprocessing_fn / run_fn over fraud.*
  3 pipeline         create_pipeline(), the local runner, the Airflow DAG
  4 serving          the local TF-Serving-compatible server and its clients: fraud.features and fraud.errors only
  5 fraudctl         the command line
tests, bench and scripts sit above everything.
"""
from __future__ import annotations

import argparse
import ast
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAYERS = {
    "fraud": 0,
    "components": 1,
    "transform_module": 2, "trainer_module": 2,
    "pipeline": 3,
    "serving": 4,
    "fraudctl": 5,
    "tests": 9, "bench": 9, "scripts": 9,
}
# Rooms that may import only some modules of a lower room (prefix match on the dotted module name).
ONLY = {"serving": ("fraud.features", "fraud.errors", "serving")}
SKIP_DIRS = {".venv", ".git", "runs", "build", "dist", "__pycache__", "airflow_home", ".cache"}


@dataclass(frozen=True)
class Import:
    path: Path  # importing file, relative to the repo
    line: int
    source: str  # the importing room
    module: str  # the imported dotted module
    target: str  # the imported room

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.source} imports {self.module}"


def python_files(root: Path = REPO):
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if not any(part in SKIP_DIRS or part.endswith(".egg-info") for part in rel.parts):
            yield rel


def room_of(rel: Path) -> str:
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _module_of(rel: Path) -> str:
    parts = list(rel.with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(rel: Path, root: Path = REPO) -> list[Import]:
    tree = ast.parse((root / rel).read_text(encoding="utf-8"), filename=str(rel))
    source = room_of(rel)
    package = _module_of(rel) if rel.name == "__init__.py" else _module_of(rel).rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing package
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if package else []
                names = [".".join(base + ([node.module] if node.module else []))]
            else:
                names = [node.module or ""]
            # `from fraud import features` imports fraud.features
            names = [f"{names[0]}.{a.name}" for a in node.names] if names[0] in LAYERS or "." not in names[0] \
                else names
        for name in names:
            top = name.split(".")[0]
            if top in LAYERS and top != source:
                out.append(Import(rel, node.lineno, source, name, top))
            elif top == source and source in ONLY:
                continue
    return out


def all_imports(root: Path = REPO) -> list[Import]:
    return [imp for rel in python_files(root) for imp in imports_of(rel, root)]


def violations(imports: list[Import]) -> list[str]:
    bad = []
    for imp in imports:
        if LAYERS[imp.target] >= LAYERS[imp.source]:
            bad.append(f"{imp}: {imp.source} (layer {LAYERS[imp.source]}) may not import {imp.target} "
                       f"(layer {LAYERS[imp.target]})")
        elif imp.source in ONLY and not any(imp.module == p or imp.module.startswith(p + ".")
                                            for p in ONLY[imp.source]):
            bad.append(f"{imp}: {imp.source} may import only {', '.join(ONLY[imp.source])}")
    return bad


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="list the imports that break the layering")
    parser.add_argument("--edges", action="store_true", help="print every import with file:line")
    args = parser.parse_args(argv)
    imports = all_imports()
    counts = Counter((i.source, i.target) for i in imports)
    order = sorted(LAYERS, key=lambda r: (LAYERS[r], r))
    print("room -> room  (imports)")
    for source in order:
        for target in order:
            if (source, target) in counts:
                arrow = "->" if LAYERS[target] < LAYERS[source] else "=> UPWARD"
                print(f"  {source:<17} {arrow} {target:<17} {counts[source, target]:>4}")
    if args.edges:
        print()
        for imp in imports:
            print(imp)
    if args.check:
        bad = violations(imports)
        print(f"\n{len(bad)} import(s) break the layering" + (":" if bad else ""))
        for line in bad:
            print("  " + line)
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
