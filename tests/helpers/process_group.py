"""Processes for tests: start one in a process group of its own, wait for a line it
prints (with a deadline, never a sleep), and stop it with everything it started."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class Process:
    """A command whose stdout and stderr are read as they come (so the pipe never fills)."""

    def __init__(self, command: Sequence[str], env: Mapping[str, str], cwd: Path = ROOT):
        self.command = list(command)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._ended = False
        self.popen = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, env=dict(env), cwd=cwd, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first line so far or to come that matches ``pattern``; fails (with the output)
        when the process ends first or after ``timeout`` s."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if match := regex.search(line):
                        return match
                left = deadline - time.monotonic()
                if self._ended or left <= 0:
                    why = "ended" if self._ended else f"still running after {timeout:g} s"
                    raise AssertionError(f"{self.command} {why} without printing {pattern!r}; "
                                         f"output:\n{self.output_tail()}")
                self._changed.wait(left)

    def output_tail(self, lines: int = 60) -> str:
        return "\n".join(self.lines[-lines:])

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then the exit status; SIGKILL to the whole group after ``timeout`` s (and
        to anything of the group left behind either way)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            status = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            status = None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)  # the group is ours: start_new_session
        if status is None:
            self.popen.wait()
        self._reader.join(5.0)
        if status is None:
            raise AssertionError(f"{self.command} did not stop in {timeout:g} s; output:\n"
                                 f"{self.output_tail()}")
        return status


@contextlib.contextmanager
def running(command: Sequence[str], env: Mapping[str, str]) -> Iterator[Process]:
    """A :class:`Process`, stopped (with its group) when the block ends however it ends."""
    process = Process(command, env)
    try:
        yield process
    finally:
        with contextlib.suppress(AssertionError):  # (a test that cares checks stop() itself)
            process.stop()
