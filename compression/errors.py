"""The one error base of the library. Every error a user can fix derives from `ModelpressError`: its
`message` says what was wrong and what to send instead, its `status_code` is what the API answers
when it raises one (mapped once, in api/app.py). Anything else is a service fault."""
from __future__ import annotations


class ModelpressError(Exception):
    status_code = 422

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code

    def __reduce__(self):   # crosses process boundaries (dataset checks, the job sandbox) with its status
        return type(self), (self.message, self.__dict__.get("status_code"))


class CompressionError(ModelpressError):
    """A job cannot go on: the message is shown to the job's owner."""


class JobCancelled(Exception):
    """The job's owner asked to stop; raised at the next cancellation check."""
