"""``scope-relay cloud | local | demo | new-pipeline``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import re
import signal
import socket
import sys
from typing import TYPE_CHECKING

from scope_relay.cli import new_pipeline
from scope_relay.local.cloud_link.target import ENVIRONMENT_HELP, CloudTarget, resolve_cloud_target
from scope_relay.util.serve import serve

if TYPE_CHECKING:
    from scope_relay.cloud.app import CloudConfig
    from scope_relay.local.recording.storage import RecordingLimits
    from scope_relay.local.server import RelayConfig

logger = logging.getLogger("scope_relay.cli")
#: the relay re-emits the cloud's forwarded log lines under this logger (local/cloud_link/control_socket.py)
CLOUD_ECHO_LOGGER = "scope_cloud"
#: at most this long waiting for a cloud that answers but is not ready yet (a cold start)
#: before the page URL is printed anyway; one that does not answer at all: not at all
STARTUP_WAIT = 15.0
#: at most this long for the cloud's address to answer at all before the hint and the URL
ANSWER_WAIT = 3.0
#: the two sides' default ports: a hint never sends one side onto the other's
DEFAULT_RELAY_PORT, DEFAULT_CLOUD_PORT = 8000, 8001
#: ports above the busy one tried for a hint
HINT_TRIES = 20


def _free_port_near(port: int, host: str, kind: int = socket.SOCK_STREAM) -> int | None:
    """A port above ``port`` that binds on ``host`` now, skipping both sides' defaults."""
    for candidate in range(port + 1, min(port + 1 + HINT_TRIES, 65536)):
        if candidate in (DEFAULT_RELAY_PORT, DEFAULT_CLOUD_PORT):
            continue
        try:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind) as s:
                s.bind((host, candidate))
        except OSError:
            continue
        return candidate
    return None


def _port_in_use(exc: OSError, args: argparse.Namespace) -> str | None:
    """One line for a port another program holds, naming the flag that moves ours to a port
    checked free just now (never the other side's default), or to any free one."""
    if exc.errno != errno.EADDRINUSE:
        return None
    osc = re.search(r"OSC port (\d+)", str(exc))  # local/inputs/osc.py names its port
    if osc:
        osc_port = int(osc.group(1))
        free = _free_port_near(osc_port, getattr(args, "osc_host", "127.0.0.1"),
                               socket.SOCK_DGRAM)
        return (f"OSC port {osc_port} is in use; try --osc-port "
                f"{free if free is not None else 0}")
    found = re.search(r"(\d+)\)?: address already in use", str(exc), re.IGNORECASE)
    port: int | None = int(found.group(1)) if found else getattr(args, "port", None)
    if port is None:
        return f"a port is in use: {exc.strerror}"
    host = getattr(args, "host", "127.0.0.1")
    free = _free_port_near(port, "0.0.0.0" if host in ("", "*") else host)
    hint = f"--port {free} (free now) or --port 0 (any free port)" if free else "--port 0"
    return f"port {port} is in use; try {hint}"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (no cap) or more, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):  # (NaN too)
        raise argparse.ArgumentTypeError(f"must be 0 (off) or a finite number, got {text}")
    return value


def _video_bitrate(text: str) -> int:
    from scope_relay.rtc.video_encoder import MIN_BITRATE

    value = int(text)
    if value < MIN_BITRATE:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_BITRATE}, got {value}")
    return value


def _video_codec(text: str) -> str:
    from scope_relay.rtc.video_codecs import parse_video_codec

    try:
        return parse_video_codec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--opus-bitrate", type=int, default=128_000, metavar="BPS",
                   help="Opus bitrate for audio this process sends (default 128000, "
                        "full-band 'audio' mode, stereo)")
    p.add_argument("--video-bitrate", type=_video_bitrate, default=None, metavar="BPS",
                   help="video bitrate ceiling (VP8 or H.264) for video this process sends "
                        "(default: fits the picture, e.g. 2.8 Mb/s for 1280x720 at 30 fps)")
    p.add_argument("--log-level", default=os.environ.get("SCOPE_LOG_LEVEL", "INFO"),
                   help="logging level (default INFO; env SCOPE_LOG_LEVEL)")


def _add_cloud_options(p: argparse.ArgumentParser, *, embedded: bool) -> None:
    g = p.add_argument_group("cloud app" + (" (embedded)" if embedded else ""))
    g.add_argument("--preload", nargs="*", default=[], metavar="PIPELINE_ID",
                   help="pipeline chain to load at start (e.g. test-tone)")
    g.add_argument("--cloud-playout-delay", type=float, default=0.1, metavar="S",
                   help="cloud playout delay in seconds, shared by audio and video (default 0.1)")
    g.add_argument("--max-buffer", type=float, default=6.0, metavar="S",
                   help="most media buffered ahead before the oldest is skipped (default 6)")
    g.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]",
                   help="where pipelines run (default auto: CUDA when available)")
    g.add_argument("--pipeline", action="append", default=[], metavar="SPEC",
                   help="a pipeline that is not installed: module:Class, file.py or "
                        "file.py:Class (repeatable; also SCOPE_RELAY_PIPELINES, comma-separated)")
    g.add_argument("--reload", action="store_true",
                   help="use edited plugin code at the next session start (development)")
    g.add_argument("--video-codec", type=_video_codec, default="vp8", metavar="h264|vp8",
                   help="codec the cloud sends video in (default vp8), when the relay offers "
                        "it (the relay offers both; the page gets it too where its browser "
                        "offered it). h264: constrained baseline, packetization-mode 1")
    if embedded:
        return
    g.add_argument("--stun-url", action="append", default=[], metavar="URL",
                   help="STUN server handed to clients (repeatable; none by default)")
    g.add_argument("--turn-url", action="append", default=[], metavar="URL",
                   help="TURN server handed to clients (repeatable)")
    g.add_argument("--turn-secret", default=os.environ.get("SCOPE_TURN_SECRET"),
                   help="coturn static-auth-secret: hand out expiring REST credentials "
                        "(env SCOPE_TURN_SECRET)")
    g.add_argument("--loopback-ice", action="store_true",
                   help="gather only 127.0.0.1 ICE candidates (clients on this machine only)")
    g.add_argument("--max-session-seconds", type=float, default=None, metavar="S",
                   help="end control connections after S seconds with MAX_DURATION_EXCEEDED")
    g.add_argument("--heartbeat", type=float, default=20.0, metavar="S",
                   help="WebSocket-level ping interval; peers that stop answering are dropped")
    g.add_argument("--max-sessions", type=_positive_int, default=16, metavar="N",
                   help="media sessions served at once; more offers get BUSY (default 16)")
    g.add_argument("--drain-seconds", type=float, default=600.0, metavar="S",
                   help="on SIGTERM: refuse new sessions (DRAINING), let live ones stream up "
                        "to S seconds, then close and exit 0 (default 600; SIGINT stops at once)")
    g.add_argument("--message-rate", type=_non_negative_float, default=50.0, metavar="N",
                   help="control messages a second each socket may send, sustained; over it "
                        "the socket is read more slowly, and after 5 s over it in 10 s it is "
                        "closed with RATE_LIMITED (default 50; 0: no limit)")
    g.add_argument("--message-burst", type=_positive_int, default=200, metavar="N",
                   help="control messages a socket may send at once above --message-rate "
                        "(default 200)")
    g.add_argument("--max-sockets-per-address", type=_non_negative_int, default=32, metavar="N",
                   help="control sockets one client address may hold; more get HTTP 429 "
                        "TOO_MANY_CONNECTIONS (default 32; 0: no cap; behind a proxy every "
                        "client has the proxy's address)")
    g.add_argument("--max-sockets-per-key", type=_non_negative_int, default=64, metavar="N",
                   help="control sockets one API key (without --api-key: all clients "
                        "together) may hold (default 64; 0: no cap)")


def _add_relay_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("local relay")
    g.add_argument("--host", default="127.0.0.1", help="address for the page (default 127.0.0.1)")
    g.add_argument("--port", type=int, default=8000, help="port for the page (default 8000)")
    g.add_argument("--playout-delay", type=float, default=0.07, metavar="S",
                   help="relay playout delay in seconds (default 0.07; it rises by itself "
                        "when the network needs more)")
    g.add_argument("--browser-stun-url", action="append", default=[], metavar="URL",
                   help="STUN server for the browser hop (none by default)")
    g.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="another host name the page may be opened at (e.g. this machine's LAN "
                        "address with --host 0.0.0.0); 127.0.0.1, localhost and [::1] always work")
    g.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="another origin allowed to drive the relay's API (e.g. "
                        "http://localhost:5173); other web pages are refused")
    g.add_argument("--browser-loopback-ice", action="store_true",
                   help="restrict the browser hop to 127.0.0.1 (tests; needs Chromium's "
                        "--allow-loopback-in-peer-connection)")
    g.add_argument("--osc-port", type=int, default=None, metavar="PORT",
                   help="accept OSC over UDP: /param/<name> <value> sets a parameter of the "
                        "newest page session (or the one pinned with POST /api/v1/osc), "
                        "checked against the pipeline (default: off)")
    g.add_argument("--max-viewers", type=_positive_int, default=8, metavar="N",
                   help="receive-only viewers per session, through its share link (default 8)")
    g.add_argument("--token", default=os.environ.get("SCOPE_RELAY_TOKEN") or None,
                   help="what clients on other machines must show (env SCOPE_RELAY_TOKEN); "
                        "with --host beyond loopback and no token, one is made at start and "
                        "printed once in the page URL (?token=...); prefer the variable, "
                        "since other users of this machine can read a flag with ps")
    g.add_argument("--require-token", action="store_true",
                   help="ask this machine's own clients (127.0.0.1, ::1) for the token too, "
                        "e.g. behind a reverse proxy on this machine")
    g.add_argument("--osc-host", default="127.0.0.1", metavar="ADDR",
                   help="address for OSC input (default 127.0.0.1: this machine only; "
                        "0.0.0.0 lets gear on the LAN send)")
    g.add_argument("--recordings-dir", default=None, metavar="DIR",
                   help="where recordings are written, in a folder of this relay's own that "
                        "goes when it stops (default: the system's temp dir)")
    g.add_argument("--recording-max-minutes", type=_non_negative_float, default=120.0,
                   metavar="MIN", help="a recording stops after this long (default 120; 0: no cap)")
    g.add_argument("--recording-max-gib", type=_non_negative_float, default=4.0, metavar="GIB",
                   help="a recording stops at this file size (default 4; 0: no cap)")
    g.add_argument("--recordings-total-gib", type=_non_negative_float, default=20.0,
                   metavar="GIB", help="all recordings' files together; the oldest finished "
                   "ones make room (default 20; 0: no cap)")
    g.add_argument("--recordings-reserve-gib", type=_non_negative_float, default=1.0,
                   metavar="GIB", help="free disk space kept: recording is refused below it and "
                   "stops when it is reached (default 1)")
    g.add_argument("--ndi", nargs="?", const="", default=None, metavar="NAME",
                   help="publish the newest session as an NDI source (default name "
                        "'scope-relay <pipeline>'; needs the 'ndi' extra, docs/outputs.md)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scope-relay",
        description="Real-time generative media: a GPU cloud app and a desktop relay that "
                    "re-serves its audio and video to your browser over WebRTC.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=ENVIRONMENT_HELP)
    sub = parser.add_subparsers(dest="command", required=True)

    cloud = sub.add_parser("cloud", help="run the cloud app (needs torch: pip install 'scope-relay[cloud]')",
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog=ENVIRONMENT_HELP)
    cloud.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    cloud.add_argument("--port", type=int, default=8001, help="listen port (default 8001)")
    cloud.add_argument("--api-key", default=os.environ.get("SCOPE_CLOUD_API_KEY"),
                       help="require 'Authorization: Key <key>' or 'Bearer <key>' "
                            "(env SCOPE_CLOUD_API_KEY; default: no key)")
    _add_cloud_options(cloud, embedded=False)
    _add_common(cloud)

    local = sub.add_parser("local", help="run the desktop relay and print the page URL",
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog=ENVIRONMENT_HELP)
    local.add_argument("--cloud", default=None, metavar="URL|OWNER/APP",
                       help="the cloud app to use: a ws:// or wss:// URL (e.g. "
                            "ws://127.0.0.1:8001/ws from `scope-relay cloud`), or an owner/app "
                            "id resolved against SCOPE_CLOUD_BASE_URL; stands for "
                            "SCOPE_CLOUD_WS_URL / SCOPE_CLOUD_APP_ID and wins over them (key: "
                            "SCOPE_CLOUD_API_KEY); with neither, an embedded cloud app runs here")
    _add_relay_options(local)
    _add_cloud_options(local, embedded=True)
    _add_common(local)

    demo = sub.add_parser("demo", help="embedded cloud app on 127.0.0.1 + relay + page",
                          formatter_class=argparse.RawDescriptionHelpFormatter,
                          epilog=ENVIRONMENT_HELP)
    _add_relay_options(demo)
    _add_cloud_options(demo, embedded=True)
    _add_common(demo)

    new_pipeline.add_parser(sub)
    return parser


def _signals() -> asyncio.Queue[int]:
    """SIGINT and SIGTERM as they arrive."""
    received: asyncio.Queue[int] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, received.put_nowait, sig)
    return received


async def _until_stopped() -> None:
    await _signals().get()


def _cloud_config(args: argparse.Namespace, *, embedded: bool) -> CloudConfig:
    from scope_relay.cloud.app import CloudConfig  # torch lives here: import only when needed
    from scope_relay.cloud.control.ice_servers import IceServerConfig

    if embedded:
        return CloudConfig(loopback_ice=True, preload=args.preload, opus_bitrate=args.opus_bitrate,
                           video_bitrate=args.video_bitrate, video_codec=args.video_codec,
                           playout_delay=args.cloud_playout_delay, max_buffer=args.max_buffer,
                           device=args.device, pipelines=args.pipeline, reload=args.reload)
    return CloudConfig(
        api_key=args.api_key, loopback_ice=args.loopback_ice, preload=args.preload,
        device=args.device, pipelines=args.pipeline, reload=args.reload,
        opus_bitrate=args.opus_bitrate, video_bitrate=args.video_bitrate,
        video_codec=args.video_codec,
        playout_delay=args.cloud_playout_delay, max_buffer=args.max_buffer,
        max_session_seconds=args.max_session_seconds, heartbeat=args.heartbeat or None,
        max_sessions=args.max_sessions,
        message_rate=args.message_rate or None, message_burst=args.message_burst,
        max_sockets_per_address=args.max_sockets_per_address or None,
        max_sockets_per_key=args.max_sockets_per_key or None,
        ice=IceServerConfig(stun_urls=args.stun_url, turn_urls=args.turn_url,
                            turn_secret=args.turn_secret))


async def run_cloud(args: argparse.Namespace) -> None:
    from scope_relay.cloud.app import STATE_KEY, create_app

    app = create_app(_cloud_config(args, embedded=False))
    async with serve(app, args.host, args.port) as served:
        print(f"cloud app: {served.ws_url}", flush=True)
        signals = _signals()
        if await signals.get() == signal.SIGTERM:
            # an orchestrator's stop: /ready goes 503 at once, live sessions finish (up to
            # --drain-seconds), clients are told; a second signal cuts the drain short
            drain = asyncio.ensure_future(app[STATE_KEY].drain(args.drain_seconds))
            again = asyncio.ensure_future(signals.get())
            await asyncio.wait({drain, again}, return_when=asyncio.FIRST_COMPLETED)
            for task in (drain, again):
                task.cancel()
            await asyncio.gather(drain, again, return_exceptions=True)


def _recording_limits(args: argparse.Namespace) -> RecordingLimits:
    from pathlib import Path

    from scope_relay.local.recording.storage import GIB, RecordingLimits

    return RecordingLimits(
        directory=Path(args.recordings_dir) if args.recordings_dir else None,
        max_seconds=args.recording_max_minutes * 60, max_bytes=int(args.recording_max_gib * GIB),
        total_bytes=int(args.recordings_total_gib * GIB),
        reserve_bytes=int(args.recordings_reserve_gib * GIB))


async def run_relay(args: argparse.Namespace, *, force_embedded: bool) -> None:
    from scope_relay.local.server import RELAY_KEY, RelayConfig, create_relay_app

    target = None if force_embedded else resolve_cloud_target(cloud=getattr(args, "cloud", None))
    async with contextlib.AsyncExitStack() as stack:
        if target is None:
            from scope_relay.cloud.app import create_app

            cloud = await stack.enter_async_context(
                serve(create_app(_cloud_config(args, embedded=True)), "127.0.0.1", 0))
            target = CloudTarget(cloud.ws_url, app_id=None)
            # the embedded app logs through scope_relay.cloud already; its lines forwarded
            # over the control socket (re-emitted as scope_cloud) would print each one twice
            logging.getLogger(CLOUD_ECHO_LOGGER).disabled = True
            print(f"embedded cloud app: {target.ws_url}", flush=True)
        browser_ice = [{"urls": [u]} for u in args.browser_stun_url]
        config = RelayConfig(target, browser_ice_servers=browser_ice,
                             loopback_ice=args.browser_loopback_ice,
                             playout_delay=args.playout_delay, opus_bitrate=args.opus_bitrate,
                             video_bitrate=args.video_bitrate,
                             listen_host=args.host, allow_hosts=args.allow_host,
                             allow_origins=args.allow_origin, max_viewers=args.max_viewers,
                             osc_address=None if args.osc_port is None
                             else (args.osc_host, args.osc_port),
                             token=args.token, require_token=args.require_token,
                             recordings=_recording_limits(args),
                             ndi_name=args.ndi)
        relay = await stack.enter_async_context(
            serve(create_relay_app(config), args.host, args.port))
        relay_state = relay.app[RELAY_KEY]
        # the URL is the last line of start-up: the cloud's "ready" (or its refusal) first;
        # a cloud that does not answer gets one line saying what to do, then the URL at once
        connection = relay_state.connection
        ready = False
        with contextlib.suppress(TimeoutError):  # a blackholed address: not 15 s of nothing
            ready = await asyncio.wait_for(connection.first_attempt(), ANSWER_WAIT)
        if not ready and connection.stage == "waiting for ready":  # it answered: starting
            with contextlib.suppress(TimeoutError):
                ready = await asyncio.wait_for(connection.first_attempt(),
                                               STARTUP_WAIT - ANSWER_WAIT)
        if not ready and connection.state != "refused":
            print(_no_cloud_hint(target, connection.stage), flush=True)
        if relay_state.osc is not None:
            print(f"OSC input: udp://{args.osc_host}:{relay_state.osc.port} "
                  "(/param/<name> <value>)", flush=True)
        print(f"open the page: {_page_url(relay.url, config)}", flush=True)
        await _until_stopped()


def _no_cloud_hint(target: CloudTarget, stage: str) -> str:
    """What to do when the cloud app is not ready at start-up: the relay keeps trying."""
    if stage == "waiting for ready":  # it answered: a cold start or a long preload
        return (f"the cloud app at {target.ws_url} answered but is not ready yet (starting or "
                "loading); the page says when it is")
    return (f"no cloud app answers at {target.ws_url} yet: start one with `scope-relay cloud`"
            " there, run `scope-relay demo` instead (an embedded cloud app), or point this relay"
            " elsewhere with --cloud URL; it keeps trying, and the page says when it is ready")


def _page_url(url: str, config: RelayConfig) -> str:
    """The served URL; with a token, the one URL that carries it (printed once only)."""
    if config.token is None:
        return f"{url}/"
    from scope_relay.local.access.token import LOOPBACK_LISTEN, WILDCARD_ADDRESSES, page_url

    port = int(url.rsplit(":", 1)[1])
    if not config.require_token and config.listen_host in WILDCARD_ADDRESSES | LOOPBACK_LISTEN:
        print(f"on this machine: http://127.0.0.1:{port}/ (no token needed)", flush=True)
    return page_url(config.listen_host, config.allow_hosts, port, config.token)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "new-pipeline":  # writes files; no logging, no event loop
        return new_pipeline.run(args)
    level = logging.getLevelName(args.log_level.upper())
    if not isinstance(level, int):
        print(f"scope-relay: unknown log level {args.log_level!r}", file=sys.stderr)
        return 2
    logging.basicConfig(level=level, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    for chatty in ("aioice", "aiortc"):  # every ICE check at INFO drowns what matters
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))
    try:
        if args.command == "cloud":
            asyncio.run(run_cloud(args))
        else:
            asyncio.run(run_relay(args, force_embedded=args.command == "demo"))
    except ValueError as exc:  # configuration errors (e.g. a malformed SCOPE_CLOUD_APP_ID)
        print(f"scope-relay: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # expected failures in one line; anything else keeps its traceback
        line = _port_in_use(exc, args)
        if line is None:
            raise
        print(f"scope-relay: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
