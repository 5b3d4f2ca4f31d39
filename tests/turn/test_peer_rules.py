"""deploy/'s coturn relays to the internet and to the cloud app, and to nothing else on its
host's networks; its secret is read from a file, never its command line.

Every key holder of the cloud app gets TURN credentials, so a TURN server that relays to any
address is a way into the networks of the host it runs on. Here the real ``turnserver`` runs
with a deployment's own start script and options (Compose's ``coturn`` service interpolated
from compose.env.example; the Kubernetes DaemonSet with its ConfigMaps), in a network
namespace made for the test, holding on its loopback:

- ``11.22.33.44``: coturn's listening and relay address (the TURN host's public one), and
  ``11.22.33.45`` / ``11.22.33.46``: a user's machine and another host on the internet. The
  public stand-in is an ordinary unicast block (11.0.0.0/8 is allocated, in no special-purpose
  registry, so a correct deny list must leave it alone; inside the namespace it reaches
  nothing outside). The documentation ranges (192.0.2.0/24, ...) would not do: they are
  denied, on purpose.
- the cloud app's private address that the deployment allows (Compose: the container's
  fixed address; Kubernetes: an address in the cloud pods' range), which must be reachable;
- the TURN host's own private addresses (the Docker bridge's gateway, the node's LAN
  address), 127.0.0.1 and the metadata service's 169.254.169.254, which must not be.

Only placement differs from the deployment: the listening and relay address, the pid file,
the secret's file path, and (Kubernetes) ``--external-ip`` given rather than detected.
A UDP echo service on each target counts what reaches it; a TURN client allocates with the
REST credentials the cloud app would sign, and asks coturn to relay to each.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from aioice import stun
from aioice.turn import TurnClientTcpProtocol, TurnClientUdpProtocol

from scope_relay.cloud.control.ice_servers import turn_rest_credentials

from helpers.compose import DEPLOY, coturn_command, env_file
from helpers.process_group import Process, running
from helpers.turn import namespaces_unavailable, network_namespace, run_in_namespace

pytestmark = [
    pytest.mark.turn,
    pytest.mark.skipif(shutil.which("turnserver") is None,
                       reason="coturn not installed (scripts/setup.sh --system)"),
    pytest.mark.skipif(namespaces_unavailable() is not None, reason=str(namespaces_unavailable())),
]
SECRET = "peerRulesTestSecret0123"
TURN_ADDRESS, CLIENT_ADDRESS, INTERNET_HOST = "11.22.33.44", "11.22.33.45", "11.22.33.46"
TURN_PORT, ECHO_PORT = 3478, 7000
METADATA = "169.254.169.254"
#: REQUESTED-TRANSPORT for a TCP relay (RFC 6062): the protocol number in the first byte
TCP_TRANSPORT = 6 << 24
K8S = DEPLOY / "k8s" / "base"


@dataclass
class Coturn:
    """A deployment's coturn, as a command line and environment, and what it must relay to."""

    command: list[str]
    env: dict[str, str]
    cloud: str  # the private address media must reach
    own_private: list[str]  # the TURN host's own private addresses


def compose_coturn(tmp: Path) -> Coturn:
    env = env_file() | {"SCOPE_TURN_SECRET": SECRET, "SCOPE_TURN_EXTERNAL_IP": TURN_ADDRESS,
                        "SCOPE_TURN_PORT": str(TURN_PORT)}
    command, coturn_env = coturn_command(env, tmp)
    gateway = env["SCOPE_CLOUD_MEDIA_IP"].rsplit(".", 1)[0] + ".1"  # the host on the bridge
    return Coturn(command, coturn_env, cloud=env["SCOPE_CLOUD_MEDIA_IP"],
                  own_private=[gateway, "10.0.0.5"])


def k8s_coturn(tmp: Path) -> Coturn:
    daemonset = yaml.safe_load((K8S / "coturn-daemonset.yaml").read_text())
    settings = yaml.safe_load((K8S / "configmap.yaml").read_text())["data"]
    files = yaml.safe_load((K8S / "coturn-config.yaml").read_text())["data"]
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    config_dir = tmp / "coturn-config"  # the ConfigMap's files, as the pod mounts them
    config_dir.mkdir()
    for name, text in files.items():
        (config_dir / name).write_text(text)
    secret_file = tmp / "turn-secret"
    secret_file.write_text(SECRET)
    env = {}
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
        elif ref := var["valueFrom"].get("configMapKeyRef"):
            env[var["name"]] = settings[ref["key"]]
    assert env["TURN_SECRET_FILE"].startswith(mounts["turn-secret"] + "/")
    env |= {"TURN_SECRET_FILE": str(secret_file), "TURN_RUNTIME_DIR": str(tmp)}
    command = [part.replace(mounts["coturn-config"], str(config_dir)) for part in container["command"]]
    args = [a.replace("$(TURN_REALM)", env["TURN_REALM"])
            .replace("$(TURN_ALLOWED_PEERS)", env["TURN_ALLOWED_PEERS"]) for a in container["args"]]
    args = [a for a in args if not a.startswith("--pidfile=")]  # placement: ours below
    first_allowed = env["TURN_ALLOWED_PEERS"].split("-")[0]
    cloud_pod = first_allowed.rsplit(".", 2)[0] + ".3.7"
    # the node's own address (status.hostIP) is outside the pod range
    return Coturn([*command, *args, f"--external-ip={TURN_ADDRESS}"], env,
                  cloud=cloud_pod, own_private=["10.0.0.5"])


@contextlib.contextmanager
def coturn_in(namespace: str, coturn: Coturn, tmp: Path) -> Iterator[Process]:
    """The deployment's coturn in ``namespace`` (placement options added), serving."""
    placement = [f"--listening-ip={TURN_ADDRESS}", f"--relay-ip={TURN_ADDRESS}",
                 f"--pidfile={tmp}/turnserver.pid", "--simple-log"]
    env = {"PATH": os.environ["PATH"], **coturn.env, "TURN_RUNTIME_DIR": str(tmp)}
    with running(["ip", "netns", "exec", namespace, *coturn.command, *placement], env) as process:
        process.wait_for(r"Total General servers", 30)
        yield process


# --- the probe, run inside the namespace ---------------------------------------------------

class Echo(asyncio.DatagramProtocol):
    """A UDP echo service that counts what reaches it."""

    def __init__(self) -> None:
        self.received = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received += 1
        assert self.transport is not None
        self.transport.sendto(data, addr)


class Inbox(asyncio.DatagramProtocol):
    """What the TURN allocation receives from peers."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue(maxsize=100)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))


async def turn_client(username: str, password: str) -> tuple[asyncio.BaseTransport, TurnClientUdpProtocol]:
    loop = asyncio.get_running_loop()
    return await loop.create_datagram_endpoint(
        lambda: TurnClientUdpProtocol((TURN_ADDRESS, TURN_PORT), username=username, password=password,
                                      lifetime=600, channel_refresh_time=300),
        local_addr=(CLIENT_ADDRESS, 0), remote_addr=(TURN_ADDRESS, TURN_PORT))


async def probe(allowed: list[str], denied: list[str]) -> dict[str, Any]:
    """Allocate on coturn, then ask it to relay to every target; what came of each."""
    loop = asyncio.get_running_loop()
    echoes: dict[str, Echo] = {}
    transports = []
    for address in allowed + denied:
        transport, echoes[address] = await loop.create_datagram_endpoint(
            Echo, local_addr=(address, ECHO_PORT))
        transports.append(transport)
    username, password = turn_rest_credentials(SECRET, "tenant", 86_400)
    client_transport, client = await turn_client(username, password)
    inbox = Inbox()
    client.receiver = inbox
    out: dict[str, Any] = {"refused": {}, "echoed": {}}
    try:
        out["relayed_address"] = await client.connect()
        for address in denied:
            # a channel (what aioice uses) needs a permission: coturn must refuse it ...
            try:
                await client.send_data(b"through a channel", (address, ECHO_PORT))
            except stun.TransactionFailed as exc:
                out["refused"][address] = exc.response.attributes["ERROR-CODE"][0]
            # ... and a Send indication without one must be dropped
            indication = stun.Message(message_method=stun.Method.SEND, message_class=stun.Class.INDICATION)
            indication.attributes["XOR-PEER-ADDRESS"] = (address, ECHO_PORT)
            indication.attributes["DATA"] = b"through an indication"
            client.send_stun(indication, (TURN_ADDRESS, TURN_PORT))
        for address in allowed:  # sent after the denied ones: their echoes come back through coturn
            await client.send_data(address.encode(), (address, ECHO_PORT))
            data, peer = await asyncio.wait_for(inbox.queue.get(), 10)
            out["echoed"][address] = (data.decode(), peer)
        out["reached"] = {address: echo.received for address, echo in echoes.items()}

        # TCP relaying (RFC 6062, asked for over a TCP connection) is off: refused
        tcp_transport, tcp_client = await loop.create_connection(
            lambda: TurnClientTcpProtocol((TURN_ADDRESS, TURN_PORT), username=username, password=password,
                                          lifetime=600, channel_refresh_time=300),
            host=TURN_ADDRESS, port=TURN_PORT, local_addr=(CLIENT_ADDRESS, 0))
        try:
            request = stun.Message(message_method=stun.Method.ALLOCATE, message_class=stun.Class.REQUEST)
            request.attributes["LIFETIME"] = 600
            request.attributes["REQUESTED-TRANSPORT"] = TCP_TRANSPORT
            try:
                await tcp_client.request_with_retry(request)
                out["tcp"] = "allocated"
            except stun.TransactionFailed as exc:
                out["tcp"] = exc.response.attributes["ERROR-CODE"][0]
        finally:
            tcp_transport.close()
        with contextlib.suppress(stun.TransactionFailed, ConnectionError):
            await client.delete()
    finally:
        if client.refresh_task is not None:
            client.refresh_task.cancel()
        client_transport.close()
        for transport in transports:
            transport.close()
    return out


# --- the test ------------------------------------------------------------------------------

@pytest.mark.parametrize("deployment", [compose_coturn, k8s_coturn], ids=["compose", "k8s"])
def test_coturn_relays_to_the_internet_and_the_cloud_app_only(deployment):
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.chmod(tmp, 0o755)
        coturn = deployment(tmp)
        denied = ["127.0.0.1", METADATA, *coturn.own_private]
        allowed = [INTERNET_HOST, coturn.cloud]
        addresses = [TURN_ADDRESS, CLIENT_ADDRESS, INTERNET_HOST, coturn.cloud, METADATA,
                     *coturn.own_private]
        with network_namespace(addresses) as namespace, coturn_in(namespace, coturn, tmp) as server:
            # the secret reached coturn through a file, not its command line
            assert SECRET not in Path(f"/proc/{server.popen.pid}/cmdline").read_text()
            assert Path(f"/proc/{server.popen.pid}/comm").read_text().strip() == "turnserver"
            out = run_in_namespace(namespace, lambda: asyncio.run(probe(allowed, denied)))

    assert out["relayed_address"][0] == TURN_ADDRESS  # the credentials were accepted
    # the internet and the cloud app: relayed both ways
    assert out["echoed"] == {a: (a, (a, ECHO_PORT)) for a in allowed}
    # loopback, link-local and the host's own private addresses: refused, nothing arrived
    assert out["refused"] == {a: 403 for a in denied}
    assert {a: out["reached"][a] for a in denied} == {a: 0 for a in denied}
    assert out["tcp"] == 442  # Unsupported Transport Protocol


def test_the_namespace_is_gone_afterwards():
    with network_namespace([TURN_ADDRESS]) as namespace:
        assert Path(f"/run/netns/{namespace}").exists()
        assert run_in_namespace(namespace, lambda: socket.gethostbyname("localhost")) == "127.0.0.1"
    assert not Path(f"/run/netns/{namespace}").exists()
