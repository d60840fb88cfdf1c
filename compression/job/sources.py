"""Files a job reads, as the worker resolved them from rows the job's tenant owns.

These travel apart from anything a user typed: the worker builds them from database rows (blob
keys, never user strings), the sandbox protocol carries them under their own keys, and user options
(`compression.formats.options`) have no field that could name a path.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from compression.formats.options import LoaderOptions, loader_options


@dataclass(frozen=True)
class DatasetFile:
    path: Path
    format: str

    def to_json(self) -> list:
        return [str(self.path), self.format]

    @classmethod
    def from_json(cls, value: list | None) -> "DatasetFile | None":
        return None if value is None else cls(Path(value[0]), str(value[1]))


@dataclass(frozen=True)
class ModelSource:
    """An uploaded model: its blob, format, checked loader options, and the sample-input dataset
    (options.sample_dataset) resolved to its file."""
    path: Path
    format: str
    options: LoaderOptions = field(default_factory=LoaderOptions)
    sample_inputs: DatasetFile | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        object.__setattr__(self, "options", loader_options(self.options))

    def to_json(self) -> dict:
        return {"path": str(self.path), "format": self.format,
                "options": self.options.model_dump(mode="json", exclude_none=True),
                "sample_inputs": self.sample_inputs.to_json() if self.sample_inputs else None}

    @classmethod
    def from_json(cls, value: dict | None) -> "ModelSource | None":
        if value is None:
            return None
        return cls(Path(value["path"]), value["format"], loader_options(value.get("options")),
                   DatasetFile.from_json(value.get("sample_inputs")))
