"""The folders' dependency rules (README 'Architecture'): `compression` is a plain library; `core` is what
`api` and `workers` share, so neither imports the other; no cycle between top-level packages; `mpclient`
(the client and the container reader, its own distribution) needs no torch and nothing of the server."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("api", "core", "workers", "compression", "storage", "web", "mpclient")
ALLOWED = {
    "compression": {"mpclient"},   # mpclient.format only: the codecs' one home (see below)
    "storage": set(),
    "core": {"storage"},
    "workers": {"core", "storage", "compression"},
    "api": {"core", "storage", "compression", "web", "mpclient"},
    "web": set(),
    "mpclient": set(),
}
FRAMEWORKS = {"fastapi", "starlette", "celery", "kombu", "sqlalchemy", "alembic"}


def _imports(package: str, depth: int = 1) -> dict[str, set[str]]:
    """{imported name (its first `depth` segments): files importing it} for every module of the package."""
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
                found.setdefault(".".join(name.split(".")[:depth]), set()).add(str(path.relative_to(ROOT)))
    return found


def test_packages_import_only_what_the_architecture_allows():
    problems = []
    for package in PACKAGES:
        for top, files in _imports(package).items():
            if top in PACKAGES and top != package and top not in ALLOWED[package]:
                problems.append(f"{package} imports {top} in {sorted(files)}")
    assert not problems, problems


def test_the_reader_stands_alone():
    client = _imports("mpclient")
    assert not {"torch", "compression", "safetensors", "onnx"} & set(client), client
    from_compression = {name for name in _imports("compression", depth=2) if name.startswith("mpclient")}
    assert from_compression <= {"mpclient.format"}, from_compression


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
