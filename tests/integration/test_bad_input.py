"""Bad input at the boundaries gets a clear error and the same connection keeps serving."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from scope_relay.cloud.app import STATE_KEY
from scope_relay.cloud.builtin_pipelines import signals as builtin
from scope_relay.local.server import RELAY_KEY

from helpers.control import control_socket
from helpers.peers import BrowserPeer, beep_frequencies, connected
from helpers.servers import cloud_server


async def reply_for(ws, request_id: str | None = None, timeout: float = 5.0) -> dict:
    """Next message (skipping logs) — matching ``request_id`` when given."""
    async def read():
        while True:
            msg = await ws.receive_json()
            if msg["type"] == "logs":
                continue
            if request_id is None or msg.get("request_id") == request_id:
                return msg
    return await asyncio.wait_for(read(), timeout)


#: passes the cheap checks; the chain is looked up before aiortc ever parses it
SKELETON_SDP = ("v=0\r\na=ice-ufrag:u\r\na=ice-pwd:p\r\na=fingerprint:sha-256 00\r\n"
                "m=audio 9 x\r\n")


async def assert_still_serving(ws):
    await ws.send_json({"type": "ping", "request_id": "alive"})
    reply = await reply_for(ws, "alive")
    assert reply["type"] == "pong"


async def test_malformed_json(control):
    await control.send_str("{not json")
    reply = await reply_for(control)
    assert reply["type"] == "error" and reply["code"] == "INVALID_MESSAGE"
    assert "JSON" in reply["error"]
    await assert_still_serving(control)


@pytest.mark.parametrize("payload,code", [
    ({"type": "launch_missiles", "request_id": "u1"}, "UNKNOWN_TYPE"),
    ({"request_id": "u2"}, "INVALID_MESSAGE"),
    ([1, 2, 3], "INVALID_MESSAGE"),
    ({"type": "offer", "request_id": "u3", "sdp": 42}, "INVALID_MESSAGE"),
    ({"type": "api", "request_id": "u4", "method": "GET"}, "INVALID_MESSAGE"),
    ({"type": "icecandidate", "request_id": "u5", "sessionId": "nope",
      "candidate": None}, "UNKNOWN_SESSION"),
])
async def test_invalid_messages(control, payload, code):
    await control.send_str(json.dumps(payload))
    reply = await reply_for(control)
    # a refused api call answers as api_response (what Scope's client reads), others as error
    is_api = isinstance(payload, dict) and payload.get("type") == "api"
    expected = "api_response" if is_api else "error"
    assert reply["type"] == expected and reply["code"] == code, reply
    assert reply["error"] and reply["status"] >= 400
    if isinstance(payload, dict) and "request_id" in payload:
        assert reply["request_id"] == payload["request_id"]
    await assert_still_serving(control)


async def test_offer_with_garbage_sdp(control):
    await control.send_json({"type": "offer", "request_id": "g1", "sdp": "hello there",
                             "sdp_type": "offer",
                             "initialParameters": {"pipeline_ids": ["test-tone"]}})
    reply = await reply_for(control, "g1")
    assert reply["type"] == "error" and reply["code"] == "INVALID_SDP"
    await control.send_json({"type": "offer", "request_id": "g2",
                             "sdp": "v=0\r\nm=audio 9 garbage\r\nnonsense\r\n",
                             "initialParameters": {"pipeline_ids": ["test-tone"]}})
    reply = await reply_for(control, "g2")
    assert reply["type"] == "error" and reply["code"] == "INVALID_SDP", reply
    await assert_still_serving(control)


async def test_unknown_pipeline(control):
    await control.send_json({"type": "offer", "request_id": "p1", "sdp": SKELETON_SDP,
                             "initialParameters": {"pipeline_ids": ["no-such-model"]}})
    reply = await reply_for(control, "p1")
    assert reply["type"] == "error" and reply["code"] == "UNKNOWN_PIPELINE"
    assert "no-such-model" in reply["error"]
    await control.send_json({"type": "api", "request_id": "p2", "method": "POST",
                             "path": "/api/v1/pipeline/load", "body": {"pipeline_ids": ["nope"]}})
    reply = await reply_for(control, "p2")
    assert reply["type"] == "api_response" and reply["status"] == 404
    assert "nope" in reply["data"]["detail"] and reply["code"] == "UNKNOWN_PIPELINE"
    await assert_still_serving(control)


async def test_oversized_message(control):
    await control.send_str(json.dumps({"type": "ping", "pad": "x" * (4 * 1024 * 1024 + 10)}))
    reply = await reply_for(control)
    assert reply["type"] == "error" and "exceeds" in reply["error"]
    await assert_still_serving(control)


async def test_relay_rest_bad_input(stack):
    cloud, relay = stack
    async with httpx.AsyncClient(base_url=relay.url, timeout=30) as http:
        as_json = {"Content-Type": "application/json"}  # what it claims; what it is, is not
        r = await http.post("/api/v1/webrtc/offer", content=b"{nope", headers=as_json)
        assert r.status_code == 400 and r.json()["code"] == "INVALID_MESSAGE"
        for url in (f"{relay.url}/api/v1/webrtc/offer", f"{relay.url}/api/v1/pipeline/load",
                    f"{cloud.url}/api/v1/pipeline/load"):
            for body in (b"[" * 100_000, b"\xff\xfe not utf-8"):  # too deep; not text
                r = await http.post(url, content=body, headers=as_json)
                assert r.status_code == 400 and r.json()["code"] == "INVALID_MESSAGE", r.text
        r = await http.post("/api/v1/webrtc/offer", json={
            "sdp": "garbage", "type": "offer",
            "initialParameters": {"pipeline_ids": ["test-tone"]}})
        assert r.status_code == 400 and r.json()["code"] == "INVALID_SDP"
        r = await http.post("/api/v1/webrtc/offer", json={
            "sdp": SKELETON_SDP, "initialParameters": {"pipeline_ids": ["zzz"]}})
        assert r.status_code == 404 and "zzz" in r.json()["error"]
        assert r.json()["code"] == "UNKNOWN_PIPELINE"  # the cloud's code, kept
        r = await http.post("/api/v1/pipeline/load", json={"pipeline_ids": ["zzz"]})
        assert r.status_code == 404 and r.json()["code"] == "UNKNOWN_PIPELINE"
        assert "zzz" in r.json()["error"] and "zzz" in r.json()["detail"]
        r = await http.get("/api/v1/no/such/route")
        assert r.status_code == 404 and r.json()["error"] and r.json()["code"]
        r = await http.put("/api/v1/stats")  # a relay route, wrong method
        assert r.status_code == 405 and r.json()["code"] == "METHOD_NOT_ALLOWED"
        assert "GET" in r.headers["Allow"]
        r = await http.patch("/api/v1/webrtc/offer/unknown", json={"candidates": []})
        assert r.status_code == 404 and r.json()["code"] == "UNKNOWN_SESSION"
        r = await http.get("/api/v1/pipelines")
        assert r.status_code == 200
        ids = {p["id"] for p in r.json()["pipelines"]}
        assert ids >= {"test-tone", "av-sync", "passthrough", "bursty-av"}
        r = await http.get("/api/v1/cloud/status")
        assert r.json()["state"] == "ready"


async def test_trickled_candidates_good_and_bad(stack):
    _, relay = stack
    async with connected(relay.url, {"pipeline_ids": ["test-tone"]}, video=False) as peer:
        path = f"/api/v1/webrtc/offer/{peer.session_id}"
        good = {"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host",
                "sdpMid": "0", "sdpMLineIndex": 0}
        async with httpx.AsyncClient(base_url=relay.url, timeout=30) as http:
            r = await http.patch(path, json={"candidates": [good, {"candidate": ""}]})
            assert r.status_code == 200 and r.json() == {"added": 1}
            r = await http.patch(path, json={"candidates": [{"candidate": "candidate:zzz"}]})
            assert r.status_code == 400 and "candidate" in r.json()["error"]
            r = await http.patch(path, json={"candidates": "nope"})
            assert r.status_code == 400
            no_mid = {"candidate": good["candidate"].replace("50000", "50001")}
            r = await http.patch(path, json={"candidates": [no_mid]})
            assert r.status_code == 400 and "sdpMid" in r.json()["error"]
            r = await http.patch(path, json={"candidates": [{**no_mid, "sdpMid": 0}]})
            assert r.status_code == 400 and "sdpMid" in r.json()["error"]
            stats = (await http.get("/api/v1/stats")).json()["sessions"]
            assert [s["session"] for s in stats] == [peer.session_id[:8]]  # still serving
        await peer.wait_audio_frames(10)


async def test_cloud_icecandidate_good_and_bad(control):
    # an unknown session is an error, not a crash (covered above); a known one:
    peer = BrowserPeer(video=False)
    await peer.pc.setLocalDescription(await peer.pc.createOffer())
    await control.send_json({"type": "offer", "request_id": "o1",
                             "sdp": peer.pc.localDescription.sdp,
                             "initialParameters": {"pipeline_ids": ["test-tone"]}})
    answer = await reply_for(control, "o1", timeout=20)
    session_id = answer["sessionId"]
    await control.send_json({"type": "icecandidate", "request_id": "c1", "sessionId": session_id,
                             "candidate": {"candidate": "candidate:zzz", "sdpMid": "0",
                                           "sdpMLineIndex": 0}})
    reply = await reply_for(control, "c1")
    assert reply["type"] == "error" and reply["code"] == "INVALID_MESSAGE"
    await control.send_json({"type": "icecandidate", "request_id": "c1b", "sessionId": session_id,
                             "candidate": {"candidate": "candidate:1 1 udp 2130706431 "
                                                        "127.0.0.1 50000 typ host"}})
    reply = await reply_for(control, "c1b")
    assert reply["type"] == "error" and "sdpMid" in reply["error"]
    await control.send_json({"type": "icecandidate", "request_id": "c2", "sessionId": session_id,
                             "candidate": None})
    assert (await reply_for(control, "c2"))["type"] == "icecandidate_ack"
    await assert_still_serving(control)
    await peer.close()


async def test_slow_request_neither_blocks_others_nor_hangs():
    """A slow call (a model install) runs beside offers and pings, and times out cleanly."""
    async with cloud_server(request_timeout=1.0) as cloud:
        never = asyncio.Event()

        async def slow(body):
            await never.wait()
            return {}

        cloud.app[STATE_KEY].router.add_route("/api/v1/slow", "GET", slow)
        async with control_socket(cloud) as ws:
            await ws.send_json({"type": "api", "request_id": "slow", "method": "GET",
                                "path": "/api/v1/slow"})
            await ws.send_json({"type": "ping", "request_id": "quick"})
            first = await reply_for(ws)
            assert first["request_id"] == "quick"  # answered while the slow call is pending
            timed_out = await reply_for(ws, "slow", timeout=5)
            assert timed_out["type"] == "api_response" and timed_out["status"] == 504
            assert timed_out["code"] == "TIMEOUT" and "1 s" in timed_out["data"]["detail"]
            await assert_still_serving(ws)
            never.set()


async def test_bad_parameters_messages_leave_both_hops_running(stack):
    """Data-channel garbage: text nested too deep for json, binary, non-objects and values
    of the wrong type. An exception escaping aiortc's message handler would close the peer
    connection, and one in the pipeline's worker would end generation silently."""
    cloud, relay = stack
    async with connected(relay.url, {"pipeline_ids": ["test-tone"], "interval": 0.5,
                                     "duration": 0.3}, video=False) as peer:
        await peer.wait_audio_frames(10)
        (session,) = relay.app[RELAY_KEY].sessions.values()
        (cloud_session,) = cloud.app[STATE_KEY].sessions.values()
        for garbage in ["[" * 5000, b"\x00binary", "[1, 2]", "nope"]:
            peer.channel.send(garbage)
        # straight onto the cloud hop too (the relay forwards only JSON objects)
        session.cloud.channel.send("[" * 5000)
        session.cloud.channel.send(b"\x00binary")
        for update in [{"volume": 10 ** 400}, {"interval": None}, {"duration": "x"},
                       {"pipeline_ids": ["av-sync"]}, {"frequency": 1500}]:
            await peer.send_parameters(update)
        # Both channels are ordered: once 1500 Hz is heard, everything before it was judged.
        mark = len(peer.received.audio)
        await peer.wait_audio_frames(mark + 75)
        beeps = beep_frequencies(peer.received.audio[mark + 25:])
        assert beeps and beeps[-1] == pytest.approx(1500, rel=0.01)

        assert session.bad_parameter_messages == 4
        stats = cloud_session.stats()
        assert stats["bad_parameter_messages"] == 2 and stats["rejected_parameters"] == 3
        assert stats["pipeline_errors"] == 0 and cloud_session.runner.running
        assert session.pc.connectionState == "connected"
        assert session.cloud.pc.connectionState == "connected" and session.cloud_reconnects == 0
        assert "pipeline_ids" not in session.parameter_state  # the chain stays negotiated


@pytest.mark.parametrize("value", [10 ** 400, float("nan"), None, "1", True, [1]])
def test_number_parameters_refuse_what_is_not_a_finite_number(value):
    spec = builtin.TestTone.params["frequency"]
    with pytest.raises(ValueError, match="frequency must be a finite number"):
        spec.coerce("frequency", value)


@pytest.mark.parametrize("weight", [None, float("inf"), "1", [1.0], 10 ** 400])
def test_prompt_weights_must_be_finite_numbers(weight):
    with pytest.raises(ValueError, match="finite weights"):
        builtin.BurstyAv.params["prompts"].coerce("prompts", [{"text": "a", "weight": weight}])


def without(sdp: str, prefix: str) -> str:
    return "\r\n".join(line for line in sdp.split("\r\n") if not line.startswith(prefix))


@pytest.mark.parametrize("name,mutate", [
    ("no fingerprint", lambda sdp: without(sdp, "a=fingerprint")),  # aiortc would accept it
    ("no ice-ufrag", lambda sdp: without(sdp, "a=ice-ufrag")),
    ("no setup", lambda sdp: without(sdp, "a=setup")),
    ("duplicate mid", lambda sdp: sdp.replace("a=mid:1", "a=mid:0")),  # fails at the answer
    ("truncated", lambda sdp: sdp[: len(sdp) // 2]),
])
async def test_broken_real_offers_are_invalid_sdp_and_leave_nothing_behind(name, mutate, stack):
    cloud, relay = stack
    peer = BrowserPeer()
    try:
        await peer.pc.setLocalDescription(await peer.pc.createOffer())
        bad = mutate(peer.pc.localDescription.sdp)
        async with httpx.AsyncClient(base_url=relay.url, timeout=30) as http:
            r = await http.post("/api/v1/webrtc/offer", json={
                "sdp": bad, "type": "offer",
                "initialParameters": {"pipeline_ids": ["av-sync"]}})
            assert r.status_code == 400 and r.json()["code"] == "INVALID_SDP", r.text
            assert r.json()["error"].strip(" :)")
        assert not relay.app[RELAY_KEY].sessions
        for session in list(cloud.app[STATE_KEY].sessions.values()):  # its cloud hop ends too
            await asyncio.wait_for(session.closed.wait(), 20)
        assert not cloud.app[STATE_KEY].sessions
    finally:
        await peer.close()
