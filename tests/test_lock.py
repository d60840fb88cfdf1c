"""constraints.txt (the lock) covers every declared dependency with a version its range admits, and the
running environment is the one the lock describes (scripts/test.sh installs it)."""
from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _lock() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)", line)
        if m:
            pins[canonicalize_name(m[1])] = Version(m[2])
    return pins


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in ("assets", "test", "bench"):
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return [r for r in reqs if canonicalize_name(r.name) != "modelpress"]


def test_every_declared_dependency_is_locked_within_its_range():
    pins = _lock()
    for req in _declared():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in constraints.txt: run scripts/upgrade-deps --keep"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {req.name}=={pins[name]} outside {req.specifier}: run scripts/upgrade-deps --keep"


def test_the_lock_pins_no_local_paths_and_not_the_project_itself():
    lines = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in lines if "file:" in line or " @ " in line or line.startswith(("-e", "modelpress"))]


def test_torch_stays_the_cpu_release():
    assert _lock()["torch"] == Version("2.13.0")


def test_the_running_environment_is_the_lock():
    """What pip installed matches the lock (a stale venv: run scripts/test.sh, which installs it)."""
    drift = []
    for name, pinned in _lock().items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            continue   # platform-specific pins (none today) may be absent
        if installed.public != pinned.public:
            drift.append(f"{name} {installed} (lock: {pinned})")
    assert not drift, "installed versions differ from constraints.txt: " + ", ".join(drift)
