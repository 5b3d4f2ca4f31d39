"""The codes no handler of ours raises: the HTTP errors aiohttp raises at the relay, the
cloud router's misses, and the reply that would break the 4 MiB limit. Each is a catalogue
code (protocol/errors.py) with its status, on the wire as docs/protocol.md says."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from scope_relay.cloud.app import STATE_KEY
from scope_relay.protocol.messages import MAX_MESSAGE_BYTES

from helpers.control import control_socket
from helpers.servers import cloud_server

AS_JSON = {"Content-Type": "application/json"}


def failure(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["code"]


async def test_relay_names_aiohttp_errors_from_the_catalogue(stack):
    _, relay = stack
    async with httpx.AsyncClient(base_url=relay.url, timeout=30) as http:
        assert failure(await http.get("/api/v1/no/such/route")) == (404, "NOT_FOUND")
        assert failure(await http.put("/api/v1/stats")) == (405, "METHOD_NOT_ALLOWED")
        assert failure(await http.get("/static/js/")) == (403, "FORBIDDEN")  # a directory
        oversized = await http.post("/api/v1/webrtc/offer", content=b" " * (1024 * 1024 + 1),
                                    headers=AS_JSON)
        assert failure(oversized) == (413, "REQUEST_ENTITY_TOO_LARGE")
        assert oversized.json()["error"] == "Request Entity Too Large"
        # and it keeps serving
        assert (await http.get("/api/v1/stats")).status_code == 200


async def test_cloud_router_misses(stack):
    cloud, _ = stack
    async with httpx.AsyncClient(base_url=cloud.url, timeout=30) as http:
        missing = await http.get("/api/v1/no/such/route")
        assert failure(missing) == (404, "NOT_FOUND")
        assert missing.json()["detail"] == "no API route /api/v1/no/such/route"
        assert failure(await http.put("/api/v1/stats")) == (405, "METHOD_NOT_ALLOWED")


async def _reply(ws: Any, request_id: str) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        while True:
            message = await ws.receive_json()
            if message.get("request_id") == request_id:
                return message
    return await asyncio.wait_for(read(), 30)


async def test_a_reply_over_4_mib_is_too_large_413_in_either_shape():
    async with cloud_server() as cloud, control_socket(cloud) as ws:
        async def huge(body: Any) -> dict[str, Any]:
            return {"blob": "x" * (MAX_MESSAGE_BYTES + 1)}

        cloud.app[STATE_KEY].router.add_route("/api/v1/huge", "GET", huge)
        await ws.send_json({"type": "api", "request_id": "a1", "method": "GET",
                            "path": "/api/v1/huge"})
        reply = await _reply(ws, "a1")
        assert (reply["type"], reply["status"], reply["code"]) == ("api_response", 413,
                                                                   "TOO_LARGE")
        # a request just under the limit whose echoing reply is just over it
        request = {"type": "set_user_id", "request_id": "u1", "user_id": ""}
        room = MAX_MESSAGE_BYTES - len(json.dumps(request, separators=(",", ":")))
        request["user_id"] = "u" * room
        await ws.send_str(json.dumps(request, separators=(",", ":")))
        reply = await _reply(ws, "u1")
        assert (reply["type"], reply["status"], reply["code"]) == ("error", 413, "TOO_LARGE")
        await ws.send_json({"type": "ping", "request_id": "p1"})
        assert (await _reply(ws, "p1"))["type"] == "pong"
