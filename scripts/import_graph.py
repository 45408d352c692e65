"""Folder-to-folder imports of the project, and the layering rule they must keep.

    python scripts/import_graph.py            # the graph: "from -> to  (count)" per pair of rooms
    python scripts/import_graph.py --check    # also list every import that breaks the layering, and every import
                                              # cycle between modules (exit 1 if any)
    python scripts/import_graph.py --edges    # every import with file:line

A "room" is a top-level folder (fraud, components, pipeline, serving, decision, fraudctl, tests, bench, scripts) or a
top-level module (transform_module, trainer_module). Imports inside functions count too: a lazy import is
still a dependency. Third-party imports are ignored.

The layering, bottom to top (README "Layout"); each room may import only rooms below it:
  0 fraud            the domain library (fraud.* and third-party packages only)
  1 components       TFX adapters over fraud.*
  2 transform_module, trainer_module   thin preprocessing_fn / run_fn over fraud.*
  3 pipeline         create_pipeline(), the local runner, the Airflow DAG
  4 serving          the local TF-Serving-compatible server and its clients: fraud.features and fraud.errors only
  4 decision         the real-time decision service, a client of TF Serving: fraud.* only (not serving)
  5 fraudctl         the command line
tests, bench, scripts and setup.py sit above everything.
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
    "serving": 4, "decision": 4,
    "fraudctl": 5,
    "tests": 9, "bench": 9, "scripts": 9, "setup": 9, "docker": 9,
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


def known_modules(root: Path = REPO) -> set[str]:
    return {_module_of(rel) for rel in python_files(root)}


def imports_of(rel: Path, root: Path = REPO, modules: set[str] | None = None,
               same_room: bool = False) -> list[Import]:
    """The project imports of one file (other rooms only, unless `same_room`)."""
    modules = known_modules(root) if modules is None else modules
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
                parts = package.split(".") if package else []
                base = parts[: len(parts) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from fraud import features` imports the module fraud.features; `from fraud.x import y` imports fraud.x
            names = [f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module for a in node.names]
        for name in dict.fromkeys(names):
            top = name.split(".")[0]
            if top in LAYERS and (top != source or same_room):
                out.append(Import(rel, node.lineno, source, name, top))
    return out


def all_imports(root: Path = REPO, same_room: bool = False) -> list[Import]:
    modules = known_modules(root)
    return [imp for rel in python_files(root) for imp in imports_of(rel, root, modules, same_room)]


def cycles(root: Path = REPO) -> list[list[str]]:
    """Groups of project modules that import each other, directly or through others (lazy imports count)."""
    modules = known_modules(root)
    graph: dict[str, set[str]] = {}
    for imp in all_imports(root, same_room=True):
        src = _module_of(imp.path)
        target = imp.module
        while target not in modules and "." in target:
            target = target.rpartition(".")[0]
        if target in modules and target != src and not src.startswith("tests") and not target.startswith(src + "."):
            graph.setdefault(src, set()).add(target)
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


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
    parser.add_argument("--root", type=Path, default=REPO,
                        help="another checkout to look at (e.g. `git worktree add /tmp/old <commit>`)")
    args = parser.parse_args(argv)
    imports = all_imports(args.root)
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
        loops = cycles(args.root)
        print(f"{len(loops)} import cycle(s) between modules" + (":" if loops else ""))
        for group in loops:
            print("  " + " <-> ".join(group))
        return 1 if bad or loops else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
