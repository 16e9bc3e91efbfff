"""The package's layout: bioattn's modules import each other without a cycle, counting imports
inside functions too (so no cycle hides behind a deferred import)."""

from __future__ import annotations

import ast
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
