"""Where a bench leaves its numbers: `bench/results/<name>.json`, one file per README row.

A bench calls `record(...)` once at its end with the row's two cells (what was run, what came out) and the
raw figures behind them; `python bench/run.py --table` rebuilds the README's benchmark table from these
files, so a README figure is always one a bench wrote.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def record(name: str, *, setup: str, result: str, data: dict | None = None) -> Path:
    """`setup`: what the row ran (data, splits, what selects on what), markdown; `result`: the row's
    figures, markdown; `data`: every number behind them (per seed), for whoever re-checks."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({
        "bench": name,
        "argv": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "setup": setup,
        "result": result,
        "measured": datetime.date.today().isoformat(),
        "provenance": "run",
        "machine": f"{os.cpu_count()} CPU cores ({_cpu_model()}), {platform.machine()}, torch threads {_torch_threads()}",
        "data": data or {},
    }, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return path


def _cpu_model() -> str:
    """The CPU's name: hosts differ between runs (the same row measured on an Intel and an AMD host differs by
    up to 1.7x in torch fp32), so a row's speed is comparable only within the row."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _torch_threads() -> int | None:
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None
