"""The layering of the repository (README "Layout"): each room imports only the rooms below it, and no two
modules import each other. The rule and the import walker live in scripts/import_graph.py, which prints the
folder-to-folder graph for people; this test keeps it true."""
from __future__ import annotations

import importlib.util
import sys
import textwrap

import pytest

from tests.helpers import REPO


@pytest.fixture(scope="module")
def graph():
    spec = importlib.util.spec_from_file_location("import_graph", REPO / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_no_lower_layer_imports_a_higher_one(graph):
    bad = graph.violations(graph.all_imports())
    assert not bad, "upward imports (file:line):\n" + "\n".join(bad)


def test_no_import_cycles_between_modules(graph):
    loops = graph.cycles()
    assert not loops, "modules that import each other: " + "; ".join(" <-> ".join(g) for g in loops)


def test_every_folder_and_top_level_module_has_a_layer(graph):
    rooms = {graph.room_of(rel) for rel in graph.python_files()}
    assert rooms - set(graph.LAYERS) == set(), "give each new folder a layer in scripts/import_graph.py"


def _tree(tmp_path, files: dict[str, str]):
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return tmp_path


def test_the_check_catches_upward_lazy_and_relative_imports_with_their_line(graph, tmp_path):
    root = _tree(tmp_path, {
        "fraud/__init__.py": "",
        "fraud/features.py": "X = 1\n",
        "fraud/report.py": "from fraud import features\n\n\ndef f():\n    from pipeline.eval_config import build\n",
        "fraud/export.py": "import serving.warmup\n",
        "pipeline/__init__.py": "", "pipeline/eval_config.py": "from . import other\n", "pipeline/other.py": "",
        "serving/__init__.py": "", "serving/warmup.py": "from fraud.export import x\nfrom fraud import features\n",
        "components/__init__.py": "", "components/gate.py": "from pipeline.other import y\n",
    })
    bad = graph.violations(graph.all_imports(root))
    assert any(line.startswith("fraud/report.py:5: fraud imports pipeline.eval_config") for line in bad), bad
    assert any(line.startswith("fraud/export.py:1: fraud imports serving.warmup") for line in bad), bad
    assert any(line.startswith("components/gate.py:1: components imports pipeline.other") for line in bad), bad
    # serving may import fraud.features (and fraud.errors) only
    assert any(line.startswith("serving/warmup.py:1: serving imports fraud.export") for line in bad), bad
    assert not any("serving/warmup.py:2" in line for line in bad), bad
    assert len(bad) == 4, bad


def test_the_check_catches_a_cycle_even_through_a_lazy_import(graph, tmp_path):
    root = _tree(tmp_path, {
        "fraud/__init__.py": "",
        "fraud/ingest.py": "def read():\n    from fraud import sql_source\n",
        "fraud/sql_source.py": "from fraud import ingest\n",
        "fraud/features.py": "",
    })
    assert graph.cycles(root) == [["fraud.ingest", "fraud.sql_source"]]
