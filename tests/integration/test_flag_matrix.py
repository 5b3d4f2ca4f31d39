"""Capability flags decide the transceivers on both hops, read from the SDP."""

from __future__ import annotations

import pytest

from scope_relay.local.server import RELAY_KEY
from scope_relay.testing import SyntheticCamera

from helpers.peers import ToneMicrophone, connected, media_sections

CASES = {
    # pipeline: (cloud-hop offer, cloud-hop answer, browser answer)
    "test-tone": ({"audio": "recvonly"}, {"audio": "sendonly"},
                  {"video": "inactive", "audio": "sendonly"}),
    "passthrough": ({"video": "sendrecv"}, {"video": "sendrecv"},
                    {"video": "sendrecv", "audio": "inactive"}),
    "av-sync": ({"video": "recvonly", "audio": "recvonly"},
                {"video": "sendonly", "audio": "sendonly"},
                {"video": "sendonly", "audio": "sendonly"}),
    "colour-field": ({"video": "recvonly", "audio": "recvonly"},
                     {"video": "sendonly", "audio": "sendonly"},
                     {"video": "sendonly", "audio": "sendonly"}),
}


@pytest.mark.parametrize("pipeline", list(CASES))
async def test_transceivers_follow_flags_on_both_hops(pipeline, stack):
    cloud_offer, cloud_answer, browser_answer = CASES[pipeline]
    camera = SyntheticCamera() if pipeline == "passthrough" else None
    _, relay = stack
    async with connected(relay.url, {"pipeline_ids": [pipeline]}, video=True, audio=True,
                         camera=camera) as peer:
        (session,) = relay.app[RELAY_KEY].sessions.values()
        cloud_pc = session.cloud.pc
        offer = media_sections(cloud_pc.localDescription.sdp)
        answer = media_sections(cloud_pc.remoteDescription.sdp)
        assert {k: v for k, v in offer.items() if k != "application"} == cloud_offer
        assert {k: v for k, v in answer.items() if k != "application"} == cloud_answer
        assert offer["application"] == "data"
        browser = media_sections(peer.answer_sdp)
        assert {k: v for k, v in browser.items() if k != "application"} == browser_answer
        # what actually flows matches: no track without media
        if "audio" not in cloud_offer:
            assert session.audio_track is None
        if cloud_answer.get("video") not in ("sendonly", "sendrecv"):
            assert session.video_track is None


#: accepts_audio (the chain's first stage decides), with the peer offering its microphone
#: as the page does: (chain, cloud-hop offer, cloud-hop answer, browser answer)
MICROPHONE_CASES = {
    "voice-fx": (["voice-fx"], {"audio": "sendrecv"}, {"audio": "sendrecv"},
                 {"video": "inactive", "audio": "sendrecv"}),
    "first-accepts": (["voice-fx", "av-sync"],
                      {"video": "recvonly", "audio": "sendrecv"},
                      {"video": "sendonly", "audio": "sendrecv"},
                      {"video": "sendonly", "audio": "sendrecv"}),
    "later-accepts": (["test-tone", "voice-fx"], {"audio": "recvonly"}, {"audio": "sendonly"},
                      {"video": "inactive", "audio": "sendonly"}),
    "none-accepts": (["test-tone"], {"audio": "recvonly"}, {"audio": "sendonly"},
                     {"video": "inactive", "audio": "sendonly"}),
}


@pytest.mark.parametrize("case", list(MICROPHONE_CASES))
async def test_microphone_follows_accepts_audio_on_both_hops(case, stack):
    chain, cloud_offer, cloud_answer, browser_answer = MICROPHONE_CASES[case]
    _, relay = stack
    async with connected(relay.url, {"pipeline_ids": chain}, video=True, audio=True,
                         microphone=ToneMicrophone()) as peer:
        (session,) = relay.app[RELAY_KEY].sessions.values()
        accepts = cloud_answer["audio"] == "sendrecv"
        assert session.capabilities.accepts_audio is accepts
        cloud_pc = session.cloud.pc
        offer = media_sections(cloud_pc.localDescription.sdp)
        answer = media_sections(cloud_pc.remoteDescription.sdp)
        assert {k: v for k, v in offer.items() if k != "application"} == cloud_offer
        assert {k: v for k, v in answer.items() if k != "application"} == cloud_answer
        browser = media_sections(peer.answer_sdp)
        assert {k: v for k, v in browser.items() if k != "application"} == browser_answer
        # a microphone nobody takes is drained at the relay, never forwarded
        assert (session.microphone is not None) is accepts
