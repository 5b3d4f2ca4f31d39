"""Without the ``ndi`` extra, starting NDI is a clear 503 and the session plays on."""

from __future__ import annotations

import sys

import httpx

from helpers.peers import connected


async def test_ndi_without_the_extra_is_unavailable(stack, monkeypatch):
    monkeypatch.setitem(sys.modules, "NDIlib", None)  # import NDIlib -> ImportError
    _, relay = stack
    async with connected(relay.url, {"pipeline_ids": ["test-tone"]}, video=False) as owner:
        async with httpx.AsyncClient(base_url=relay.url, timeout=30) as http:
            refused = await http.post("/api/v1/outputs", json={"sessionId": owner.session_id,
                                                               "kind": "ndi"})
            assert refused.status_code == 503, refused.text
            assert refused.json()["code"] == "UNAVAILABLE"
            assert "scope-relay[ndi]" in refused.json()["error"]
            (listed,) = (await http.get("/api/v1/stats")).json()["sessions"]
            assert listed["outputs"]["ndi"]["outputs"] == 0
        await owner.wait_audio_frames(25)
