"""The layer map of docs/architecture.md, enforced over the imports of hpa/.

Every ``import`` and ``from ... import`` in hpa/ counts, at module level or inside a
function (a lazy import still makes the module depend on what it imports), except
those under ``if TYPE_CHECKING:`` (read by the type checker only). From them: the
graph of modules and the graph of subpackages (``hpa.classification.train`` belongs to
``classification``, ``hpa.io`` to ``io``), and three rules:

- a module imports only from its own layer or a lower one, and not from a sibling of
  a layer whose packages are independent (:data:`LAYERS`);
- no import cycle among modules;
- no import cycle among subpackages.

A cycle that lives in code this branch could not change is listed in
:data:`KNOWN_CYCLES` (with the wrong-way import it needs in :data:`KNOWN_WRONG_WAY`),
and each entry must still be needed: the lists can only shrink.
"""

from __future__ import annotations

import ast
import itertools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "architecture.md"

#: The layers, lowest first: (name, top-level modules and subpackages of hpa, independent).
#: A module may import from its own layer and from lower ones; in an independent layer
#: not from its siblings. ``hpa`` is the package's ``__init__`` (``__version__``).
LAYERS: tuple[tuple[str, frozenset[str], bool], ...] = (
    ("base", frozenset({"hpa", "constants", "errors"}), True),
    ("core", frozenset({"io_tiff", "io", "config", "runlog", "outputs", "parallel", "_forkserver"}), False),
    ("artefacts", frozenset({"artefacts"}), True),
    ("stages", frozenset({"segmentation", "aggregation", "features"}), True),
    ("models", frozenset({"classification", "synthetic", "visualization"}), True),
    ("interop", frozenset({"interop"}), True),
    ("pipelines", frozenset({"pipelines"}), True),
    ("entry points", frozenset({"api", "cli", "__main__"}), False),
)

#: Import cycles that remain, each the set of modules (or subpackages) that import one
#: another. They live in files other branches were editing when the layer test came in;
#: a fix deletes its entry (the test fails while a listed cycle no longer exists).
KNOWN_CYCLES: frozenset[frozenset[str]] = frozenset({})

#: Packages hpa.aggregation never imports.
NOT_IN_AGGREGATION = frozenset({"torch", "torchvision", "timm"})

#: Wrong-way imports that remain (importer, imported), with the same rule.
KNOWN_WRONG_WAY: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class Import:
    """One import of an hpa module by another: where it is written and what it names."""

    importer: str
    imported: str
    file: str  # relative to the package's parent folder: hpa/classification/train.py
    line: int

    def __str__(self) -> str:
        return f"{self.importer} -> {self.imported} ({self.file}:{self.line})"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """Every module under package folder ``root``: dotted name -> (file, is a package)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


class _Walker(ast.NodeVisitor):
    """The hpa imports of one module, those under ``if TYPE_CHECKING:`` left out."""

    def __init__(self, name: str, package: bool, file: str, known: Mapping[str, object]):
        self.name, self.file, self.known = name, file, known
        self.here = name if package else name.rsplit(".", 1)[0]  # what `from .` means
        self.found: list[Import] = []

    def add(self, target: str, node: ast.stmt) -> None:
        while target not in self.known:  # `hpa.io.read_sample` -> the module `hpa.io`
            if "." not in target:
                return
            target = target.rsplit(".", 1)[0]
        if target != self.name:
            self.found.append(Import(self.name, target, self.file, node.lineno))

    def visit_If(self, node: ast.If) -> None:
        for child in node.orelse if _is_type_checking(node.test) else [*node.body, *node.orelse]:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            parts = self.here.split(".")
            up = parts[: len(parts) - node.level + 1]
            base = ".".join([*up, base] if base else up)
        for alias in node.names:  # `from pkg import module` names a module
            full = f"{base}.{alias.name}"
            self.add(full if full in self.known else base, node)


def imports(root: Path) -> list[Import]:
    """The imports of package ``root``'s own modules by one another, function-level
    ones included, those under ``if TYPE_CHECKING:`` left out."""
    known = modules(root)
    found: list[Import] = []
    for name, (path, package) in known.items():
        walker = _Walker(name, package, path.relative_to(root.parent).as_posix(), known)
        walker.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        found += walker.found
    return found


def subpackage(module: str) -> str:
    """``hpa.classification.train`` -> ``classification``; ``hpa.io`` -> ``io``; ``hpa`` -> ``hpa``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def cycles(edges: Mapping[str, Iterable[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one node (Tarjan's, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    nodes = sorted({*edges, *(t for ts in edges.values() for t in ts)})
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def cycle_path(component: frozenset[str], edges: Mapping[str, Iterable[str]]) -> list[str]:
    """One closed path through ``component``, from its first node (by name) back to it."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(edges.get(node, ())):
            if nxt == start:
                return [*paths[node], start]
            if nxt in component and nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    raise AssertionError(f"no cycle through {sorted(component)}")


def graph(found: list[Import], key: str = "module") -> dict[str, set[str]]:
    """Who imports whom: among modules (``key="module"``) or among subpackages."""
    of = _key(key)
    edges: dict[str, set[str]] = {}
    for imp in found:
        a, b = of(imp.importer), of(imp.imported)
        if a != b:
            edges.setdefault(a, set()).add(b)
    return edges


def _key(key: str) -> Callable[[str], str]:
    return (lambda m: m) if key == "module" else subpackage


def describe(component: frozenset[str], found: list[Import], key: str = "module") -> str:
    """The cycle as ``a -> b -> a``, each step with an import (file:line) that makes it."""
    of = _key(key)
    path = cycle_path(component, graph(found, key))
    steps = [
        f"  {next(i for i in found if of(i.importer) == a and of(i.imported) == b)}"
        for a, b in itertools.pairwise(path)
    ]
    return f"{' -> '.join(path)}\n" + "\n".join(steps)


def layer_of(module: str) -> int:
    name = subpackage(module)
    for number, (_, members, _) in enumerate(LAYERS):
        if name in members:
            return number
    raise KeyError(name)


def wrong_way(found: list[Import]) -> list[Import]:
    """The imports of a higher layer, or of an independent sibling."""
    bad = []
    for imp in found:
        a, b = layer_of(imp.importer), layer_of(imp.imported)
        sibling = a == b and LAYERS[a][2] and subpackage(imp.importer) != subpackage(imp.imported)
        if b > a or sibling:
            bad.append(imp)
    return bad


@pytest.fixture(scope="module")
def hpa_imports() -> list[Import]:
    return imports(REPO / "hpa")


def test_every_module_has_a_layer():
    names = {subpackage(m) for m in modules(REPO / "hpa")}
    placed = {n for _, members, _ in LAYERS for n in members}
    assert names - placed == set(), "place these in LAYERS and docs/architecture.md"
    assert placed - names == set(), "LAYERS names modules that do not exist"


def test_no_wrong_way_import(hpa_imports):
    bad = [i for i in wrong_way(hpa_imports) if (i.importer, i.imported) not in KNOWN_WRONG_WAY]
    layers = {n: LAYERS[layer_of(n)][0] for i in bad for n in (i.importer, i.imported)}
    assert not bad, "imports against the layer map (docs/architecture.md):\n" + "\n".join(
        f"  {i}: layer {layers[i.importer]!r} imports layer {layers[i.imported]!r}" for i in bad
    )
    still = {(i.importer, i.imported) for i in wrong_way(hpa_imports)}
    gone = KNOWN_WRONG_WAY - still
    assert not gone, f"KNOWN_WRONG_WAY lists imports that are gone; delete them: {sorted(gone)}"


@pytest.mark.parametrize("key", ["module", "subpackage"])
def test_no_import_cycle(hpa_imports, key):
    found = cycles(graph(hpa_imports, key))
    new = [c for c in found if c not in KNOWN_CYCLES]
    assert not new, f"import cycles among {key}s (function-level imports count):\n" + "\n".join(
        describe(c, hpa_imports, key) for c in new
    )
    ours = {c for c in KNOWN_CYCLES if (key == "module") == any("." in n for n in c)}
    gone = ours - set(found)
    assert not gone, f"KNOWN_CYCLES lists {key} cycles that no longer exist; delete them: " + str(
        [sorted(c) for c in gone]
    )


def test_aggregation_never_imports_torch():
    """Pooling, thresholds and metrics are array code: no torch, timm or torchvision,
    at module level or inside a function (docs/architecture.md)."""
    found = []
    for path in sorted((REPO / "hpa" / "aggregation").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            found += [
                f"{path.name}:{node.lineno} {n}" for n in names if n.split(".")[0] in NOT_IN_AGGREGATION
            ]
    assert not found, f"hpa.aggregation imports {found}"


def test_the_checks_see_function_level_imports_and_skip_type_checking(tmp_path):
    """A made-up package: a cycle through a function-level import is found (with its
    file and line), one through ``if TYPE_CHECKING:`` is not, a wrong-way import is."""
    pkg = tmp_path / "hpa"
    (pkg / "aggregation").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "io.py").write_text(
        "import typing\nif typing.TYPE_CHECKING:\n    from hpa.config import C\nelse:\n    import hpa.errors\n"
    )
    (pkg / "config.py").write_text("class C:\n    def load(self):\n        from hpa import io\n")
    (pkg / "errors.py").write_text("class E(Exception):\n    pass\n")
    (pkg / "aggregation" / "__init__.py").write_text("from .pooling import pool\n")
    (pkg / "aggregation" / "pooling.py").write_text(
        "import numpy\n\n\ndef pool():\n    from hpa.aggregation import rle\n    from ..errors import E\n"
    )
    (pkg / "aggregation" / "rle.py").write_text("from hpa.aggregation.pooling import pool\n")
    (pkg / "constants.py").write_text("def f():\n    import hpa.aggregation.rle\n")
    found = imports(pkg)
    assert {(i.importer, i.imported, i.line) for i in found} == {
        ("hpa.aggregation", "hpa.aggregation.pooling", 1),
        ("hpa.aggregation.pooling", "hpa.aggregation.rle", 5),
        ("hpa.aggregation.pooling", "hpa.errors", 6),
        ("hpa.aggregation.rle", "hpa.aggregation.pooling", 1),
        ("hpa.constants", "hpa.aggregation.rle", 2),
        ("hpa.config", "hpa.io", 3),  # counted inside a method; io's import of config is not
        ("hpa.io", "hpa.errors", 5),  # the else branch of `if TYPE_CHECKING:` runs
    }
    module_cycles = cycles(graph(found))
    assert module_cycles == [frozenset({"hpa.aggregation.pooling", "hpa.aggregation.rle"})]
    text = describe(module_cycles[0], found)
    assert text.startswith("hpa.aggregation.pooling -> hpa.aggregation.rle -> hpa.aggregation.pooling")
    assert re.search(r"pooling\.py:5", text) and re.search(r"rle\.py:1", text)
    assert cycles(graph(found, "subpackage")) == []
    assert [(i.importer, i.imported) for i in wrong_way(found)] == [("hpa.constants", "hpa.aggregation.rle")]


def test_the_document_draws_these_layers():
    """docs/architecture.md's table of layers is :data:`LAYERS`, row by row."""
    rows = re.findall(r"^\| (\d) \| ([^|]+) \| ([^|]+) \| (yes|no) \|", DOC.read_text(encoding="utf-8"), re.M)
    drawn = [
        (name.strip(), frozenset(re.findall(r"`([\w.]+)`", packages)), independent == "yes")
        for _, name, packages, independent in rows
    ]
    assert [int(r[0]) for r in rows] == list(range(len(LAYERS)))
    assert drawn == list(LAYERS)
