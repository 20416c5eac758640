"""Process lifetime: a child that ends when its parent does.

Kept apart from churn/child.py (which needs pandas and Arrow) so that `churn serve` and the
service's module, which start lean, can use it.
"""

from __future__ import annotations

import ctypes
import signal
import sys


def die_with_parent() -> None:
    """In a child process: on Linux, have the kernel send it SIGTERM when its parent dies, even by SIGKILL.

    Elsewhere nothing happens. `churn serve` gives it to the server as `preexec_fn` (between
    fork and exec, where importing is unsafe: hence the imports above), churn/child.py to its
    pool's process.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
