"""The package's layout: bioattn's modules import each other without a cycle and only from their
own layer or the layers below it (the table of docs/architecture.md), counting imports inside
functions too (so no cycle or upward import hides behind a deferred import)."""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "bioattn"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(current: str, is_package: bool, level: int, target: str | None) -> str:
    base = current.split(".") if is_package else current.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = resolve(name, is_package, node.level, node.module) if node.level else node.module
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                # importing a.b.c runs a and a.b first
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    candidate = ".".join(parts[:i])
                    if candidate in modules and candidate != name and not name.startswith(candidate + "."):
                        graph[name].add(candidate)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graph_sees_package_imports():
    graph = import_graph()
    assert "bioattn.fileio" in graph["bioattn.checkpoint"]
    assert "bioattn.data.stats" in graph["bioattn.models.common"]


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_bioattn_imports_have_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


ROOT = PACKAGE.parents[1]


def _architecture_page() -> str:
    return (ROOT / "docs" / "architecture.md").read_text()


def declared_layers(page: str) -> list[tuple[str, list[str]]]:
    """The rows of the page's "| layer | modules |" table, top down: (layer, module patterns)."""
    lines = page.splitlines()
    start = next(i for i, line in enumerate(lines) if line.replace(" ", "") == "|layer|modules|")
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        layer, modules = (cell.strip() for cell in line.strip().strip("|").split("|"))
        rows.append((layer, re.findall(r"`([^`]+)`", modules)))
    return rows


def layer_of(module: str, rows: list[tuple[str, list[str]]]) -> int | None:
    """The index of the row whose most specific pattern matches ``module`` (its own name before
    any pattern with ``*``, a longer pattern before a shorter one); None when no row names it."""
    best: tuple[tuple[bool, int], int] | None = None
    for index, (_, patterns) in enumerate(rows):
        for pattern in patterns:
            if fnmatch.fnmatchcase(module, pattern):
                rank = ("*" not in pattern, len(pattern))
                if best is None or rank > best[0]:
                    best = (rank, index)
    return None if best is None else best[1]


def upward_imports(graph: dict[str, set[str]], rows: list[tuple[str, list[str]]]) -> list[str]:
    """Every import arrow from a module to one in a higher row, as text."""
    found = []
    for module, targets in sorted(graph.items()):
        own = layer_of(module, rows)
        for target in sorted(targets):
            above = layer_of(target, rows)
            if own is not None and above is not None and above < own:
                found.append(f"{module} ({rows[own][0]}) imports {target} ({rows[above][0]})")
    return found


def test_the_layer_reader_ranks_patterns_and_finds_upward_imports():
    rows = [("top", ["pkg.app", "pkg.util.*"]), ("bottom", ["pkg.util.leaf", "pkg.*"])]
    assert layer_of("pkg.util.x", rows) == 0       # pkg.util.* is longer than pkg.*
    assert layer_of("pkg.util.leaf", rows) == 1    # the module's own name beats any pattern
    assert layer_of("other", rows) is None
    graph = {"pkg.app": {"pkg.util.leaf"}, "pkg.util.leaf": {"pkg.util.x"}, "pkg.util.x": set()}
    assert upward_imports(graph, rows) == ["pkg.util.leaf (bottom) imports pkg.util.x (top)"]


def test_every_module_is_in_a_declared_layer():
    rows = declared_layers(_architecture_page())
    assert [layer for layer, _ in rows][-1] == "leaves"
    unplaced = [m for m in sorted(import_graph()) if layer_of(m, rows) is None]
    assert not unplaced, f"docs/architecture.md's layer table names no row for {unplaced}"


def test_no_module_imports_from_a_higher_layer():
    arrows = upward_imports(import_graph(), declared_layers(_architecture_page()))
    assert not arrows, "imports against the layers of docs/architecture.md:\n" + "\n".join(arrows)


def test_architecture_page_names_every_module():
    architecture = _architecture_page()
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        dotted = module_name(path).removeprefix("bioattn.")
        if path.name != "__init__.py" and f"bioattn/{path.relative_to(PACKAGE).as_posix()}" not in architecture:
            missing.append(dotted)
    assert not missing, f"docs/architecture.md lacks {missing}"


def test_architecture_page_names_every_test_benchmark_and_doc():
    architecture = _architecture_page()
    files = [*(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py"), *(ROOT / "docs").glob("*.md")]
    missing = [str(p.relative_to(ROOT)) for p in files
               if p.name not in ("__init__.py", "README.md") and p.name not in architecture]
    assert not missing, f"docs/architecture.md lacks {missing}"


def test_readme_layout_names_the_top_level_folders():
    text = (ROOT / "README.md").read_text()
    layout = text.split("Project layout", 1)[1].split("\n## ", 1)[0]
    for folder in ("src/bioattn/", "tests/", "benchmarks/", "docs/"):
        assert folder in layout
    for package in sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()):
        assert f"{package}/" in layout, package


def deferred_imports() -> dict[str, int]:
    """For each module, the number of its bioattn and third-party import statements that sit
    inside a function (run on first call rather than on import)."""
    counts: dict[str, int] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        n = 0
        for func in ast.walk(tree):
            if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n += sum(isinstance(node, (ast.Import, ast.ImportFrom)) for node in ast.walk(func)
                         if node is not func)
        if n:
            counts[module_name(path)] = n
    return counts


def test_the_page_states_how_many_imports_sit_inside_functions():
    # nested functions would count their imports twice; the package has none that import
    counts = deferred_imports()
    stated = re.search(r"(\d+) imports sit inside functions, in (\d+) modules", _architecture_page())
    assert stated, "docs/architecture.md should say how many imports sit inside functions"
    assert (int(stated[1]), int(stated[2])) == (sum(counts.values()), len(counts)), counts


def test_modules_and_functions_stay_readable():
    # no module over 700 lines outside the model families (a model file reads like its paper), no
    # function over 100 lines
    long_modules, long_functions = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if "models" not in path.relative_to(PACKAGE).parts and len(text.splitlines()) > 700:
            long_modules.append(f"{module_name(path)} ({len(text.splitlines())} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 100:
                long_functions.append(f"{module_name(path)}.{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long_modules and not long_functions, (long_modules, long_functions)
