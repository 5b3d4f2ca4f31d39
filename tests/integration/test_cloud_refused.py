"""A cloud app that refuses the relay (wrong key, no app at the URL) is named at once, in
words, instead of being retried silently while API calls hang."""

from __future__ import annotations

import time

import httpx
import pytest

from scope_relay.local.cloud_link.target import CloudTarget

from helpers.servers import Served, cloud_server, serve


def relay_for(target: CloudTarget):
    from scope_relay.local.server import RelayConfig, create_relay_app

    return serve(create_relay_app(RelayConfig(target, loopback_ice=True)), shutdown_timeout=1.0)


def targets(cloud: Served) -> dict[str, tuple[CloudTarget, str]]:
    """Each case: the relay's target, and what its refusal must say."""
    unknown = cloud.url.replace("http://", "ws://") + "/owner/app/ws"
    return {
        "wrong key": (CloudTarget(cloud.ws_url, api_key="a-wrong-key"), "refused the API key"),
        "no key": (CloudTarget(cloud.ws_url), "none was given: set SCOPE_CLOUD_API_KEY"),
        "unknown app": (CloudTarget(unknown, api_key="the-right-key", app_id="owner/app"),
                        f"no cloud app at {unknown}"),
    }


@pytest.mark.parametrize("case", ["wrong key", "no key", "unknown app"])
async def test_refusal_is_named_and_api_calls_fail_fast(case):
    async with cloud_server(api_key="the-right-key") as cloud:
        target, expected = targets(cloud)[case]
        async with relay_for(target) as relay, \
                httpx.AsyncClient(base_url=relay.url, timeout=30) as http:
            for method, path in (("GET", "/api/v1/pipelines"),
                                 ("POST", "/api/v1/pipeline/load")):
                began = time.monotonic()
                r = await http.request(method, path, json={"pipeline_ids": ["test-tone"]})
                assert time.monotonic() - began < 1.0
                assert (r.status_code, r.json()["code"]) == (503, "CLOUD_REFUSED"), r.text
                assert expected in r.json()["error"]
            status = (await http.get("/api/v1/cloud/status")).json()
            assert status["state"] == "refused" and expected in status["last_error"], status


async def test_the_right_key_still_connects():
    async with cloud_server(api_key="the-right-key") as cloud, \
            relay_for(CloudTarget(cloud.ws_url, api_key="the-right-key")) as relay, \
            httpx.AsyncClient(base_url=relay.url, timeout=30) as http:
        ids = {p["id"] for p in (await http.get("/api/v1/pipelines")).json()["pipelines"]}
        assert "test-tone" in ids
        assert (await http.get("/api/v1/cloud/status")).json()["state"] == "ready"
