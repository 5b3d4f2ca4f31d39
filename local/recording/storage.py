"""Where recordings are written, and how much of the disk they may take.

Each relay writes into one folder of its own, ``scope-relay-recordings-<random>`` under
``--recordings-dir`` (default: the system's temp dir), removed when the relay closes. The
folder holds an ``owner.json`` marker naming the relay's process (pid, host, the process's
start time where the OS tells it), so a relay that starts can remove the folders of relays
that were killed (``kill -9``, a crash, a power cut) and only those: a folder without a
marker, of another host, or whose owner is still running is never touched. A reused pid
(same pid, another start time) counts as gone; where the start time cannot be read, a
running pid keeps the folder (a folder left behind, never one removed from under a relay).

The limits: a laptop keeps running on the defaults (2 h and 4 GiB per recording, 20 GiB for
the folder, 1 GiB of the disk left free).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

PREFIX = "scope-relay-recordings-"
MARKER = "owner.json"
GIB = 1024 ** 3


@dataclass
class RecordingLimits:
    """Caps on recordings; 0 turns a cap off (not the free-space check at start)."""

    #: the parent of the relay's own recordings folder; None: the system's temp dir
    directory: Path | None = None
    #: one recording ends (``stopped``) after this many seconds of media
    max_seconds: float = 2 * 3600.0
    #: ... or once its file is this large
    max_bytes: int = 4 * GIB
    #: every file in the folder together (finished ones count; the oldest make room)
    total_bytes: int = 20 * GIB
    #: free space the disk keeps: a recording is refused below it and stops when it is reached
    reserve_bytes: int = 1 * GIB
    #: how often (s) a recording's worker checks its size, duration and the free space
    check_interval: float = 2.0

    def base(self) -> Path:
        return Path(self.directory) if self.directory is not None else Path(tempfile.gettempdir())


def _start_time(pid: int) -> str | None:
    """When the process started, in clock ticks since boot (Linux), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) "
    return fields[19] if len(fields) > 19 else None  # field 22 of the whole line


def process_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (never signals it)."""
    if pid <= 0:
        return False
    if sys.platform == "win32":  # os.kill(pid, 0) would send it Ctrl-C there
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        try:
            kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        finally:
            kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: it exists
        return True
    return True


def owner_marker(pid: int) -> dict[str, object]:
    """What ``owner.json`` says about process ``pid`` (tests write one for other processes)."""
    return {"pid": pid, "host": socket.gethostname(), "started": _start_time(pid)}


def owner_gone(marker: dict[str, object]) -> bool:
    """True only when the marker's process is surely no longer running on this host."""
    pid = marker.get("pid")
    if marker.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    if pid == os.getpid():
        return False  # this process: one of its relays (tests run several) owns it
    if not process_alive(pid):
        return True
    started = marker.get("started")
    now = _start_time(pid)
    return started is not None and now is not None and now != started  # the pid was reused


def remove_stale_folders(base: Path) -> list[Path]:
    """Remove the recordings folders under ``base`` whose relay is gone; the ones removed."""
    removed: list[Path] = []
    try:
        candidates = [p for p in base.glob(f"{PREFIX}*") if p.is_dir() and not p.is_symlink()]
    except OSError as exc:
        logger.warning("recordings: cannot look for stale folders in %s: %s", base, exc)
        return removed
    for folder in candidates:
        try:
            marker = json.loads((folder / MARKER).read_text())
        except (OSError, ValueError):
            continue  # no marker (another program's, an older relay's, one being made)
        if not isinstance(marker, dict) or not owner_gone(marker):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            removed.append(folder)
            logger.info("recordings: removed %s, left by a relay that is gone (pid %s)",
                        folder, marker.get("pid"))
    return removed


def make_folder(base: Path) -> Path:
    """This relay's own folder, with its marker (written before any file goes in)."""
    base.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=PREFIX, dir=base))
    (folder / MARKER).write_text(json.dumps(owner_marker(os.getpid())))
    return folder


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free
