"""ModelFormatError lives here so the format submodules can raise it without import cycles."""
from __future__ import annotations

from compression.errors import ModelpressError

UNSUPPORTED = 415   # not a model file we recognise
REFUSED = 422       # recognised, but refused or unusable


class ModelFormatError(ModelpressError):
    """The upload is not a model we can load (415) or is refused (422)."""

    def __init__(self, message: str, status_code: int = REFUSED):
        super().__init__(message, status_code)
