"""Loader options as the sandboxed child needs them: a model uploaded with options.sample_dataset
(an id) gets the dataset's file, so its first samples become the example inputs."""
from __future__ import annotations

from sqlalchemy.orm import Session

from storage.blobs import BlobStore
from storage.models import Dataset, Model


def resolved_options(session: Session, blobs: BlobStore, model: Model) -> dict:
    options = dict(model.options or {})
    dataset_id = options.get("sample_dataset")
    if dataset_id:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None or dataset.owner != model.owner:
            raise LookupError(f"the sample-input dataset {dataset_id} was deleted")
        options["sample_inputs_file"] = [str(blobs.local_path(dataset.blob_key)), dataset.format]
    return options
