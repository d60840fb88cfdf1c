"""User-facing `modelpress` commands on top of the client: submit, jobs, status, download, cancel.

Exit codes, for CI steps: 0 success; 1 the job failed or was cancelled (or `status` of such a
job); 2 usage error (bad arguments, missing file); 3 API or connection error (including a
download whose checksum does not match).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from mpclient.client import DEFAULT_URL, Client
from mpclient.errors import ApiError, ModelpressError, WaitTimeout
from mpclient.models import Job, as_dict

EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE, EXIT_API, EXIT_QUALITY = 0, 1, 2, 3, 4


class Bar:
    """A small progress bar on a TTY (stderr); occasional plain lines otherwise."""

    def __init__(self, label: str, stream=None, enabled: bool = True):
        self.label, self.stream, self.enabled = label, stream or sys.stderr, enabled
        self.tty = self.stream.isatty()
        self._last_plain = -1.0
        self._last_draw = 0.0
        self._last_word = self._last_line = ""

    def update(self, fraction: float, note: str = "") -> None:
        if not self.enabled:
            return
        fraction = max(0.0, min(1.0, fraction))
        if self.tty:
            now = time.monotonic()
            if fraction < 1.0 and now - self._last_draw < 0.05:
                return
            self._last_draw = now
            width = 30
            filled = int(round(fraction * width))
            self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {fraction * 100:5.1f}% {note}"
                              "\x1b[K")
            self.stream.flush()
        else:
            line = f"{self.label}: {fraction * 100:.0f}% {note}".rstrip()
            word = note.split(" ")[0] if note and not note[0].isdigit() else ""
            step = fraction - self._last_plain >= 0.25 or (fraction >= 1.0 > self._last_plain)
            if line != self._last_line and (step or word != self._last_word):
                self._last_plain, self._last_word, self._last_line = fraction, word, line
                self.stream.write(line + "\n")
                self.stream.flush()

    def done(self, note: str = "") -> None:
        if not self.enabled:
            return
        if self.tty:
            self.update(1.0, note)
            self.stream.write("\n")
            self.stream.flush()


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _bytes_bar(label: str, show: bool) -> Callable[[int, int], None]:
    bar = Bar(label, enabled=show)

    def cb(done: int, total: int) -> None:
        bar.update(done / total if total else 1.0, f"{_human(done)}/{_human(total)}")
    return cb


def _job_line(job: Job) -> str:
    stage = f" stage={job.stage}" if job.stage else ""
    err = f" error={job.error}" if job.error else ""
    return f"{job.id} {job.status} {job.progress * 100:.0f}%{stage}{err}"


def _emit(args: argparse.Namespace, payload: Any, text: str) -> None:
    if args.json:
        print(json.dumps(payload, indent=None, default=str))
    else:
        print(text)


def _job_exit(job: Job) -> int:
    """1: the job failed; 4: it ran, but the compressed model did not keep the upload's quality."""
    if job.status in ("failed", "cancelled"):
        return EXIT_JOB_FAILED
    return EXIT_QUALITY if job.status == "succeeded" and job.quality_passed is False else EXIT_OK


def _quality_line(job: Job) -> str:
    q = job.quality or {}
    return f"quality: {q.get('summary') or q.get('reason', 'no verdict')}" + (f" ({q['note']})" if q.get("note") else "")


class _Pair(argparse.Action):
    """--min-METRIC X stores (METRIC, X)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, (self.const, values))


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "modelpress" / "config.json"


def _configured_key() -> str | None:
    """The key from MODELPRESS_API_KEY, else from the config file ({"api_key": "..."}, readable by its owner only)."""
    if os.environ.get("MODELPRESS_API_KEY"):
        return os.environ["MODELPRESS_API_KEY"]
    path = config_path()
    if not path.is_file():
        return None
    if path.stat().st_mode & 0o077:
        print(f"modelpress: warning: {path} is readable by other users; chmod 600 it", file=sys.stderr)
    try:
        key = json.loads(path.read_text()).get("api_key")
    except (ValueError, AttributeError):
        print(f"modelpress: warning: {path} is not a JSON object with \"api_key\"; ignored", file=sys.stderr)
        return None
    return key if isinstance(key, str) and key else None


def _client(args: argparse.Namespace) -> Client:
    if args.api_key:   # a flag lands in shell history and in `ps` output
        print("modelpress: warning: --api-key is visible in shell history and to other users' `ps`; set "
              f"MODELPRESS_API_KEY or put {{\"api_key\": ...}} in {config_path()} instead", file=sys.stderr)
    return Client(args.url, api_key=args.api_key or _configured_key())


def _show_progress(args: argparse.Namespace) -> bool:
    return not args.json and not args.quiet


# -- commands -------------------------------------------------------------------------------

def _goal(args: argparse.Namespace) -> dict | None:
    """--goal ratio=10 | max_bytes=N | macs_ratio=R | speedup=S (at batch 32), with --min-METRIC X or --max-drop X."""
    if not args.goal:
        if args.min_metric or args.max_drop is not None or args.methods or args.budget_minutes is not None:
            raise ValueError("--min-*, --max-drop, --methods and --budget-minutes go with --goal")
        return None
    key, _, value = args.goal.partition("=")
    if key not in ("ratio", "max_bytes", "macs_ratio", "speedup") or not value:
        raise ValueError("--goal takes ratio=R, max_bytes=N, macs_ratio=R or speedup=S")
    try:
        target = {key: int(value) if key == "max_bytes" else float(value)}
    except ValueError:
        raise ValueError(f"--goal {key} must be a number") from None
    constraint: dict = {}
    if args.min_metric:
        metric, floor = args.min_metric
        constraint = {"metric": metric, "min": floor}
    if args.max_drop is not None:
        constraint = {**({"metric": constraint["metric"]} if constraint else {}), "max_drop": args.max_drop}
        if args.min_metric:
            raise ValueError("give one of --min-* or --max-drop")
    extra: dict = {}
    if args.methods:
        extra["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.budget_minutes is not None:
        extra["budget_minutes"] = args.budget_minutes
    return {"target": target, **({"constraint": constraint} if constraint else {}), **extra}


def cmd_submit(args: argparse.Namespace) -> int:
    options = None
    if args.options:
        try:
            options = json.loads(args.options)
        except json.JSONDecodeError as exc:
            print(f"--options must be a JSON object: {exc}", file=sys.stderr)
            return EXIT_USAGE
    pipeline = None
    if args.pipeline:
        try:
            text = Path(args.pipeline[1:]).read_text() if args.pipeline.startswith("@") else args.pipeline
            pipeline = json.loads(text)
        except (OSError, json.JSONDecodeError) as exc:
            print(f"--pipeline must be JSON or @file.json: {exc}", file=sys.stderr)
            return EXIT_USAGE
    try:
        goal = _goal(args)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    analyze = {} if args.analyze else None
    if sum(x is not None for x in (pipeline, args.recipe, goal, analyze)) != 1:
        print("give exactly one of --recipe, --pipeline, --goal or --analyze", file=sys.stderr)
        return EXIT_USAGE
    is_file = Path(args.model).is_file()
    if not is_file and not args.model.startswith("mdl_"):
        print(f"{args.model}: no such file (give a model file or an uploaded model id mdl_…)", file=sys.stderr)
        return EXIT_USAGE
    show = _show_progress(args)
    result: dict[str, Any] = {}
    with _client(args) as c:
        if is_file:
            model = c.upload_model(args.model, architecture=args.architecture, options=options,
                                   progress=_bytes_bar("upload", show))
            if show:
                s = model.summary
                print(f"uploaded {model.id} ({model.format}, {_human(model.size_bytes)}"
                      f"{', %s parameters' % s['parameters'] if 'parameters' in s else ''})", file=sys.stderr)
            result["model"] = as_dict(model)
            model_id = model.id
        else:
            model_id = args.model
        data = {}
        for role in ("calibration", "train", "eval"):
            given = getattr(args, role)
            if given and Path(given).is_file():
                dataset = c.upload_dataset(given, progress=_bytes_bar(f"upload {role} data", show))
                if show:
                    print(f"uploaded {dataset.id} ({dataset.format}, {dataset.summary.get('samples')} samples)",
                          file=sys.stderr)
                result.setdefault("datasets", {})[role] = as_dict(dataset)
                given = dataset.id
            if given:
                data[role] = given
        job = c.submit(model_id, recipe=args.recipe, pipeline=pipeline, goal=goal, analyze=analyze, device=args.device,
                       idempotency_key=args.idempotency_key, data=data or None, teacher_model_id=args.teacher,
                       callback_url=args.callback_url)
        if show:
            print(f"submitted {job.id}", file=sys.stderr)
        if args.wait or args.download:
            bar = Bar("job", enabled=show)
            job = c.wait(job.id, timeout=args.timeout,
                         on_progress=lambda j: bar.update(j.progress, f"{j.status} {j.stage or ''}".strip()))
            bar.done(job.status)
        result["job"] = as_dict(job)
        if args.download and job.status == "succeeded":
            bars: dict[str, Callable] = {}
            paths = c.download(job.id, args.download, progress=lambda a, d, t: bars.setdefault(
                a.id, _bytes_bar(f"download {a.name}", show))(d, t))
            result["files"] = [str(p) for p in paths]
        if job.finished and job.status != "succeeded":
            print(f"job {job.id} {job.status}: {job.error or 'no reason given'}", file=sys.stderr)
        elif job.quality:
            print(_quality_line(job), file=sys.stderr)
        if job.status == "succeeded" and "analyze" in (job.pipeline or {}):
            metrics = c.metrics(job.id).metrics or {}
            result["analyze"], result["sensitivity"] = metrics.get("analyze"), metrics.get("sensitivity")
            if show and result["sensitivity"]:
                print(_sensitivity_table(result["sensitivity"], result["analyze"]), file=sys.stderr)
        if job.status == "succeeded" and "goal" in (job.pipeline or {}):
            result["goal"] = (c.metrics(job.id).metrics or {}).get("goal")
            if show and result["goal"]:
                print(_goal_table(result["goal"]), file=sys.stderr)
    text = _job_line(job) + "".join(f"\n{p}" for p in result.get("files", []))
    _emit(args, result, text)
    if result.get("goal") and not result["goal"].get("goal_met"):
        return EXIT_QUALITY
    return _job_exit(job)


def _sensitivity_table(sensitivity: dict, analyze: dict | None) -> str:
    widths = list(sensitivity["layers"][0]["loss"]) if sensitivity["layers"] else []
    rows = sorted(sensitivity["layers"], key=lambda r: -r["loss"].get("int4", 0))
    lines = [f"{sensitivity['metric']} loss when only this layer is stored at:",
             f"{'layer':50s} " + " ".join(f"{w:>9s}" for w in widths),
             *(f"{r['tensor'][:50]:50s} " + " ".join(f"{r['loss'][w]:9.4f}" for w in widths) for r in rows)]
    return "\n".join(lines + ([analyze["summary"]] if analyze else []))


def _goal_table(goal: dict) -> str:
    """The measured candidates (chosen marked *, Pareto front marked +) and the outcome in one sentence."""
    lines = [f"{'':2}{'CANDIDATE':<30} {'BYTES':>12} {'RATIO':>7} {'METRIC':>10}  SIZE  BAR",
             *(f"{('*' if c['name'] == goal['chosen'] else '+' if c['name'] in goal['pareto'] else ' '):<2}"
               f"{c['name']:<30} {c['bytes']:>12,} {c['ratio']:>6.2f}x {c['metric_value']:>10.4f}  "
               f"{'ok' if c['meets_size'] else '-':<4}  {'ok' if c['passed'] else '-'}"
               for c in goal["candidates"] if "error" not in c),
             f"selected on {goal['selected_on']}; reported on {goal['reported_on']}", goal["summary"]]
    return "\n".join(lines)


def cmd_jobs(args: argparse.Namespace) -> int:
    with _client(args) as c:
        page = c.jobs(status=args.status, limit=args.limit)
    lines = [f"{'ID':<29} {'STATUS':<10} {'PROGRESS':>8}  {'RECIPE':<16} CREATED"]
    for j in page.items:
        created = j.created_at.strftime("%Y-%m-%d %H:%M:%S") if j.created_at else ""
        lines.append(f"{j.id:<29} {j.status:<10} {j.progress * 100:7.0f}%  {(j.recipe or 'pipeline'):<16} {created}")
    lines.append(f"({len(page.items)} of {page.total})")
    _emit(args, as_dict(page), "\n".join(lines))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as c:
        job = c.job(args.id)
        payload: dict[str, Any] = {"job": as_dict(job)}
        text = _job_line(job)
        if job.status == "succeeded":
            m = c.metrics(job.id).metrics or {}
            payload["metrics"] = m
            if m:
                text += (f"\nsize {_human(m.get('size_bytes_before', 0))} -> {_human(m.get('size_bytes_after', 0))}"
                         f" (x{m.get('compression_ratio', 0)}), output cosine {m.get('output_mean_cosine')}")
            if job.quality:
                text += "\n" + _quality_line(job)
            if m.get("goal"):
                text += "\n" + _goal_table(m["goal"])
    _emit(args, payload, text)
    if (payload.get("metrics") or {}).get("goal", {}).get("goal_met") is False:
        return EXIT_QUALITY
    return _job_exit(job)


def cmd_download(args: argparse.Namespace) -> int:
    show = _show_progress(args)
    bars: dict[str, Callable] = {}
    with _client(args) as c:
        paths = c.download(args.id, args.dir, progress=lambda a, d, t: bars.setdefault(
            a.id, _bytes_bar(f"download {a.name}", show))(d, t))
    _emit(args, {"files": [str(p) for p in paths]}, "\n".join(str(p) for p in paths))
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as c:
        job = c.cancel(args.id)
    _emit(args, as_dict(job), _job_line(job) + (" (cancel requested)" if job.status == "running" else ""))
    return EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    """Delete by id; the prefix says what it is (mdl_, job_, art_, ds_)."""
    kinds = {"mdl_": "model", "job_": "job", "art_": "artifact", "ds_": "dataset"}
    kind = next((k for prefix, k in kinds.items() if args.id.startswith(prefix)), None)
    if kind is None:
        print(f"modelpress: {args.id!r} is not a model, job, artifact or dataset id (mdl_/job_/art_/ds_…)",
              file=sys.stderr)
        return EXIT_USAGE
    if args.cascade and kind != "model":
        print("modelpress: --cascade goes with a model id", file=sys.stderr)
        return EXIT_USAGE
    with _client(args) as c:
        if kind == "model":
            c.delete_model(args.id, cascade=args.cascade)
        else:
            getattr(c, f"delete_{kind}")(args.id)
    _emit(args, {"deleted": args.id, "kind": kind}, f"deleted {kind} {args.id}")
    return EXIT_OK


def cmd_usage(args: argparse.Namespace) -> int:
    with _client(args) as c:
        u = c.usage()
    kinds = ", ".join(f"{k} {u[k]['bytes']} B ({u[k]['count']})" for k in ("models", "datasets", "artifacts"))
    _emit(args, u, f"{u['used_bytes']} of {u['quota_bytes']} bytes: {kinds}; {u['active_jobs']} active job(s)")
    return EXIT_OK


def cmd_weights(args: argparse.Namespace) -> int:
    """Decode a container locally (numpy only): list its tensors, optionally save them as .npz."""
    import numpy as np

    from mpclient.format import ContainerError, read

    try:
        tensors, manifest = read(args.container)
    except (ContainerError, OSError) as exc:
        print(f"error: {args.container}: {exc}", file=sys.stderr)
        return EXIT_API
    entries = {e["name"]: e for e in manifest["tensors"]}
    if args.out:
        np.savez(args.out, **tensors)
    if args.json:
        print(json.dumps({"origin": manifest.get("origin"), "decode_requires": manifest.get("decode_requires"),
                          "tensors": [{"name": n, "shape": list(t.shape), "dtype": entries[n]["dtype"],
                                       "codec": entries[n]["codec"]} for n, t in tensors.items()],
                          **({"saved": args.out} if args.out else {})}))
        return EXIT_OK
    for name, t in tensors.items():
        print(f"{name:60s} {str(list(t.shape)):>20s} {entries[name]['dtype']:9s} {entries[name]['codec']}")
    if args.out:
        print(f"saved {len(tensors)} tensors to {args.out}", file=sys.stderr)
    return EXIT_OK


def _run(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except WaitTimeout as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_API
        except ApiError as exc:
            print(f"error: HTTP {exc.status}: {exc.message}", file=sys.stderr)
            if args.json:
                print(json.dumps({"error": {"status": exc.status, "detail": exc.detail}}))
            return EXIT_API
        except ModelpressError as exc:
            print(f"error: {exc}", file=sys.stderr)
            if args.json:
                print(json.dumps({"error": {"status": None, "detail": str(exc)}}))
            return EXIT_API
        except KeyboardInterrupt:
            return 130
    return wrapped


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the client commands to the `modelpress` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("MODELPRESS_URL", DEFAULT_URL),
                        help="API base URL (env MODELPRESS_URL; default %(default)s)")
    common.add_argument("--api-key", default=None, help="API key (prefer env MODELPRESS_API_KEY or "
                        "~/.config/modelpress/config.json {\"api_key\": ...}: a flag shows in shell history and `ps`)")
    common.add_argument("--json", action="store_true", help="print JSON for scripts (no progress bars)")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress output")

    p = sub.add_parser("submit", parents=[common], help="upload a model (or use an id) and submit a job")
    p.add_argument("model", metavar="MODEL", help="model file to upload, or an uploaded model id (mdl_…)")
    p.add_argument("--recipe", help="preset recipe (GET /v1/recipes), e.g. int8")
    p.add_argument("--pipeline", help="pipeline JSON, or @file.json")
    p.add_argument("--goal", metavar="ratio=R|max_bytes=N|macs_ratio=R|speedup=S", help="instead of a recipe: a "
                   "size, MAC or speed (batch 32) target; the service searches for the compression (needs --calibration or --eval data; --train "
                   "data fine-tunes structural candidates)")
    for metric in ("cosine", "top1", "top5", "agreement"):
        p.add_argument(f"--min-{metric}", dest="min_metric", type=float, metavar="X",
                       action=_Pair, const=metric, help=f"with --goal: {metric} at least X")
    p.add_argument("--max-drop", type=float, metavar="X", help="with --goal: the metric may fall at most X")
    p.add_argument("--methods", metavar="KIND,KIND", help="with --goal: only candidates made of these stage kinds, "
                   "e.g. quantize,huffman")
    p.add_argument("--budget-minutes", type=float, metavar="M", help="with --goal: time for measuring candidates "
                   "(default 15)")
    p.add_argument("--analyze", action="store_true", help="instead of compressing: measure each layer alone at "
                   "int8/int4/int3 on --calibration or --eval data and print which layers break first")
    p.add_argument("--architecture", help="built-in architecture for bare weights, e.g. lenet-300-100")
    p.add_argument("--options", help='loader options JSON, e.g. \'{"input_shape": [1, 784]}\'')
    p.add_argument("--device", choices=["cpu", "gpu"])
    for role, use in (("calibration", "data-driven stages (gptq, saliency pruning)"),
                      ("train", "finetune and distill stages"), ("eval", "task metrics after every stage")):
        p.add_argument(f"--{role}", metavar="DATA", help=f"dataset file to upload, or an uploaded id (ds_…): {use}")
    p.add_argument("--teacher", metavar="MODEL_ID", help="an uploaded model (mdl_…) the training stages learn from; "
                   "MODEL is then the student")
    p.add_argument("--callback-url", metavar="URL", help="a webhook POSTed the job document when the job finishes "
                   "(signed: X-Modelpress-Signature); default: the tenant's callback_url setting")
    p.add_argument("--idempotency-key", help="default: a fresh uuid (retries reuse it)")
    p.add_argument("--wait", action="store_true", help="wait for the job to finish; exit 1 if it fails, 4 if it "
                   "ran but did not keep the model's quality")
    p.add_argument("--download", metavar="DIR", help="wait, then download the artifacts into DIR")
    p.add_argument("--timeout", type=float, default=None, help="seconds to wait at most (exit 3 after)")
    p.set_defaults(func=_run(cmd_submit))

    p = sub.add_parser("jobs", parents=[common], help="list jobs")
    p.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=_run(cmd_jobs))

    p = sub.add_parser("status", parents=[common], help="one job's state (and metrics once it succeeded)")
    p.add_argument("id", metavar="ID")
    p.set_defaults(func=_run(cmd_status))

    p = sub.add_parser("download", parents=[common], help="download a job's artifacts (or one artifact)")
    p.add_argument("id", metavar="ID", help="job id (all its artifacts) or artifact id")
    p.add_argument("--dir", default=".", help="target folder (default: current)")
    p.set_defaults(func=_run(cmd_download))

    p = sub.add_parser("cancel", parents=[common], help="cancel a queued or running job")
    p.add_argument("id", metavar="ID")
    p.set_defaults(func=_run(cmd_cancel))

    p = sub.add_parser("delete", parents=[common], help="delete a model, job, artifact or dataset (and its bytes)")
    p.add_argument("id", metavar="ID", help="mdl_…, job_…, art_… or ds_…")
    p.add_argument("--cascade", action="store_true", help="a model: also delete its finished jobs and their artifacts")
    p.set_defaults(func=_run(cmd_delete))

    p = sub.add_parser("usage", parents=[common], help="bytes stored against the quota, by kind")
    p.set_defaults(func=_run(cmd_usage))

    p = sub.add_parser("weights", parents=[common], help="decode a downloaded model.mpz here (numpy only, no server)")
    p.add_argument("container", metavar="MODEL.MPZ")
    p.add_argument("--out", metavar="FILE.npz", help="save the decoded weights as a numpy .npz")
    p.set_defaults(func=_run(cmd_weights))


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (`python -m mpclient`), same commands as `modelpress`."""
    parser = argparse.ArgumentParser(prog="modelpress", description="modelpress client")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)
