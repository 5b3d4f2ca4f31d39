"""The loss lab: the cloud app in its own network namespace, its hop impaired for real.

Topology (all on this machine; nothing is routed anywhere else)::

    root namespace (this process)              namespace losslab-<pid>-<n>
    relay + receiver on 127.0.0.1    veth      scope-relay cloud --host 10.250.X.2
    cloud hop from 10.250.X.1  <=============> 10.250.X.2 (no default route)
                                               impairment on UDP leaving / entering it

Impairment applies to UDP only (the WebRTC media, RTCP and ICE checks of the cloud hop),
never to the control WebSocket (TCP), in the cloud -> relay direction ("down") and,
optionally, relay -> cloud ("up", the camera). Two backends:

- ``netem``: ``tc`` on the namespace's veth (down) and on the root side's veth (up), a
  ``prio`` qdisc steering UDP into a ``netem`` band. Used when the kernel has
  ``sch_netem`` (``tc qdisc add ... netem`` works in a scratch namespace).
- ``nfqueue``: iptables ``-j NFQUEUE`` rules inside the namespace and a small daemon
  (this file run as a script, in the namespace) that drops with probability ``loss`` and
  holds every other packet ``delay_ms +- jitter_ms`` (uniform) before accepting it;
  with jitter, packets reorder naturally unless ``reorder=False`` (then each is held at
  least as long as the one before). Needs the ``NetfilterQueue`` package (built against
  ``libnetfilter-queue``) and a kernel with ``NETFILTER_XT_TARGET_NFQUEUE``.

Usage::

    with LossLab(loss=0.01) as lab:          # skips (pytest) / raises LabUnavailable
        lab.ws_url                            # the cloud's control socket, over the veth
        lab.set(loss=0.05, jitter_ms=20)      # mid-run, cloud -> relay
        lab.stats()                           # {"down": {"seen", "dropped", ...}, ...}
        lab.freeze_cloud(); lab.thaw_cloud(); lab.kill_cloud(); lab.start_cloud()

Everything is torn down on exit, failure included: processes stopped, the namespace (and
with it the veth pair and its rules) deleted. Needs root. ``LossLab.unavailable()`` says
why the lab cannot run here (``None`` when it can).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

NS_PREFIX = "losslab-"
CLOUD_PORT = 8001  # the namespace has its own port space
DOWN_QUEUE, UP_QUEUE = 0, 1
_counter = itertools.count()


class LabUnavailable(RuntimeError):
    """The lab cannot run on this machine (not root, no namespaces, no impairment)."""


@dataclass
class Impairment:
    """One direction of the path: a bottleneck queue, then delay, then loss.

    ``loss`` is the long-run fraction dropped; with ``burst`` > 1 it comes in bursts of
    that mean length (Gilbert-Elliott: a good state that loses nothing and a bad state that
    loses everything, left with probability ``1 / burst``), else independently.
    ``rate_kbps`` > 0 makes a bottleneck: packets are serialised at that rate through a
    drop-tail queue that holds at most ``queue_ms`` of sending time (a home uplink's
    token bucket with a one-packet bucket); what does not fit is dropped (``queue_dropped``).
    Then each packet is held ``delay_ms +- jitter_ms`` (uniform); with jitter, packets
    reorder unless ``reorder=False`` (each then leaves no earlier than the one before).
    """

    loss: float = 0.0  # probability 0..1
    delay_ms: float = 0.0
    jitter_ms: float = 0.0  # uniform +- around delay_ms
    reorder: bool = True  # False: jittered packets still leave in order
    burst: float = 0.0  # mean loss-burst length in packets (> 1: Gilbert-Elliott)
    rate_kbps: float = 0.0  # 0: no bottleneck
    queue_ms: float = 200.0  # the bottleneck's drop-tail queue, in time at ``rate_kbps``

    def active(self) -> bool:
        return (self.loss > 0 or self.delay_ms > 0 or self.jitter_ms > 0
                or self.rate_kbps > 0)


class GilbertElliott:
    """Loss in bursts: ``loss`` of packets on average, bursts of ``burst`` on average."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.bad = False

    def drop(self, loss: float, burst: float) -> bool:
        if loss <= 0:
            self.bad = False
            return False
        if burst <= 1 or loss >= 1:
            return self.rng.random() < loss
        leave_bad = 1.0 / burst
        # stationary P(bad) = enter / (enter + leave) = loss
        enter_bad = min(1.0, loss * leave_bad / (1.0 - loss))
        self.bad = self.rng.random() >= leave_bad if self.bad else self.rng.random() < enter_bad
        return self.bad


class Bottleneck:
    """A link of ``rate_kbps`` behind a drop-tail queue of ``queue_ms``: when each packet
    finishes crossing it, or ``None`` when the queue is full (the packet is dropped)."""

    def __init__(self) -> None:
        self.free_at = 0.0  # when the link has sent everything queued so far

    def admit(self, now: float, size: int, rate_kbps: float, queue_ms: float) -> float | None:
        if rate_kbps <= 0:
            self.free_at = now
            return now
        backlog = max(0.0, self.free_at - now)
        if backlog > queue_ms / 1000:
            return None
        self.free_at = max(now, self.free_at) + size * 8 / (rate_kbps * 1000)
        return self.free_at


def _run(*cmd: str, check: bool = True, ns: str | None = None) -> subprocess.CompletedProcess:
    if ns is not None:
        cmd = ("ip", "netns", "exec", ns, *cmd)
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {result.stderr.strip() or result.returncode}")
    return result


# ---------------------------------------------------------------------------------------
# availability


_availability: dict[str, Any] = {}


def _probe() -> dict[str, Any]:
    """What this machine offers: {"reason": None or why not, "netem": bool, "nfqueue": ...}."""
    if _availability:
        return _availability
    found: dict[str, Any] = {"reason": None, "netem": False, "nfqueue": None}
    if os.name != "posix" or not sys.platform.startswith("linux"):
        found["reason"] = "the loss lab needs Linux network namespaces"
    elif os.geteuid() != 0:
        found["reason"] = "the loss lab needs root (network namespaces, tc / iptables)"
    elif shutil.which("ip") is None:
        found["reason"] = "the loss lab needs iproute2 ('ip')"
    if found["reason"]:
        _availability.update(found)
        return _availability
    scratch = f"{NS_PREFIX}probe-{os.getpid()}"
    try:
        _run("ip", "netns", "add", scratch)
    except Exception as exc:
        found["reason"] = f"cannot create a network namespace: {exc}"
        _availability.update(found)
        return _availability
    try:
        _run("ip", "link", "set", "lo", "up", ns=scratch)
        if shutil.which("tc"):
            found["netem"] = _run("tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay",
                                  "1ms", check=False, ns=scratch).returncode == 0
        nfq_problem = None
        try:
            import netfilterqueue  # noqa: F401
        except ImportError as exc:
            nfq_problem = f"the NetfilterQueue package is missing ({exc})"
        if nfq_problem is None and shutil.which("iptables") is None:
            nfq_problem = "iptables is missing"
        if nfq_problem is None:
            rule = ("OUTPUT", "-o", "lo", "-p", "udp", "-j", "NFQUEUE", "--queue-num", "0",
                    "--queue-bypass")
            probe = _run("iptables", "-A", *rule, check=False, ns=scratch)
            if probe.returncode != 0:
                nfq_problem = f"iptables NFQUEUE refused: {probe.stderr.strip()}"
        found["nfqueue"] = nfq_problem  # None: usable
        if not found["netem"] and nfq_problem is not None:
            found["reason"] = f"no packet impairment here: no sch_netem, and {nfq_problem}"
    finally:
        _run("ip", "netns", "del", scratch, check=False)
    _availability.update(found)
    return _availability


# ---------------------------------------------------------------------------------------
# the lab


class LossLab:
    """A cloud app behind an impaired veth; a context manager (see the module docstring)."""

    def __init__(self, loss: float = 0.0, delay_ms: float = 0.0, jitter_ms: float = 0.0,
                 reorder: bool = True, *, upstream: Impairment | None = None,
                 backend: str | None = None, cloud_args: tuple[str, ...] = (),
                 start_timeout: float = 90.0):
        self.down = Impairment(loss, delay_ms, jitter_ms, reorder)
        #: relay -> cloud; ``None``: that direction is never touched (no queue, no qdisc)
        self.up = upstream
        self.requested_backend = backend
        self.backend: str | None = None
        self.cloud_args = cloud_args
        self.start_timeout = start_timeout
        tag = f"{os.getpid() % 100000}x{next(_counter)}"
        self.ns = f"{NS_PREFIX}{tag}"
        self.veth_root, self.veth_cloud = f"llr{tag}"[:15], f"llc{tag}"[:15]
        self.root_addr = self.cloud_addr = ""
        self.cloud: subprocess.Popen | None = None
        self.cloud_output: list[str] = []
        self.cloud_starts = 0
        self._daemon: subprocess.Popen | None = None
        self._daemon_lock = threading.Lock()
        self._created_ns = False
        self._netem_base: dict[str, int] = {}

    # -- availability --------------------------------------------------------------

    @staticmethod
    def unavailable(backend: str | None = None) -> str | None:
        """Why the lab cannot run here (``None``: it can)."""
        found = _probe()
        if found["reason"]:
            return found["reason"]
        if backend == "netem" and not found["netem"]:
            return "this kernel has no sch_netem"
        if backend == "nfqueue" and found["nfqueue"] is not None:
            return found["nfqueue"]
        return None

    @property
    def ws_url(self) -> str:
        return f"ws://{self.cloud_addr}:{CLOUD_PORT}/ws"

    @property
    def http_url(self) -> str:
        return f"http://{self.cloud_addr}:{CLOUD_PORT}"

    # -- context manager -----------------------------------------------------------

    def __enter__(self) -> LossLab:
        reason = self.unavailable(self.requested_backend)
        if reason:
            raise LabUnavailable(reason)
        found = _probe()
        self.backend = self.requested_backend or ("netem" if found["netem"] else "nfqueue")
        cleanup_stale()
        try:
            self._make_network()
            if self.backend == "netem":
                self._netem_apply()
            else:
                self._start_daemon()
            self.start_cloud()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop everything and delete the namespace; safe to call twice."""
        for proc in (self.cloud, self._daemon):
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)  # a frozen process cannot die otherwise
                    proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
        self.cloud = self._daemon = None
        if self._created_ns:
            # anything still running in it was started by this lab
            pids = _run("ip", "netns", "pids", self.ns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _run("ip", "netns", "del", self.ns, check=False)
            self._created_ns = False
        # deleting the namespace destroys the veth pair; make sure of the root end
        if self.veth_root and _run("ip", "link", "show", self.veth_root,
                                   check=False).returncode == 0:
            _run("ip", "link", "del", self.veth_root, check=False)

    # -- network -------------------------------------------------------------------

    def _free_subnet(self) -> int:
        used = set(re.findall(r"10\.250\.(\d+)\.", _run("ip", "-4", "addr").stdout))
        start = os.getpid() % 250
        for k in range(250):
            octet = (start + k) % 250
            if str(octet) not in used:
                return octet
        raise LabUnavailable("no free 10.250.X.0/30 subnet")

    def _make_network(self) -> None:
        _run("ip", "netns", "add", self.ns)
        self._created_ns = True
        octet = self._free_subnet()
        self.root_addr, self.cloud_addr = f"10.250.{octet}.1", f"10.250.{octet}.2"
        _run("ip", "link", "add", self.veth_root, "type", "veth", "peer", "name", self.veth_cloud)
        _run("ip", "link", "set", self.veth_cloud, "netns", self.ns)
        # IPv4 only: no link-local IPv6 candidates on either end
        _run("sysctl", "-qw", f"net.ipv6.conf.{self.veth_root}.disable_ipv6=1", check=False)
        _run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", check=False, ns=self.ns)
        _run("ip", "addr", "add", f"{self.root_addr}/30", "dev", self.veth_root)
        _run("ip", "link", "set", self.veth_root, "up")
        _run("ip", "link", "set", "lo", "up", ns=self.ns)
        _run("ip", "addr", "add", f"{self.cloud_addr}/30", "dev", self.veth_cloud, ns=self.ns)
        _run("ip", "link", "set", self.veth_cloud, "up", ns=self.ns)

    # -- impairment ----------------------------------------------------------------

    def set(self, loss: float | None = None, delay_ms: float | None = None,
            jitter_ms: float | None = None, reorder: bool | None = None,
            direction: str = "down", **more: float) -> None:
        """Change the impairment now (``direction`` "down": cloud -> relay, "up"); ``more``:
        any other :class:`Impairment` field (``burst``, ``rate_kbps``, ``queue_ms``)."""
        if direction == "up" and self.up is None:
            raise ValueError("this lab was made without an upstream impairment")
        target = self.down if direction == "down" else self.up
        assert target is not None
        unknown = set(more) - {"burst", "rate_kbps", "queue_ms"}
        if unknown:
            raise ValueError(f"unknown impairment fields {sorted(unknown)}")
        for name, value in (("loss", loss), ("delay_ms", delay_ms), ("jitter_ms", jitter_ms),
                            ("reorder", reorder), *more.items()):
            if value is not None:
                setattr(target, name, value)
        if self.backend == "netem":
            self._netem_apply()
        else:
            self._daemon_call({"cmd": "set", "queue": DOWN_QUEUE if direction == "down"
                               else UP_QUEUE, **asdict(target)})

    def apply(self, down: Impairment, up: Impairment | None = None) -> None:
        """Replace the whole impairment of each direction (``up`` needs an upstream lab)."""
        self.set(direction="down", **asdict(down))
        if up is not None:
            self.set(direction="up", **asdict(up))

    def clear(self) -> None:
        """No impairment in either direction."""
        self.apply(Impairment(), Impairment() if self.up is not None else None)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per direction: packets ``seen`` (and their IP ``bytes``), ``dropped`` (loss),
        ``queue_dropped`` (a full bottleneck queue), ``delayed``, ``reordered`` (released
        ahead of one queued before it), ``held`` now and ``held_max``; netem reports
        ``seen`` and ``dropped``."""
        if self.backend == "netem":
            out = {"down": self._netem_counts(self.veth_cloud, self.ns)}
            if self.up is not None:
                out["up"] = self._netem_counts(self.veth_root, None)
            return out
        reply = self._daemon_call({"cmd": "stats"})
        named = {"down": reply.get(str(DOWN_QUEUE), {})}
        if self.up is not None:
            named["up"] = reply.get(str(UP_QUEUE), {})
        return named

    # netem

    @staticmethod
    def _netem_args(imp: Impairment) -> list[str]:
        args = ["netem", "limit", "10000"]
        if imp.delay_ms or imp.jitter_ms:
            delay = max(imp.delay_ms, imp.jitter_ms)  # netem cannot delay below 0
            args += ["delay", f"{delay}ms", f"{imp.jitter_ms}ms"]
        if imp.loss and imp.burst > 1 and imp.loss < 1:
            leave = 1 / imp.burst  # Gilbert: p (good -> bad), r (bad -> good), as the daemon
            enter = min(1.0, imp.loss * leave / (1 - imp.loss))
            args += ["loss", "gemodel", f"{enter * 100}%", f"{leave * 100}%", "100%", "0%"]
        elif imp.loss:
            args += ["loss", "random", f"{imp.loss * 100}%"]
        if imp.rate_kbps:  # netem's own rate; its queue bound is in packets, not time
            args += ["rate", f"{imp.rate_kbps}kbit"]
            args[2] = str(max(2, int(imp.rate_kbps * imp.queue_ms / 8 / 1200)))
        if imp.jitter_ms and not imp.reorder and not imp.rate_kbps:
            args += ["rate", "10gbit"]  # a rate makes netem keep packets in order
        return args

    def _netem_apply(self) -> None:
        pairs: list[tuple[str, str | None, Impairment]] = [(self.veth_cloud, self.ns, self.down)]
        if self.up is not None:
            pairs.append((self.veth_root, None, self.up))
        for dev, ns, imp in pairs:
            have = _run("tc", "qdisc", "show", "dev", dev, ns=ns).stdout
            if "prio" not in have:
                # every packet into band 1:1 by default; UDP through the netem band 1:3
                _run("tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "prio", "bands",
                     "3", "priomap", *["0"] * 16, ns=ns)
                _run("tc", "qdisc", "add", "dev", dev, "parent", "1:3", "handle", "30:",
                     *self._netem_args(imp), ns=ns)
                _run("tc", "filter", "add", "dev", dev, "parent", "1:0", "protocol", "ip",
                     "prio", "1", "u32", "match", "ip", "protocol", "17", "0xff",
                     "flowid", "1:3", ns=ns)
            else:
                _run("tc", "qdisc", "change", "dev", dev, "parent", "1:3", "handle", "30:",
                     *self._netem_args(imp), ns=ns)

    @staticmethod
    def _netem_counts(dev: str, ns: str | None) -> dict[str, int]:
        text = _run("tc", "-s", "qdisc", "show", "dev", dev, ns=ns).stdout
        block = text[text.find("qdisc netem"):]
        sent = re.search(r"Sent \d+ bytes (\d+) pkt \(dropped (\d+)", block)
        if not sent:
            return {"seen": 0, "dropped": 0}
        passed, dropped = int(sent.group(1)), int(sent.group(2))
        return {"seen": passed + dropped, "dropped": dropped}

    # nfqueue daemon

    def _start_daemon(self) -> None:
        rules = [("OUTPUT", "-o", self.veth_cloud, DOWN_QUEUE)]
        if self.up is not None:
            rules.append(("INPUT", "-i", self.veth_cloud, UP_QUEUE))
        queues = [str(q) for *_, q in rules]
        self._daemon = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, sys.executable, os.path.abspath(__file__),
             "--daemon", *queues],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            bufsize=1)
        ready = self._daemon_reply(timeout=20)
        if not ready.get("ready"):
            raise RuntimeError(f"impairment daemon failed: {ready}")
        # the queues are bound before the rules exist, so no packet is ever bypassed
        for chain, flag, dev, queue in rules:
            _run("iptables", "-A", chain, flag, dev, "-p", "udp", "-j", "NFQUEUE",
                 "--queue-num", str(queue), "--queue-bypass", ns=self.ns)
        self._daemon_call({"cmd": "set", "queue": DOWN_QUEUE, **asdict(self.down)})
        if self.up is not None:
            self._daemon_call({"cmd": "set", "queue": UP_QUEUE, **asdict(self.up)})

    def _daemon_reply(self, timeout: float) -> dict[str, Any]:
        assert self._daemon is not None and self._daemon.stdout is not None
        ready, _, _ = select.select([self._daemon.stdout], [], [], timeout)
        line = self._daemon.stdout.readline() if ready else ""
        if not line:
            err = ""
            if self._daemon.poll() is not None and self._daemon.stderr is not None:
                err = self._daemon.stderr.read()
            raise RuntimeError(f"impairment daemon did not answer: {err.strip()}")
        return json.loads(line)

    def _daemon_call(self, message: dict[str, Any]) -> dict[str, Any]:
        with self._daemon_lock:
            if self._daemon is None or self._daemon.poll() is not None:
                raise RuntimeError("the impairment daemon is not running")
            assert self._daemon.stdin is not None
            self._daemon.stdin.write(json.dumps(message) + "\n")
            self._daemon.stdin.flush()
            return self._daemon_reply(timeout=10)

    # -- the cloud process ---------------------------------------------------------

    def start_cloud(self, timeout: float | None = None) -> None:
        """Start ``scope-relay cloud`` in the namespace (again, after a kill) and wait until
        it serves. Blocking: from asyncio use ``await asyncio.to_thread(lab.start_cloud)``."""
        if self.cloud is not None and self.cloud.poll() is None:
            raise RuntimeError("the cloud app is already running")
        env = {k: v for k, v in os.environ.items()
               if k not in ("SCOPE_RELAY_ICE_LOOPBACK", "SCOPE_CLOUD_API_KEY")}
        env["PYTHONUNBUFFERED"] = "1"
        self.cloud = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, sys.executable, "-m", "scope_relay.cli", "cloud",
             "--host", self.cloud_addr, "--port", str(CLOUD_PORT), *self.cloud_args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1)
        self.cloud_starts += 1
        served = threading.Event()
        proc = self.cloud

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self.cloud_output.append(line.rstrip())
                if "cloud app: ws://" in line:
                    served.set()

        threading.Thread(target=read, daemon=True, name="losslab-cloud-output").start()
        deadline = time.monotonic() + (timeout or self.start_timeout)
        while not served.wait(0.1):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(self.cloud_output[-30:])
                raise RuntimeError(f"the cloud app did not start in the namespace:\n{tail}")

    def kill_cloud(self) -> None:
        """``kill -9`` the cloud app (``start_cloud()`` brings it back on the same address)."""
        if self.cloud is not None and self.cloud.poll() is None:
            self.cloud.kill()
            self.cloud.wait(10)

    def freeze_cloud(self) -> None:
        assert self.cloud is not None
        self.cloud.send_signal(signal.SIGSTOP)

    def thaw_cloud(self) -> None:
        assert self.cloud is not None
        self.cloud.send_signal(signal.SIGCONT)


def cleanup_stale() -> None:
    """Delete lab namespaces left by processes that no longer exist (a killed test run)."""
    for line in _run("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        match = re.fullmatch(rf"{NS_PREFIX}(\d+)x\d+", name)
        if not match:
            continue
        owner = int(match.group(1))
        alive = any(int(pid) % 100000 == owner for pid in os.listdir("/proc") if pid.isdigit())
        if not alive:
            for pid in _run("ip", "netns", "pids", name, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _run("ip", "netns", "del", name, check=False)


def lab_namespaces() -> list[str]:
    """The loss-lab namespaces that exist now (for teardown checks)."""
    out = _run("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines()
            if line.strip().startswith(NS_PREFIX)]


# ---------------------------------------------------------------------------------------
# the NFQUEUE daemon: ``python losslab.py --daemon QUEUE...`` inside the namespace.
# Commands on stdin, one JSON object a line: {"cmd": "set", "queue": q, "loss": p,
# "delay_ms": d, "jitter_ms": j, "reorder": bool} and {"cmd": "stats"}; one reply a line.


def _daemon_main(queues: list[int]) -> int:
    """Give every packet its verdict without blocking the queue: a packet to delay is
    ``retain()``-ed and its callback returns at once (NetfilterQueue lets a verdict be
    given after the callback, as long as the packet object lives); the packet stays queued
    in the kernel until then. One ``select`` loop reads packets, commands and the heap of
    held packets' due times, and accepts each held packet when it is due."""
    import heapq

    from netfilterqueue import NetfilterQueue

    rng = random.Random()
    params = {q: Impairment() for q in queues}
    counts = {q: {"seen": 0, "dropped": 0, "delayed": 0, "reordered": 0, "held_max": 0,
                  "queue_dropped": 0, "held": 0, "bytes": 0} for q in queues}
    last_due = dict.fromkeys(queues, 0.0)
    losses = {q: GilbertElliott(rng) for q in queues}
    links = {q: Bottleneck() for q in queues}
    held: list[tuple[float, int, int, Any]] = []  # (due, arrival seq, queue, packet)
    released_seq = dict.fromkeys(queues, -1)
    seq = itertools.count()

    def on_packet(queue: int):
        def callback(pkt: Any) -> None:
            imp, c = params[queue], counts[queue]
            c["seen"] += 1
            c["bytes"] += pkt.get_payload_len()
            n = next(seq)
            if losses[queue].drop(imp.loss, imp.burst):
                c["dropped"] += 1
                pkt.drop()
                return
            now = time.monotonic()
            crossed = links[queue].admit(now, pkt.get_payload_len(), imp.rate_kbps,
                                         imp.queue_ms)
            if crossed is None:
                c["queue_dropped"] += 1
                pkt.drop()
                return
            hold = imp.delay_ms + (rng.uniform(-imp.jitter_ms, imp.jitter_ms)
                                   if imp.jitter_ms else 0.0)
            due = crossed + max(0.0, hold) / 1000
            if not imp.reorder or imp.rate_kbps > 0 and not imp.jitter_ms:
                due = max(due, last_due[queue])
            last_due[queue] = max(last_due[queue], due)
            if due <= now and not held:
                released_seq[queue] = n
                pkt.accept()
                return
            pkt.retain()
            c["delayed"] += 1
            c["held"] += 1
            heapq.heappush(held, (due, n, queue, pkt))
            c["held_max"] = max(c["held_max"], c["held"])
        return callback

    handles = []
    for q in queues:
        nfq = NetfilterQueue()
        nfq.bind(q, on_packet(q), max_len=8192)
        handles.append(nfq)
    fds = {nfq.get_fd(): nfq for nfq in handles}
    stdin = sys.stdin.fileno()
    print(json.dumps({"ready": True, "queues": queues}), flush=True)
    buffer = b""
    fields = set(Impairment.__dataclass_fields__)
    while True:
        timeout = max(0.0, held[0][0] - time.monotonic()) if held else 1.0
        readable, _, _ = select.select([stdin, *fds], [], [], timeout)
        for fd in readable:
            if fd == stdin:
                chunk = os.read(stdin, 65536)
                if not chunk:  # the lab closed our stdin: flush and end
                    for *_, pkt in held:
                        pkt.accept()
                    return 0
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    msg = json.loads(line)
                    if msg["cmd"] == "set":
                        q = int(msg["queue"])
                        params[q] = Impairment(**{k: v for k, v in msg.items() if k in fields})
                        print(json.dumps({"ok": True}), flush=True)
                    elif msg["cmd"] == "stats":
                        print(json.dumps({str(q): c for q, c in counts.items()}), flush=True)
                    else:
                        print(json.dumps({"error": f"unknown {msg['cmd']!r}"}), flush=True)
            else:
                fds[fd].run(block=False)
        now = time.monotonic()
        while held and held[0][0] <= now:
            _, n, q, pkt = heapq.heappop(held)
            counts[q]["held"] -= 1
            if n < released_seq[q]:
                counts[q]["reordered"] += 1
            released_seq[q] = max(released_seq[q], n)
            pkt.accept()


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--daemon":
        sys.exit(_daemon_main([int(q) for q in sys.argv[2:]] or [DOWN_QUEUE]))
    print(__doc__)
