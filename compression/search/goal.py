"""Goal jobs: the user names a size target and a quality constraint; the search picks the recipe.

Candidates are whole pipelines (the presets' quantization, sharing and pruning families at several
widths, and GPTQ when there is calibration data). For a size target on a model of Linear layers (and
embeddings) with calibration data, GPTQ candidates are also solved from the target: the average width
of the Linears (`bits_per_weight`, spread over the layers by measured sensitivity) that makes the
container just fit, with the embedding rows the calibration data looks up kept wider than the rest.
Each one is applied to a copy of the model and measured: the bytes of the real container it writes,
and the constraint's metric against the uploaded model on a *selection* split (not evaluated when the
container is over the size target by more than a third: such a candidate cannot be chosen). The chosen
pipeline then runs as an ordinary job (export, verification, quality verdict) whose figures come from
data the search never saw: the eval role when the selection used other data, otherwise a held-back half
of the data given. The result keeps every measured candidate, the Pareto front, the chosen one, and
`goal_met` with the gap in one sentence.

A MAC target ({"macs_ratio": R}) searches structural candidates instead (structured pruning at several
ratios, counted with torch's flop counter on one example input); with train data each is fine-tuned inside
the search (and in the chosen job), so the pick accounts for what recovery training gives back; train data
also adds depthwise-separable filters (structural targets) and block-circulant layers (size targets), which
only recovery training makes usable.
A speedup target ({"speedup": S, "batch": 32}) uses the same candidates, each timed beside the upload in the
worker (CPU, medians of alternating blocks of calls); the reported speedup is measured again, apart from the search, on the
chosen job's model.
"""
from __future__ import annotations

import copy
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from compression.job.quality import QualitySpec, verdict

MethodKind = Literal["quantize", "share", "prune", "gptq", "huffman", "structured_prune", "finetune",
                     "compact_filters", "structured_matrix"]


class SizeTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ratio: float | None = Field(None, gt=1, le=1000, description="upload weight bytes / container bytes, at least")
    max_bytes: int | None = Field(None, gt=0, description="container bytes, at most")
    macs_ratio: float | None = Field(None, gt=1, le=100, description="multiply-accumulates of the upload / of the "
                                                                     "result on one example input, at least")
    speedup: float | None = Field(None, gt=1, le=100, description="CPU latency of the upload / of the result at "
                                                                  "`batch`, measured side by side on the worker")
    batch: int | None = Field(None, ge=1, le=1024, description="with speedup: the batch size it is measured at "
                                                              "(default 32)")

    @model_validator(mode="after")
    def _one(self) -> "SizeTarget":
        if sum(x is not None for x in (self.ratio, self.max_bytes, self.macs_ratio, self.speedup)) != 1:
            raise ValueError("give exactly one of ratio, max_bytes, macs_ratio or speedup")
        if self.batch is not None and self.speedup is None:
            raise ValueError("batch goes with a speedup target")
        return self

    @property
    def speed_batch(self) -> int:
        return self.batch or 32

    @property
    def structural(self) -> bool:
        """Fewer MACs or less time: candidates that remove channels, not ones that narrow codes."""
        return self.macs_ratio is not None or self.speedup is not None


class GoalSpec(BaseModel):
    """`POST /v1/jobs` {"goal": ...} instead of a recipe or pipeline."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    target: SizeTarget
    constraint: QualitySpec = Field(default_factory=QualitySpec,
                                    description="the quality bar (as a job's quality spec; default as the verdict's)")
    methods: list[MethodKind] | None = Field(None, min_length=1, description="only candidates using these stage kinds")
    budget_minutes: float = Field(15, gt=0, le=240, description="time for measuring candidates; the chosen "
                                                                "pipeline's own job runs after it")
    seed: int = Field(0, ge=0, le=2**31 - 1)


@dataclass(frozen=True)
class Candidate:
    name: str
    stages: list[dict]
    needs_calibration: bool = False


def _q(dtype: str, group: int | None = None, **extra) -> dict:
    stage = {"kind": "quantize", "dtype": dtype, **extra}
    if group:
        stage.update(group_size=group, symmetric=False)
    return stage


HUFFMAN = {"kind": "huffman"}
CANDIDATES = [
    Candidate("fp16", [_q("fp16")]),
    Candidate("int8", [_q("int8", granularity="per_channel")]),
    Candidate("int8-huffman", [_q("int8", granularity="per_channel"), HUFFMAN]),
    Candidate("int4-g32-huffman", [_q("int4", 32), HUFFMAN]),
    Candidate("int4-g64-huffman", [_q("int4", 64), HUFFMAN]),
    Candidate("int4-g128-huffman", [_q("int4", 128), HUFFMAN]),
    Candidate("kmeans-5bit-huffman", [{"kind": "share", "bits": 5}, HUFFMAN]),
    Candidate("kmeans-4bit-huffman", [{"kind": "share", "bits": 4}, HUFFMAN]),
    Candidate("int3-g64-huffman", [_q("int3", 64), HUFFMAN]),
    Candidate("kmeans-3bit-huffman", [{"kind": "share", "bits": 3}, HUFFMAN]),
    Candidate("prune-50-kmeans-4bit-huffman", [{"kind": "prune", "sparsity": 0.5}, {"kind": "share", "bits": 4},
                                               HUFFMAN]),
    Candidate("prune-80-kmeans-5bit-huffman", [{"kind": "prune", "sparsity": 0.8},
                                               {"kind": "share", "bits": 5, "centroid_dtype": "float16",
                                                "bias_dtype": "float16"}, HUFFMAN]),
    Candidate("gptq-int4-g64-huffman", [{"kind": "gptq", "bits": 4, "group_size": 64}, HUFFMAN], True),
    Candidate("gptq-int3-g64-huffman", [{"kind": "gptq", "bits": 3, "group_size": 64}, HUFFMAN], True),
]


STRUCTURAL_RATIOS = (0.2, 0.35, 0.5, 0.6, 0.7, 0.8)
# fixed epochs, no early stopping: the chosen job's eval data is the report split, which must not select
FINETUNE = {"kind": "finetune", "epochs": 8, "patience": None}


# structure that only recovery training makes usable (the projections alone lose most of a layer)
TRAINED_STRUCTURAL = [Candidate("separable-finetune", [{"kind": "compact_filters", "form": "separable"}, FINETUNE])]
def _deep_compression(sparsity: float, bits: int) -> list[dict]:
    """Han et al.'s schedule with retraining: global magnitude pruning in three rounds, each followed by
    masked fine-tuning, then k-means sharing with centroid fine-tuning, then Huffman. Fixed epochs, as above."""
    rounds = [round(sparsity * f, 4) for f in (0.65, 0.85, 1.0)]
    stages: list[dict] = []
    for i, s in enumerate(rounds):
        stages += [{"kind": "prune", "sparsity": s, "scope": "global"},
                   {**FINETUNE, "epochs": 3 if i < 2 else 6}]
    return stages + [{"kind": "share", "bits": bits, "centroid_dtype": "float16", "bias_dtype": "float16"},
                     {**FINETUNE, "epochs": 3}, HUFFMAN]


TRAINED_SIZE = [Candidate("block-circulant-16-finetune-int8", [{"kind": "structured_matrix", "block_size": 16},
                                                               FINETUNE, _q("int8", granularity="per_channel")]),
                Candidate("prune-90-finetune-kmeans-4bit-huffman", _deep_compression(0.9, 4)),
                Candidate("prune-95-finetune-kmeans-4bit-huffman", _deep_compression(0.95, 4)),
                Candidate("prune-96-finetune-kmeans-4bit-huffman", _deep_compression(0.96, 4))]


GPTQ_GROUP = 64                # the solved family's group size (one fp16 scale and a zero point per 64 weights)
GPTQ_WIDTHS = (3, 4, 5, 6)     # Linear widths the allocation chooses from
MIN_LINEAR_BITS = 3.5          # wider embedding rows only while the Linears keep this many bits on average
SIZE_MARGIN = 0.005            # aim this far below the target's bytes; the Linears' Huffman gain, not counted,
#                                adds more (MiniLM: 2.5%)
# (cold, hot) widths of embedding rows, narrowest first; the rows the calibration data looks up get `hot`
EMBEDDING_WIDTHS = ((2, 4), (2, 5), (3, 5), (3, 6), (4, 6))
# container bytes beyond the payload: per stored node (header record, part table; ~50 measured) and once (the
# origin, the pipeline, an HF config)
NODE_BYTES, CONTAINER_BYTES = 100, 4096


@dataclass(frozen=True)
class EmbeddingRows:
    rows: int
    dim: int
    looked_up: int                              # rows the calibration data looks up
    code_bits: dict                             # (bits, hot rows?) -> payload bits of their codes after Huffman


@dataclass(frozen=True)
class WeightMix:
    """The model's weights as the solved GPTQ stage stores them: what solving its width from a size target needs."""
    size_before: int                            # the upload's weight bytes (the ratio's numerator)
    linear: tuple[tuple[int, int], ...]         # (rows, cols) of each Linear weight (calibrated, mixed widths)
    embeddings: tuple[EmbeddingRows, ...]
    raw_bytes: int                              # every other state_dict entry, stored as it is
    entries: int                                # state_dict entries

    @classmethod
    def of(cls, model: torch.nn.Module, calibration: list | None, size_before: int) -> "WeightMix | None":
        """None where the family does not apply: no calibration data, no Linear layer, or weights of other
        layer kinds (conv, ...) that GPTQ would only round to nearest at one width. Embedding rows are rounded
        to nearest by GPTQ, so their codes (and what Huffman makes of them) are known here exactly."""
        from compression.methods.gptq import lookup_counts
        from compression.stage import weight_targets

        if not calibration:
            return None
        targets = weight_targets(model)
        layers = {t.module_name: model.get_submodule(t.module_name) for t in targets}
        if not any(isinstance(m, torch.nn.Linear) for m in layers.values()) or \
                not all(isinstance(m, (torch.nn.Linear, torch.nn.Embedding)) for m in layers.values()):
            return None
        embeddings = {n: m for n, m in layers.items() if isinstance(m, torch.nn.Embedding)}
        try:
            looked = lookup_counts(model, embeddings, calibration) if embeddings else {}
        except Exception:   # calibration batches the model does not take as they are
            return None
        widths = sorted({b for pair in EMBEDDING_WIDTHS for b in pair})
        rows = tuple(EmbeddingRows(m.num_embeddings, m.embedding_dim, int((looked[n] > 0).sum()),
                                   _code_bits(m.weight.detach(), looked[n] > 0, widths))
                     for n, m in embeddings.items())
        names = {t.name for t in targets}
        state = model.state_dict()
        return cls(size_before, tuple(tuple(m.weight.shape) for m in layers.values() if isinstance(m, torch.nn.Linear)),
                   rows, sum(v.numel() * v.element_size() for k, v in state.items() if k not in names), len(state))


def _code_bits(weight: torch.Tensor, hot: torch.Tensor, widths: list[int]) -> dict:
    """(bits, hot rows? None: all) -> Huffman payload bits of the rows' codes, as GPTQ rounds embeddings to
    nearest (asymmetric groups of GPTQ_GROUP along each row; never more than the plain codes)."""
    import numpy as np

    from compression.methods.groupwise import grid, to_codes
    from mpclient.format.huffman import huffman_bits

    rows, cols = weight.shape
    groups = -(-cols // GPTQ_GROUP)
    flat = torch.nn.functional.pad(weight.float(), (0, groups * GPTQ_GROUP - cols)).reshape(rows * groups, GPTQ_GROUP)
    out = {}
    for bits in widths:
        scales, zero = grid(flat, bits, False, "float16")
        codes = to_codes(flat, scales, zero, bits, False).reshape(rows, groups * GPTQ_GROUP)[:, :cols].to(torch.int64)
        for is_hot, part in ((True, codes[hot]), (False, codes[~hot]), (None, codes)):
            n = part.numel()
            out[bits, is_hot] = min(n * bits, huffman_bits(np.bincount(part.reshape(-1).numpy()))) if n else 0
    return out


def gptq_bytes(mix: WeightMix, bits_per_weight: float, cold: int, hot: int | None) -> float:
    """Container bytes of the solved GPTQ stage + Huffman (asymmetric, fp16 scales, groups of GPTQ_GROUP): the
    Linears' codes at `bits_per_weight` on average (an upper bound: the allocation never overspends, Huffman
    only re-codes where it saves), embedding rows the calibration data looks up at `hot` bits, the rest at
    `cold` (their codes as Huffman stores them), scales, zero points, raw tensors and headers."""
    def overhead(rows: int, cols: int, bits: int) -> int:   # one fp16 scale + one zero point per group
        return rows * -(-cols // GPTQ_GROUP) * (16 + (4 if bits == 4 else 8))

    total = sum(r * c * bits_per_weight + overhead(r, c, 8) for r, c in mix.linear)
    nodes = mix.entries
    for e in mix.embeddings:
        if hot is not None and 0 < e.looked_up < e.rows:   # a `rows` node: a bit per row + an affine node per side
            total += e.rows + e.code_bits[hot, True] + overhead(e.looked_up, e.dim, hot) + \
                e.code_bits[cold, False] + overhead(e.rows - e.looked_up, e.dim, cold)
            nodes += 3
        else:   # every row alike, at the embedding bits
            total += e.code_bits[cold, None] + overhead(e.rows, e.dim, cold)
    return total / 8 + mix.raw_bytes + NODE_BYTES * nodes + CONTAINER_BYTES


def budget_bytes(target: SizeTarget, size_before: int) -> float | None:
    return size_before / target.ratio if target.ratio is not None else target.max_bytes


def mixed_gptq(goal: GoalSpec, mix: WeightMix) -> list[Candidate]:
    """GPTQ at mixed Linear widths whose average (`bits_per_weight`) is solved from the size target, the
    embedding rows the calibration data looks up wider than the rest. At most two: the widest embedding rows
    that leave the Linears MIN_LINEAR_BITS on average, and the next narrower ones (whose bytes go to the
    Linears); only splits that leave the Linears between GPTQ_WIDTHS' narrowest and widest on average (a looser
    target is the ground of the int8 candidates)."""
    budget = budget_bytes(goal.target, mix.size_before)
    if budget is None:
        return []
    n_linear = sum(r * c for r, c in mix.linear)

    def solve(cold: int, hot: int | None) -> float:   # gptq_bytes is linear in bits_per_weight
        return 8 * (budget * (1 - SIZE_MARGIN) - gptq_bytes(mix, 0.0, cold, hot)) / n_linear

    if not mix.embeddings:
        widths = [(min(GPTQ_WIDTHS), None)]   # Linears only: one candidate (`embedding_bits` has nothing to do)
    elif any(0 < e.looked_up < e.rows for e in mix.embeddings):
        widths = list(EMBEDDING_WIDTHS)
    else:   # the calibration data looks up every row (or none): all rows alike
        widths = [(cold, None) for cold, _ in EMBEDDING_WIDTHS]
    fits = [(cold, hot, solve(cold, hot)) for cold, hot in widths]
    fits = [f for f in fits if min(GPTQ_WIDTHS) <= f[2] <= max(GPTQ_WIDTHS)]
    roomy = [f for f in fits if f[2] >= MIN_LINEAR_BITS]
    chosen = fits[:2] if not roomy else [f for f in fits if f[:2] < roomy[-1][:2]][-1:] + [roomy[-1]]
    out = []
    for cold, hot, bpw in chosen:
        bpw = int(bpw * 100) / 100   # floored: never over the budget
        stage = {"kind": "gptq", "bits": min(max(round(bpw), min(GPTQ_WIDTHS)), max(GPTQ_WIDTHS)),
                 "group_size": GPTQ_GROUP, "bits_per_weight": bpw, "allocation_bits": list(GPTQ_WIDTHS),
                 "embedding_bits": cold}
        name = f"gptq-mixed-{bpw:.2f}bpw-g{GPTQ_GROUP}"
        if hot is not None:
            stage["embedding_hot_bits"] = hot
            name += f"-emb{hot}/{cold}"
        elif mix.embeddings:
            name += f"-emb{cold}"
        else:
            del stage["embedding_bits"]
        out.append(Candidate(name + "-huffman", [stage, HUFFMAN], True))
    return out


def candidates_for(goal: GoalSpec, has_calibration: bool, has_train: bool = False,
                   mix: WeightMix | None = None) -> list[Candidate]:
    """`mix` (the model's weights, with calibration data): adds the GPTQ candidates solved from the size target."""
    allowed = set(goal.methods) if goal.methods else None
    if goal.target.structural:   # fewer MACs / less time: remove channels; recover by training when data allows
        pool = [Candidate(f"structured-{round(r * 100)}" + ("-finetune" if has_train else ""),
                          [{"kind": "structured_prune", "ratio": r}] + ([FINETUNE] if has_train else []))
                for r in STRUCTURAL_RATIOS] + (TRAINED_STRUCTURAL if has_train else [])
    else:
        solved = mixed_gptq(goal, mix) if has_calibration and mix is not None else []
        pool = solved + [c for c in CANDIDATES if has_calibration or not c.needs_calibration] + \
            (TRAINED_SIZE if has_train else [])
    return [c for c in pool if allowed is None or {s["kind"] for s in c.stages} <= allowed]


def split_data(data, seed: int) -> tuple[object, str, object, str]:
    """-> (selection data, its name, report data, its name). Selection never sees the report data."""
    select_role = next((r for r in ("calibration", "eval", "train") if getattr(data, r, None) is not None), None)
    if select_role is None:
        raise ValueError("no data")
    select = getattr(data, select_role)
    if select_role != "eval" and data.eval is not None:
        return select, f"the {select_role} dataset ({len(select)} samples)", data.eval, \
            f"the eval dataset ({len(data.eval)} samples)"
    order = torch.randperm(len(select), generator=torch.Generator().manual_seed(seed))
    half = len(select) // 2
    if half < 1:
        raise ValueError("the dataset needs at least 2 samples to hold one back")

    held_back = f"the other half of the {select_role} dataset ({len(select) - half} samples, held back from the search)"
    return select.take(order[:half]), f"half of the {select_role} dataset ({half} samples)", \
        select.take(order[half:]), held_back


def meets_size(target: SizeTarget, ratio: float, nbytes: int, macs_ratio: float | None = None,
               speedup: float | None = None) -> bool:
    if target.macs_ratio is not None:
        return macs_ratio is not None and macs_ratio >= target.macs_ratio
    if target.speedup is not None:
        return speedup is not None and speedup >= target.speedup
    return ratio >= target.ratio if target.ratio is not None else nbytes <= target.max_bytes


def pareto(rows: list[dict]) -> list[str]:
    """Names of measured candidates no other beats on both bytes (fewer) and metric (better)."""
    def better(a, b) -> bool:
        return a["metric_value"] >= b["metric_value"] if a["higher_is_better"] else a["metric_value"] <= b["metric_value"]

    return [r["name"] for r in rows if not any(
        o is not r and o["bytes"] <= r["bytes"] and better(o, r)
        and (o["bytes"] < r["bytes"] or o["metric_value"] != r["metric_value"]) for o in rows)]


def choose(rows: list[dict], target: SizeTarget) -> dict:
    """Meets size and constraint: the best metric. Else among those meeting size: the best metric (closest
    to the bar). Else: the smallest."""
    def key(r):   # the better metric; on a tie the smaller file
        return (r["metric_value"] if r["higher_is_better"] else -r["metric_value"], -r["bytes"])

    ok = [r for r in rows if r["meets_size"] and r["passed"]]
    sized = [r for r in rows if r["meets_size"]]
    if ok:
        return max(ok, key=key)
    if sized:
        return max(sized, key=key)
    return min(rows, key=lambda r: r["bytes"])


@dataclass
class SearchContext:
    """What measuring one candidate needs (built by the goal runner from the loaded upload)."""
    model: torch.nn.Module
    probe: object
    example_inputs: tuple
    calibration: list[tuple] | None
    selection: object                     # TensorData
    baseline: dict                        # evaluation of the upload on the selection split
    size_before: int
    write_container: object               # (path, model state) -> bytes
    data: object = None                   # JobData for training candidates (train role)
    macs_before: int | None = None


FAR_FROM_SIZE = 0.75   # a candidate over the size target's bytes by more than 1/0.75 - 1 is not evaluated


def measure(candidate: Candidate, ctx: SearchContext, goal: GoalSpec, evaluate_far: bool = False) -> dict:
    """Bytes of the real container and the constraint's metric on the selection split. A candidate far over
    a size target (FAR_FROM_SIZE) comes back with its bytes and an `error` instead, unless `evaluate_far`."""
    from compression.data.evaluation import evaluate
    from compression.job.stages import JobHooks, Run, compress
    from compression.pipeline import parse_pipeline
    from compression.stage import CompressionState

    start = time.perf_counter()
    spec = parse_pipeline({"stages": candidate.stages, "seed": goal.seed})
    with torch.no_grad():
        model = copy.deepcopy(ctx.model)
    state = CompressionState(model, {}, goal.seed, calibration=ctx.calibration, data=ctx.data,
                             example_inputs=ctx.example_inputs, probe=ctx.probe, teacher=ctx.model)
    state = compress(spec, state, Run(JobHooks()), None)
    with tempfile.TemporaryDirectory() as tmp:
        nbytes = ctx.write_container(Path(tmp) / "candidate.mpz", state, spec)
    budget = budget_bytes(goal.target, ctx.size_before)
    if not evaluate_far and budget is not None and nbytes * FAR_FROM_SIZE > budget:   # cannot be chosen
        return {"name": candidate.name, "stages": candidate.stages, "bytes": nbytes,
                "ratio": round(ctx.size_before / nbytes, 3), "far_from_size": True,
                "error": f"not evaluated: {nbytes:,} bytes, over the target's {budget:,.0f} by more than "
                         f"{1 / FAR_FROM_SIZE - 1:.0%}", "seconds": round(time.perf_counter() - start, 2)}
    with torch.no_grad():
        after = evaluate(state.model, ctx.model, ctx.selection, ctx.probe)
    judged = verdict(ctx.baseline, after, "selection", real_inputs=True, spec=goal.constraint)
    ratio = ctx.size_before / nbytes
    macs_ratio = speedup = None
    if ctx.macs_before:
        from compression.job.metrics import count_macs
        with torch.no_grad():
            macs_ratio = round(ctx.macs_before / max(count_macs(state.model, ctx.example_inputs, _call(ctx.probe)), 1), 3)
    if goal.target.speedup is not None:
        speedup = measured_speedup(ctx.model, state.model, ctx.example_inputs, goal.target.speed_batch, ctx.probe)
    return {"name": candidate.name, "stages": candidate.stages, "bytes": nbytes, "ratio": round(ratio, 3),
            **({"macs_ratio": macs_ratio} if macs_ratio is not None else {}),
            **({"speedup": speedup} if speedup is not None else {}),
            "metric": judged["metric"], "metric_value": judged.get("value", float("nan")),
            "higher_is_better": judged["metric"] != "mse", "passed": bool(judged["passed"]),
            "meets_size": meets_size(goal.target, ratio, nbytes, macs_ratio, speedup),
            "seconds": round(time.perf_counter() - start, 2)}


def measured_speedup(original: torch.nn.Module, candidate: torch.nn.Module, inputs: tuple, batch: int, probe,
                     budget_s: float = 1.0) -> float:
    """Median latency of the original / of the candidate at `batch`, timed side by side in this process (CPU)."""
    from compression.job.metrics import latency

    with torch.no_grad():
        rows = latency({"original": original, "candidate": candidate}, inputs, batch_sizes=(batch,),
                       budget_s=budget_s, call=_call(probe), gpu=False)["cpu"][f"batch_{batch}"]
    return round(rows["original"]["median_ms"] / rows["candidate"]["median_ms"], 3)


def _call(probe):
    """How count_macs runs the model: through the probe when the model takes keyword inputs (HF)."""
    from compression.job.metrics import _call as plain
    return plain if probe is None else (lambda model, inputs: probe(model, inputs))


def summary_sentence(goal: GoalSpec, final: dict, quality: dict, reported_on: str) -> str:
    target = f"{goal.target.ratio:g}x" if goal.target.ratio is not None else \
        f"{goal.target.macs_ratio:g}x fewer MACs" if goal.target.macs_ratio is not None else \
        f"{goal.target.speedup:g}x faster at batch {goal.target.speed_batch}" if goal.target.speedup is not None else \
        f"{goal.target.max_bytes:,} bytes"
    bar = (f"{quality['metric']} >= {quality['min']:g}" if "min" in quality else
           f"{quality['metric']} drop <= {quality['max_drop']:g}" if "max_drop" in quality else
           f"{quality['metric']} <= {quality.get('max')}")
    size = f"{final['macs_ratio']:.2f}x fewer MACs" if final.get("macs_ratio") is not None else \
        f"{final['speedup']:.2f}x faster" if final.get("speedup") is not None else \
        f"{final['ratio']:.2f}x ({final['bytes']:,} bytes)"
    got = f"{size} keeps {quality['metric']} {quality.get('value', 'n/a')}"
    if final["goal_met"]:
        return f"goal met: {got} on {reported_on}; asked {target} at {bar}"
    return f"goal missed: the best candidate ({final['name']}) at {got} on {reported_on}; asked {target} at {bar}"
