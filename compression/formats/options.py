"""Loader options: what a user may say about an upload, as an allow-list.

Users give `UploadOptions` (the `options` JSON of POST /v1/models); the API adds the `architecture`
and `config` form fields to make the stored `LoaderOptions`. Anything the worker resolves (file paths
of sample datasets and teachers, test switches) travels apart, in `compression.job.sources`; no key of
user input can reach it.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from compression.formats._errors import ModelFormatError

Dim = Annotated[int, Field(gt=0)]
Shape = Annotated[list[Dim], Field(min_length=1, max_length=8)]
InputDtype = Literal["float32", "float16", "bfloat16", "float64", "int64", "int32"]

# Keys earlier versions let through and the worker once read; named in the error so nobody retries them.
RESERVED_KEYS = frozenset({"sample_inputs_file", "teacher_file", "measure_latency"})


class UploadOptions(BaseModel):
    """The `options` JSON object of a model upload."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    input_shape: Shape | None = Field(None, description="[batch, ...] of the single input, for programs "
                                                         "(TorchScript, .pt2, ONNX) whose inputs are not known")
    input_shapes: dict[str, Shape] | None = Field(None, description="ONNX: {input name: [batch, ...]}")
    input_values: dict[Annotated[str, Field(min_length=1, max_length=100)], int | float | bool] | None = Field(
        None, max_length=32,
        description='{name: value} for scalar inputs: non-tensor arguments of a TorchScript forward (e.g. '
                    '{"sr": 16000}) and ONNX inputs that take one value (filled into the input\'s shape)')
    input_dtype: InputDtype | None = Field(None, description="dtype of the random example input (default float32)")
    sample_dataset: str | None = Field(None, pattern=r"^ds_[A-Za-z0-9_-]{1,64}$",
                                       description="an uploaded tensor dataset whose first samples are the "
                                                   "example inputs")


class LoaderOptions(UploadOptions):
    """As stored on the model row: the upload options plus the `architecture` / `config` form fields."""
    architecture: str | None = Field(None, max_length=100)
    hf_config: dict | None = None


def _explain(exc: ValidationError, where: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden" and err["loc"][0] in RESERVED_KEYS:
            parts.append(f"{where}.{loc} is reserved for the worker and cannot be given")
        elif err["type"] == "extra_forbidden":
            parts.append(f"{where}.{loc} is not an option (allowed: {', '.join(UploadOptions.model_fields)})")
        else:
            parts.append(f"{where}.{loc}: {err['msg']}")
    return "; ".join(parts)


def parse_upload_options(raw: object) -> UploadOptions:
    """The user's options JSON, or a ModelFormatError (422) naming each bad key."""
    if not isinstance(raw, dict):
        raise ModelFormatError("'options' must be a JSON object")
    try:
        return UploadOptions.model_validate(raw)
    except ValidationError as exc:
        raise ModelFormatError(_explain(exc, "options")) from None


def loader_options(raw: LoaderOptions | dict | None, *, where: str = "model options",
                   fix: str = "; upload the model again") -> LoaderOptions:
    """Stored options re-checked where they are used: rows written before the allow-list existed may
    hold anything, and the worker must not act on a key it does not know."""
    if isinstance(raw, LoaderOptions):
        return raw
    try:
        return LoaderOptions.model_validate(raw or {})
    except ValidationError as exc:
        raise ModelFormatError(_explain(exc, where) + fix) from None


def as_dict(options: LoaderOptions | dict | None) -> dict:
    """The loaders' view: only the keys that were given."""
    return loader_options(options).model_dump(exclude_none=True)
