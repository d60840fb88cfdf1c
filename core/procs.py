"""Child-process helpers shared by `modelpress up` and the job sandbox."""
from __future__ import annotations

import ctypes
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Linux: deliver `sig` to this process when its parent dies, even by SIGKILL
    (for use as a Popen preexec_fn, so no orphan keeps running)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
    except OSError:
        pass
