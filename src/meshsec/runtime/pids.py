"""Is a process id alive? The one answer for every shell that keeps pids in state files
(``meshsec up``'s runtime refusing a second copy, the operator CLI spotting a stale state.json)."""

from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """True when ``pid`` names a live process, ours or another user's (EPERM: it exists).

    ``pid <= 0`` is never alive: ``kill(0, 0)`` and ``kill(-1, 0)`` probe process *groups* and
    succeed, which would make a corrupt state file's pid look like a running mesh.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
