"""Model rows as the sandboxed child needs them (compression.job.sources.ModelSource).

Every path comes from a row the model's owner holds: the model's own blob, and the dataset that
options.sample_dataset names (checked to belong to the same owner). User options are re-checked
against the allow-list, so rows stored before it existed cannot smuggle keys in."""
from __future__ import annotations

from sqlalchemy.orm import Session

from compression.formats import ModelFormatError
from compression.formats.options import loader_options
from compression.job.sources import DatasetFile, ModelSource
from storage.blobs import BlobStore
from storage.models import Dataset, Model


def model_source(session: Session, blobs: BlobStore, model: Model) -> ModelSource:
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
        sample = DatasetFile(blobs.local_path(dataset.blob_key), dataset.format)
    return ModelSource(blobs.local_path(model.blob_key), model.format, options, sample)
