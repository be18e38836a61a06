"""The layer rules, checked on the source: no import cycles between modules, maths layers
never import widgets, ``flows/`` never imports the trace classes (arrays in, arrays out)."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent / "attn_widgets"


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = p.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _imports(name: str, path: pathlib.Path, mods: dict, top_level_only: bool) -> set[str]:
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in mods]
            found |= set(subs) if len(subs) == len(node.names) else {mod, *subs}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m in mods and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_one_that_imports_it_back():
    mods = _modules()
    graph = {m: _imports(m, p, mods, top_level_only=True) for m, p in mods.items()}
    assert _cycles(graph) == []


def test_flows_take_arrays_and_never_import_traces_or_widgets():
    mods = _modules()
    for name, path in mods.items():
        if not name.startswith("attn_widgets.flows"):
            continue
        imported = _imports(name, path, mods, top_level_only=False)  # function-level too
        bad = {m for m in imported if m in ("attn_widgets.trace", "attn_widgets.lazy")
               or m.startswith("attn_widgets.widgets") or m.startswith("attn_widgets.capture")}
        assert not bad, f"{name} imports {sorted(bad)}"


def test_the_cycle_check_can_fail():
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]


def test_version_has_one_source_the_package_metadata():
    import importlib.metadata
    import re

    import attn_widgets as aw

    pyproject = (ROOT.parent / "pyproject.toml").read_text(encoding="utf-8")
    declared = re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1)
    assert aw.__version__ == importlib.metadata.version("attn_widgets") == declared
    assert declared not in (ROOT / "__init__.py").read_text(encoding="utf-8")  # not hard-coded again


def test_docs_and_docstrings_cite_only_files_in_this_repository():
    outside = ("DESIGN.md", "FLOW-METHODS.md", "TESTING.md", "shared/")
    files = [*ROOT.rglob("*.py"), ROOT.parent / "README.md", ROOT.parent / "ARCHITECTURE.md",
             *(ROOT.parent / "tests").rglob("*.py")]
    bad = [f"{p.name}: {word}" for p in files for word in outside
           if p.name != "test_architecture.py" and word in p.read_text(encoding="utf-8")]
    assert bad == []
