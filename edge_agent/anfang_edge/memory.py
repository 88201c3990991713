"""Keep the agent's heap from growing under bursts of large request bodies (glibc only; a no-op elsewhere).

glibc raises its mmap threshold every time a large block is freed (up to 32 MiB), after which bodies of a
few MiB are carved from per-thread arenas that keep the memory once freed: with a pool of workers, every
worker's arena ends up holding its own copy of the largest burst, and RSS grows with the number of threads
instead of with the bodies in flight. Pinning the threshold (``M_MMAP_THRESHOLD``, which also switches off the
dynamic adjustment) and capping the arenas (``M_ARENA_MAX``) makes a large body an mmap that is returned to
the kernel when freed. The same as ``MALLOC_MMAP_THRESHOLD_=131072 MALLOC_ARENA_MAX=2`` in the environment,
but done by the agent itself so it holds however the agent is started.

>>> limit_heap_growth()
True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import Final

__all__ = ["limit_heap_growth"]

log = logging.getLogger("anfang_edge.memory")

_M_MMAP_THRESHOLD: Final = -3
_M_ARENA_MAX: Final = -8
MMAP_THRESHOLD_BYTES: Final = 128 * 1024
ARENA_MAX: Final = 2


def limit_heap_growth() -> bool:
    """Pin glibc's mmap threshold and arena count; False when the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(_M_ARENA_MAX, ARENA_MAX))
    if not ok:
        log.debug("mallopt refused; heap growth is not limited")
    return ok
