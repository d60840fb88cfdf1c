"""Run benches and rebuild the README's benchmark table from what they wrote (`bench/results/<name>.json`).

    python bench/run.py                      # list the benches and when each was last measured
    python bench/run.py compact_filters ...  # run these benches (each writes its result file), then the table
    python bench/run.py --all                # every bench, in table order (hours on 2 cores)
    python bench/run.py --table              # only rebuild the README table from bench/results
    python bench/run.py --check              # exit 1 when the README table is not what bench/results say

Each bench runs in its own process with HF_HUB_OFFLINE=1, so no weights are downloaded. Result files whose
provenance is "transcribed" hold figures copied from the README as it was before this script existed; the table says so
until the bench is run again.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
README = ROOT / "README.md"
START, END = "<!-- bench-table:start (bench/run.py --table writes this) -->", "<!-- bench-table:end -->"


@dataclass(frozen=True)
class Bench:
    name: str          # the result file's name (what the bench passes to record())
    script: str
    args: tuple[str, ...] = ()
    text_corpora: bool = False   # reads gensim's test corpora as files (`pip install gensim --no-deps`)
    hub: bool = False            # loads a model through transformers (run offline)

    def command(self) -> str:
        prefix = "pip install gensim --no-deps; " if self.text_corpora else ""
        offline = "HF_HUB_OFFLINE=1 " if self.hub or self.text_corpora else ""
        return f"{prefix}{offline}python bench/{self.script}{''.join(' ' + a for a in self.args)}"


# Table order: goals first, then runnable files, then methods.
BENCHES = [
    Bench("goal_cnn_size", "goal_cnn_size.py", ("--seeds", "3")),
    Bench("goal_cnn_size_lenet-5", "goal_cnn_size.py", ("--arch", "lenet-5", "--ratio", "45", "--max-drop", "0.005",
                                                         "--pretrain", "15", "--seeds", "3", "--budget-minutes", "12")),
    Bench("goal_cnn_speed", "goal_cnn_speed.py", ("--seeds", "3")),
    Bench("goal_minilm", "goal_minilm.py", text_corpora=True),
    Bench("cnn_int8", "cnn_int8.py"),
    Bench("runnable_ratios", "runnable_ratios.py"),
    Bench("minilm_hf_folder", "minilm_hf_folder.py", text_corpora=True),
    Bench("minilm_runnable", "minilm_runnable.py", text_corpora=True),
    Bench("deep_compression_service", "deep_compression_service.py"),
    Bench("minilm_compression", "minilm_compression.py", text_corpora=True),
    Bench("speed_cnn", "speed_cnn.py"),
    Bench("structured_matrices", "structured_matrices.py", ("--seeds", "3")),
    Bench("compact_filters", "compact_filters.py", ("--seeds", "3")),
    Bench("lowrank", "lowrank.py"),
    Bench("minilm_fast", "minilm_fast.py", ("--configs", "0.25:0.25", "0.5:0.5", "--epochs", "1"), hub=True),
    Bench("distill_lenet", "distill_lenet.py"),
    Bench("distill_minilm", "distill_minilm.py", text_corpora=True),
    Bench("load", "load.py"),
]
BY_NAME = {b.name: b for b in BENCHES}


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def row(bench: Bench) -> str:
    result = load(bench.name)
    if result is None:
        return f"| `{bench.command()}` | not measured yet |"
    if result["provenance"] == "run":
        cpu = re.search(r"cores \((.+?)\),", result.get("machine", ""))   # hosts differ between runs
        when = f"measured {result['measured']}" + (f" on {cpu.group(1)}" if cpu else "")
    else:
        when = f"figures of {result['measured'] or 'an earlier session'}, from before bench/run.py"
    setup = f"{result['setup']}; {when}" if result["setup"] else when
    return f"| `{bench.command()}` ({setup}) | {result['result']} |"


def table() -> str:
    return "\n".join(["| script | result (2 CPU cores) |", "|---|---|", *(row(b) for b in BENCHES)])


def readme_with_table(text: str) -> str:
    if START not in text or END not in text:
        raise SystemExit(f"README.md lacks the markers {START!r} … {END!r} around the benchmark table")
    head, rest = text.split(START, 1)
    return f"{head}{START}\n{table()}\n{END}{rest.split(END, 1)[1]}"


def run(bench: Bench) -> None:
    before = (RESULTS / f"{bench.name}.json").stat().st_mtime if (RESULTS / f"{bench.name}.json").exists() else 0
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    print(f"== {bench.name}: {bench.command()}", flush=True)
    subprocess.run([sys.executable, str(BENCH / bench.script), *bench.args], cwd=ROOT, env=env, check=True)
    path = RESULTS / f"{bench.name}.json"
    if not path.exists() or path.stat().st_mtime <= before:
        raise SystemExit(f"{bench.script} finished without writing {path.relative_to(ROOT)}: it must call "
                         "bench/record.py's record() with its figures")
    print(f"== {bench.name}: {time.perf_counter() - start:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(BY_NAME))
    parser.add_argument("--all", action="store_true")
    parser.add_argument("--table", action="store_true", help="only rebuild the README table")
    parser.add_argument("--check", action="store_true", help="exit 1 when the README table is stale")
    args = parser.parse_args()
    if unknown := [n for n in args.names if n not in BY_NAME]:
        parser.error(f"unknown bench {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    text = README.read_text()
    if args.check:
        if readme_with_table(text) != text:
            raise SystemExit("README's benchmark table differs from bench/results: run python bench/run.py --table")
        return
    chosen = BENCHES if args.all else [BY_NAME[n] for n in args.names]
    if not chosen and not args.table:
        for bench in BENCHES:
            result = load(bench.name)
            state = "never" if result is None else f"{result['measured'] or '?'} ({result['provenance']})"
            print(f"{bench.name:28} {state:40} {bench.command()}")
        return
    for bench in chosen:
        run(bench)
    README.write_text(readme_with_table(README.read_text()))
    print("README.md benchmark table rebuilt from bench/results")


if __name__ == "__main__":
    main()
