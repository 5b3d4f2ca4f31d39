"""Giving freed memory back to the operating system once the last session has closed.

A session's peers, codecs, frames and threads free hundreds of small and mid-sized blocks
when it closes; glibc keeps most of those pages in its arenas (one per thread that
allocated), so a process that served eight sessions stayed ~100-160 MB above its idle size
with none open. ``malloc_trim`` returns the free pages of every arena. It is cheap and
called only when the last session has gone; elsewhere than glibc it does nothing.

The ``gc.collect()`` before it is not cheap: it holds the event loop ~0.1 s in a test
process and ~0.3 s with three million more objects on the heap. Run the moment the last
session closed, it landed on the start of the next one (a page reload; test_startup's
back-to-back trials, issue 27), so :class:`IdleRelease` runs it only once the app has had
no session for :data:`RELEASE_AFTER_IDLE` seconds, and a session starting meanwhile
calls it off.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import sys

_libc = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        _libc = None


def release_freed_memory() -> bool:
    """Collect cycles, then give free heap pages back to the OS (True if it could)."""
    gc.collect()
    if _libc is None:
        return False
    _libc.malloc_trim(0)
    return True


#: seconds without a session before freed memory is given back (read when the last
#: session goes): longer than a page reload takes to start its next session
RELEASE_AFTER_IDLE = 5.0


class IdleRelease:
    """Gives freed memory back once the app has been without a session a while (see the
    module's docstring): :meth:`idle` when the last session has gone, :meth:`busy` when
    one starts, :meth:`close` with the app (nothing left scheduled)."""

    def __init__(self) -> None:
        self._handle: asyncio.TimerHandle | None = None
        #: how often memory was given back
        self.releases = 0

    @property
    def pending(self) -> bool:
        return self._handle is not None

    def idle(self) -> None:
        """No session left: release after :data:`RELEASE_AFTER_IDLE` s (from now)."""
        self.busy()
        self._handle = asyncio.get_running_loop().call_later(RELEASE_AFTER_IDLE, self._release)

    def busy(self) -> None:
        """A session starts: the pending release, if any, is called off."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    close = busy

    def _release(self) -> None:
        self._handle = None
        self.releases += 1
        release_freed_memory()
