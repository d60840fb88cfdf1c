"""The README's benchmark table is the one bench/run.py builds from bench/results (no hand-edited figures)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from run import BENCHES, RESULTS, readme_with_table  # noqa: E402


def test_the_readme_table_is_built_from_the_result_files():
    readme = (ROOT / "README.md").read_text()
    assert readme_with_table(readme) == readme, "run: python bench/run.py --table"
    done = subprocess.run([sys.executable, "bench/run.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_bench_has_its_script_and_every_result_file_its_bench():
    names = {b.name for b in BENCHES}
    assert all((ROOT / "bench" / b.script).is_file() for b in BENCHES)
    for path in RESULTS.glob("*.json"):
        result = json.loads(path.read_text())
        assert path.stem in names and result["bench"] == path.stem, path
        assert result["provenance"] in ("run", "transcribed") and result["result"], path


def test_a_stale_table_is_caught(tmp_path):
    readme = (ROOT / "README.md").read_text()
    edited = readme.replace("| `python bench/lowrank.py`", "| `python bench/lowrank.py` edited by hand", 1)
    assert edited != readme and readme_with_table(edited) != edited
