"""ModelFormatError lives here so the format submodules can raise it without import cycles."""
from __future__ import annotations

UNSUPPORTED = 415   # not a model file we recognise
REFUSED = 422       # recognised, but refused or unusable


class ModelFormatError(Exception):
    def __init__(self, message: str, status_code: int = REFUSED):
        super().__init__(message)
        self.message = message
        self.status_code = status_code
