"""Model rows as the sandboxed child needs them (compression.job.sources.ModelSource).

Every blob comes from a row the model's owner holds: the model's own blob, and the dataset that
options.sample_dataset names (checked to belong to the same owner). User options are re-checked
against the allow-list, so rows stored before it existed cannot smuggle keys in. Rows resolve to
blob keys (`ModelRef`) inside a database session; the bytes are fetched after it, into the worker's own
scratch folder (`ModelRef.fetch`), so no path ever comes from the API or the database."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from compression.formats import ModelFormatError
from compression.formats.options import LoaderOptions, loader_options
from compression.job.sources import DatasetFile, ModelSource
from storage.blobs import BlobStore
from storage.models import Dataset, Model


@dataclass(frozen=True)
class ModelRef:
    """A model before its bytes are on this host: blob keys and checked options."""
    blob_key: str
    format: str
    options: LoaderOptions
    sample: tuple[str, str] | None = None   # the sample-input dataset: (blob key, format)

    def fetch(self, blobs: BlobStore, into: Path) -> ModelSource:
        sample = DatasetFile(blobs.fetch(self.sample[0], into), self.sample[1]) if self.sample else None
        return ModelSource(blobs.fetch(self.blob_key, into), self.format, self.options, sample)


def model_ref(session: Session, model: Model) -> ModelRef:
    """Raises LookupError with a reason for the job's error when the row cannot be used."""
    try:
        options = loader_options(model.options)
    except ModelFormatError as exc:
        raise LookupError(f"model {model.id}: {exc.message}") from None
    sample = None
    if options.sample_dataset:
        dataset = session.get(Dataset, options.sample_dataset)
        if dataset is None or dataset.owner != model.owner:
            raise LookupError(f"the sample-input dataset {options.sample_dataset} was deleted")
        sample = (dataset.blob_key, dataset.format)
    return ModelRef(model.blob_key, model.format, options, sample)


def scratch_folder(root: Path, prefix: str) -> tempfile.TemporaryDirectory:
    """A folder of this worker's own for one job or inspection (its inputs, outputs and checkpoints), removed
    after it; `root` is MODELPRESS_SCRATCH_DIR, never shared with the API or other workers."""
    root.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(dir=root, prefix=prefix)
