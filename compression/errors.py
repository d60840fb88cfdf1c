"""Exceptions shared by the library (kept here so methods need not import job.py)."""
from __future__ import annotations


class CompressionError(Exception):
    """A user-facing failure: the message is shown to the job's owner."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class JobCancelled(Exception):
    """The job's owner asked to stop; raised at the next cancellation check."""
