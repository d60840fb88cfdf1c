"""torch zip archives (torch.save, torch.jit.save, torch.export.save): classify by member names."""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from compression.formats._errors import UNSUPPORTED, ModelFormatError
from compression.formats.limits import MAX_ZIP_MEMBERS

STATE_DICT, TORCHSCRIPT, TORCH_EXPORT = "torch-state-dict", "torchscript", "torch-export"


@dataclass
class TorchArchive:
    """Member names relative to the archive's single root folder, with their sizes."""
    root: str
    members: dict[str, zipfile.ZipInfo]

    def read(self, zf: zipfile.ZipFile, name: str, limit: int) -> bytes:
        info = self.members.get(name)
        if info is None:
            raise ModelFormatError(f"archive member {name!r} is missing")
        if info.file_size > limit:
            raise ModelFormatError(f"archive member {name!r} is too large ({info.file_size} > {limit} bytes)")
        with zf.open(info) as f:
            data = f.read(limit + 1)   # never trust file_size alone for compressed members
        if len(data) > limit:
            raise ModelFormatError(f"archive member {name!r} is too large")
        return data

    def under(self, folder: str) -> list[str]:
        return [n for n in self.members if n.startswith(folder)]


def open_archive(path: Path) -> tuple[zipfile.ZipFile, TorchArchive]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelFormatError(f"not a readable zip archive: {exc}", UNSUPPORTED) from None
    infos = zf.infolist()
    if len(infos) > MAX_ZIP_MEMBERS:
        zf.close()
        raise ModelFormatError(f"archive has too many members ({len(infos)})")
    roots = {i.filename.split("/", 1)[0] for i in infos}
    if len(roots) != 1 or any("/" not in i.filename for i in infos):
        zf.close()
        raise ModelFormatError("zip archive is not a PyTorch archive (torch archives keep all members "
                               "in one top-level folder) nor a Hugging Face model folder (no config.json)",
                               UNSUPPORTED)
    root = roots.pop()
    members = {i.filename.split("/", 1)[1]: i for i in infos if not i.is_dir()}
    if any(".." in n.split("/") for n in members):
        zf.close()
        raise ModelFormatError("archive member names may not contain '..'")
    return zf, TorchArchive(root, members)


def classify(archive: TorchArchive) -> str:
    names = archive.members
    if "archive_format" in names or any(n.startswith("models/") for n in names):
        return TORCH_EXPORT
    if any(n.startswith("code/") for n in names) or "constants.pkl" in names:
        return TORCHSCRIPT
    if "data.pkl" in names:
        return STATE_DICT
    if "serialized_exported_program.json" in names:
        raise ModelFormatError("this torch.export archive uses the pre-2.8 layout; re-save it with "
                               "torch.export.save from a current PyTorch")
    raise ModelFormatError("zip archive is not a PyTorch model archive nor a Hugging Face model folder "
                           "(no config.json)", UNSUPPORTED)
