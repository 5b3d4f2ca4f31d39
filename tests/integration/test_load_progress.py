"""A load that takes a while reports its progress on the status API (as the page reads it,
through the relay), and the status names the device the pipelines run on."""

from __future__ import annotations

import asyncio
import textwrap

import httpx

from helpers.servers import cloud_server, relay_server

#: a pipeline whose load takes 3 s in 30 steps, reporting each (a plugin file, as a user's
#: own model would be)
SLOW = """
import time

from scope_relay.cloud.builtin_pipelines.signals import TestTone

STEPS = 30


class SlowLoad(TestTone):
    pipeline_id = "slow-load"
    name = "Slow load"

    def load(self, progress):
        for step in range(STEPS):
            progress("weights", step / STEPS)
            time.sleep(3.0 / STEPS)  # stands in for reading weights
        progress("warm-up", None)
"""


async def test_a_three_second_load_reports_increasing_progress(tmp_path):
    plugin = tmp_path / "slow_load.py"
    plugin.write_text(textwrap.dedent(SLOW))
    async with cloud_server(pipelines=[f"{plugin}:SlowLoad"], device="cpu") as cloud, \
            relay_server(cloud) as relay, httpx.AsyncClient(timeout=30) as http:
        before = (await http.get(f"{relay.url}/api/v1/pipeline/status")).json()
        assert before["status"] == "not_loaded" and before["device"] == "cpu"
        assert "progress" not in before

        load = asyncio.ensure_future(
            http.post(f"{cloud.url}/api/v1/pipeline/load", json={"pipeline_ids": ["slow-load"]}))
        seen: list[dict] = []
        try:
            async with asyncio.timeout(30):
                while not load.done():
                    status = (await http.get(f"{relay.url}/api/v1/pipeline/status")).json()
                    if status["status"] == "loading":
                        seen.append(status["progress"])
                    await asyncio.sleep(0.2)  # a sampling rate, like the page's
        finally:
            reply = await load
        assert reply.status_code == 200 and reply.json()["status"] == "loaded"
        assert "progress" not in reply.json()

        weights = [p for p in seen if p["phase"] == "weights"]
        fractions = [p["fraction"] for p in weights]
        assert len(set(fractions)) >= 5, seen
        assert fractions == sorted(fractions) and 0 <= fractions[0] < fractions[-1] <= 1, seen
        elapsed = [p["elapsed"] for p in seen]
        assert elapsed == sorted(elapsed) and elapsed[-1] >= 2.0, seen

        after = (await http.get(f"{relay.url}/api/v1/pipeline/status")).json()
        assert after["status"] == "loaded" and after["pipeline_ids"] == ["slow-load"]
        assert after["device"] == "cpu" and "progress" not in after
