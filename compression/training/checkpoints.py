"""Durable training checkpoints for a job: one file per training stage, replaced atomically,
so a job restarted on another worker (same checkpoint folder) resumes from its last epoch."""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


class CheckpointFolder:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.resumed: dict[str, int] = {}   # checkpoint name -> bytes read back (what a restarted job reused)

    def _path(self, name: str) -> Path:
        return self.folder / (_SAFE.sub("_", name) + ".safetensors")

    def save(self, name: str, payload: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path(name))   # a crash mid-write leaves the previous epoch's file intact
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load(self, name: str) -> bytes | None:
        path = self._path(name)
        if not path.is_file():
            return None
        payload = path.read_bytes()
        self.resumed[name] = len(payload)
        return payload
