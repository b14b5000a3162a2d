"""The package's architecture as a contract: layers that import only downwards, and no import cycle.

Every ``import`` and ``from ... import`` of the package's own modules counts, the ones inside functions included
(an import inside a function hides a cycle from Python, not from a reader). A module's layer is its folder (or, for
a top-level module, its name); :data:`LAYERS` lists them bottom first and a module may import its own layer or any
layer below it. The checker is itself tested on a synthetic tree, so the contract is known to fail when it should.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "selfens_pl"

#: Bottom first. A module may import modules of its own layer and of the layers below.
LAYERS: list[set[str]] = [
    {"errors", "jsonl", "figures", "progress", "distributed", "resources", "verbs",  # base: no package imports
     "stopping"},
    {"data"},  # records, sources, prompts, demonstration blocks, content-free prompts, the DataModule
    {"engine"},  # model loading, sharding, attention, KV cache, batches, decoding, sampling, fusion rules
    {"scoring"},  # lemma metric, agreement, rescoring rules, summaries, bootstrap statistics, paraphrase checks
    {"heads"},  # the head contract and one module per head
    {"sweep"},  # the grid, the engine pass, derivation through the heads, the report
    {"lit"},  # LightningModule, training losses, writer callback, pre-flight checks, LightningCLI
    {"api"},  # the Python face: SelfEnsemble, Group, Answer
    {"integrations"},  # other tools' evaluation loops over the API (lm-evaluation-harness)
    {"commands"},  # the verbs
    {"cli", "__main__", "__init__"},  # the entry point
]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, root: Path) -> set[str]:
    """Modules of the package ``path`` imports (``from a import b`` counts ``a.b`` when that is a module)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found |= {f"{target}.{alias.name}" for alias in node.names}
    return {m for m in found if m == root.name or m.startswith(root.name + ".")}


def import_graph(root: Path) -> dict[str, set[str]]:
    """``{module: modules of the package it imports}`` over every ``.py`` file under ``root``."""
    modules = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    return {name: {m for m in imports_of(path, root) if m in modules and m != name} for name, path in modules.items()}


def layer_of(module: str, root_name: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "__init__"
    for index, names in enumerate(LAYERS):
        if key in names:
            return index
    raise AssertionError(f"{module}: in no layer of tests/test_layers.py LAYERS (add its folder to one)")


def upward_imports(graph: dict[str, set[str]], root_name: str) -> list[str]:
    return sorted(f"{a} (layer {LAYERS[layer_of(a, root_name)]}) imports {b} (layer {LAYERS[layer_of(b, root_name)]})"
                  for a, targets in graph.items() for b in targets
                  if layer_of(b, root_name) > layer_of(a, root_name))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
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
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_no_module_imports_a_higher_layer():
    assert upward_imports(import_graph(PACKAGE), PACKAGE.name) == []


def test_no_import_cycle():
    assert cycles(import_graph(PACKAGE)) == []


def test_every_module_has_a_layer():
    for module in import_graph(PACKAGE):
        layer_of(module, PACKAGE.name)


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "selfens_pl"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_checker_finds_an_upward_import_inside_a_function(tmp_path):
    root = _tree(tmp_path, {"__init__.py": "", "data/__init__.py": "", "heads/__init__.py": "",
                            "heads/vote.py": "",
                            "data/records.py": "def f():\n    from selfens_pl.heads.vote import x\n"})
    assert upward_imports(import_graph(root), root.name) == [
        "selfens_pl.data.records (layer {'data'}) imports selfens_pl.heads.vote (layer {'heads'})"]


def test_the_checker_finds_a_cycle_through_relative_imports(tmp_path):
    root = _tree(tmp_path, {"__init__.py": "", "engine/__init__.py": "",
                            "engine/a.py": "from . import b\n", "engine/b.py": "from .c import y\n",
                            "engine/c.py": "import selfens_pl.engine.a\n"})
    assert cycles(import_graph(root)) == [["selfens_pl.engine.a", "selfens_pl.engine.b", "selfens_pl.engine.c"]]


def test_a_module_outside_the_layers_is_refused(tmp_path):
    root = _tree(tmp_path, {"__init__.py": "", "misc.py": ""})
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of("selfens_pl.misc", root.name)


def test_the_gpu_check_imports_need_none_of_the_packages_the_gpu_machine_lacks():
    """The lent GPU machine has torch, transformers and lightning but no jsonargparse, datasets, spacy, gguf, bm25s or
    scikit-learn: the heads, the engine and the data module (what scripts/gpu_check.py imports) import them lazily."""
    import subprocess
    import sys

    code = ("import sys; import selfens_pl.heads, selfens_pl.lit.module, selfens_pl.data.datamodule, "
            "selfens_pl.engine.models; print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'jsonargparse', 'datasets', 'spacy', 'gguf', 'bm25s', 'sklearn'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]", out.stdout
