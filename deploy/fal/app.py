"""The cloud app on fal serverless: a ``fal.App`` that runs ``scope-relay cloud`` as a
subprocess on 127.0.0.1 and bridges its ``/ws`` (and HTTP routes) to it byte for byte
(``bridge.py``: a bridge, never a second implementation of the control channel).

Deploy (needs ``pip install fal`` and fal credentials)::

    SCOPE_FAL_MACHINE_TYPE=GPU-H100 SCOPE_RELAY_REQUIREMENT='scope-relay[cloud,deploy] @ git+https://...' \\
        fal deploy deploy/fal/app.py::ScopeCloud

then point the relay at it: ``SCOPE_CLOUD_APP_ID=<owner>/scope-cloud`` (resolved to
``wss://fal.run/<owner>/scope-cloud/ws``) and ``SCOPE_CLOUD_API_KEY=<fal key>``.

Run the same bridge locally, without fal (needs only ``pip install 'scope-relay[deploy]'``)::

    python deploy/fal/app.py --local --port 8080     # prints "fal bridge: ws://127.0.0.1:8080/ws"

Settings, read from the environment:

- at deploy time: ``SCOPE_FAL_MACHINE_TYPE`` (default ``GPU-H100``), ``SCOPE_RELAY_REQUIREMENT``
  (how the runner pip-installs this project, default ``scope-relay[cloud,deploy]``) and
  ``SCOPE_FAL_EXTRA_REQUIREMENTS`` (more, space-separated);
- on the runner (fal secrets) or locally: ``SCOPE_CLOUD_API_KEY`` (the key the cloud app
  requires; leave it unset on fal, whose gateway authenticates callers), ``SCOPE_CLOUD_ARGS``
  (more ``scope-relay cloud`` flags, e.g. ``--turn-url ... --max-session-seconds 3500``),
  ``SCOPE_CLOUD_LOOPBACK_ICE=1``, ``SCOPE_CLOUD_START_TIMEOUT`` / ``SCOPE_CLOUD_STOP_TIMEOUT``.
"""

import argparse
import os
import socket
import sys
import threading
from pathlib import Path
from types import FrameType

from fastapi import FastAPI, WebSocket

try:  # run as a script, the folder is on sys.path already; loaded by fal's CLI it may not be
    import bridge
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bridge

try:
    import fal
except ImportError:  # --local needs only fastapi + uvicorn
    fal = None

MACHINE_TYPE = os.environ.get("SCOPE_FAL_MACHINE_TYPE", "GPU-H100")
REQUIREMENTS = [os.environ.get("SCOPE_RELAY_REQUIREMENT", "scope-relay[cloud,deploy]"),
                *os.environ.get("SCOPE_FAL_EXTRA_REQUIREMENTS", "").split()]


if fal is not None:
    try:  # fal pickles this module by value; bridge.py must travel with it
        import cloudpickle

        cloudpickle.register_pickle_by_value(bridge)
    except (ImportError, AttributeError, ValueError):
        pass

    class ScopeCloud(fal.App):
        """One cloud app per runner, behind the bridge."""

        machine_type = MACHINE_TYPE
        requirements = REQUIREMENTS

        def setup(self) -> None:
            self.cloud = bridge.CloudProcess.from_env()
            self.cloud.start()

        def teardown(self) -> None:  # called by fal's lifespan where it has one
            self.cloud.stop()

        @fal.endpoint("/ws", is_websocket=True)
        async def ws(self, websocket: WebSocket) -> None:
            await bridge.bridge_websocket(websocket, self.cloud.ws_url or "")

        def health(self) -> dict:  # fal's GET /health: healthy while the cloud app runs
            if not getattr(self, "cloud", None) or not self.cloud.running:
                raise RuntimeError("the cloud app is not running")
            return {"status": "ok"}

        def _add_extra_routes(self, app: FastAPI) -> None:
            # fal registers its own endpoints as POST only; /ready, /metrics and /api/... are
            # added here, on the FastAPI app fal builds (fal's own /health is kept)
            super()._add_extra_routes(app)
            # /metrics and /api/v1/stats are refused while the app has no key (on fal)
            proxy = bridge.HttpProxy(lambda: self.cloud.http_url,
                                     lambda: bool(self.cloud.api_key))
            bridge.add_http_routes(app, proxy, paths=("/ready", "/metrics"))


# --- local: the same bridge under uvicorn ---------------------------------------------------
def run_local(host: str, port: int, *, loopback_ice: bool = False, log_level: str = "warning") -> int:
    """Serve the bridge (and its cloud app subprocess) on ``host:port`` until SIGINT/SIGTERM.

    The first signal drains the cloud app (SIGTERM: no new sessions, live ones finish up to
    its ``--drain-seconds``, their sockets still bridged) and exits 0 once it has; a second
    one stops at once. If the cloud app ends by itself, the bridge stops too (status 1), so
    whatever runs it can restart both."""
    import uvicorn

    cloud = bridge.CloudProcess.from_env()
    cloud.loopback_ice = cloud.loopback_ice or loopback_ice
    app = bridge.create_bridge(cloud)
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    shown = f"[{host}]" if ":" in host else host
    banner = f"fal bridge: ws://{shown}:{listener.getsockname()[1]}/ws"

    class Server(uvicorn.Server):
        draining = False
        cloud_died = False

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                threading.Thread(target=self._exit_with_cloud, daemon=True).start()
                print(banner, flush=True)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.draining or not cloud.running:
                super().handle_exit(sig, frame)
                return
            self.draining = True  # the bridge keeps serving the live sockets meanwhile
            cloud.terminate()

        def _exit_with_cloud(self) -> None:
            status = cloud.wait()
            if not self.draining:
                print(f"fal bridge: the cloud app exited (status {status}); stopping",
                      file=sys.stderr, flush=True)
                self.cloud_died = True
            self.should_exit = True

    server = Server(uvicorn.Config(app, log_level=log_level, lifespan="on",
                                   timeout_graceful_shutdown=5))
    server.run(sockets=[listener])
    return 0 if server.started and not server.cloud_died else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="scope-relay's cloud app on fal: deploy with `fal deploy deploy/fal/app.py::ScopeCloud`,"
                    " or serve the same bridge locally with --local.")
    parser.add_argument("--local", action="store_true",
                        help="serve the bridge and its cloud app here with uvicorn (no fal needed)")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="listen port (default 8080; 0: a free one)")
    parser.add_argument("--loopback-ice", action="store_true",
                        help="the cloud app gathers only 127.0.0.1 ICE candidates (tests)")
    parser.add_argument("--log-level", default="warning", help="uvicorn's log level (default warning)")
    args = parser.parse_args(argv)
    if not args.local:
        parser.print_help(sys.stderr)
        return 2
    return run_local(args.host, args.port, loopback_ice=args.loopback_ice, log_level=args.log_level)


if __name__ == "__main__":
    sys.exit(main())
