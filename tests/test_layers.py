"""The folders' dependency rules (README 'Architecture'): `compression` is a plain library; `core` is what
`api` and `workers` share, so neither imports the other; no cycle between top-level packages."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("api", "core", "workers", "compression", "storage", "web", "mpclient")
ALLOWED = {
    "compression": set(),
    "storage": set(),
    "core": {"storage"},
    "workers": {"core", "storage", "compression"},
    "api": {"core", "storage", "compression", "web", "mpclient"},
    "web": set(),
    "mpclient": set(),
}
FRAMEWORKS = {"fastapi", "starlette", "celery", "kombu", "sqlalchemy", "alembic"}


def _imports(package: str) -> dict[str, set[str]]:
    """{imported top-level name: files importing it} for every module of the package."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def test_packages_import_only_what_the_architecture_allows():
    problems = []
    for package in PACKAGES:
        for top, files in _imports(package).items():
            if top in PACKAGES and top != package and top not in ALLOWED[package]:
                problems.append(f"{package} imports {top} in {sorted(files)}")
    assert not problems, problems


def test_compression_is_a_plain_library():
    used = _imports("compression")
    assert not FRAMEWORKS & set(used), {name: used[name] for name in FRAMEWORKS & set(used)}


def test_the_allowed_graph_has_no_cycle():
    seen, done = set(), set()

    def visit(node: str, path: tuple) -> None:
        assert node not in path, f"import cycle: {' -> '.join(path + (node,))}"
        if node in done:
            return
        for nxt in ALLOWED[node]:
            visit(nxt, path + (node,))
        done.add(node)

    for package in PACKAGES:
        visit(package, ())
    assert done == set(PACKAGES) and not seen
