"""WHEP egress (local/outputs/whep.py): a session pulled with its share token, the relay
answering as the DTLS server; GStreamer's webrtcbin as the client where it is installed.

The Chromium client is in tests/browser/test_outputs_page.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import textwrap

import httpx
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from scope_relay.local.outputs.whep import WhepViewer
from scope_relay.local.server import RELAY_KEY
from scope_relay.rtc.aiortc_internals import answer_as_dtls_server
from scope_relay.rtc.ice import rtc_configuration

from helpers.peers import BrowserPeer, connected
from helpers.servers import cloud_server, relay_server
from helpers.waiting import wait_until

SDP = {"Content-Type": "application/sdp"}


async def share_token(relay_url: str, session_id: str) -> str:
    async with httpx.AsyncClient(base_url=relay_url) as http:
        return str((await http.get(f"/api/v1/webrtc/offer/{session_id}")).json()["shareToken"])


async def whep_post(relay_url: str, token: str, sdp: str, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=relay_url, timeout=60) as http:
        return await http.post(f"/whep/{token}", content=sdp.encode(), headers={**SDP, **headers})


def setup_of(sdp: str) -> set[str]:
    return {line.split(":", 1)[1].strip() for line in sdp.splitlines()
            if line.startswith("a=setup:")}


async def test_whep_viewer_plays_the_session_and_leaves_with_delete():
    async with cloud_server() as cloud, relay_server(cloud) as relay, \
            connected(relay.url, {"pipeline_ids": ["av-sync"]}) as owner:
        token = await share_token(relay.url, str(owner.session_id))
        client = BrowserPeer()  # an aiortc WHEP client: recvonly video + audio, actpass
        try:
            await client.pc.setLocalDescription(await client.pc.createOffer())
            assert setup_of(client.pc.localDescription.sdp) == {"actpass"}
            response = await whep_post(relay.url, token, client.pc.localDescription.sdp)
            assert response.status_code == 201, response.text
            assert response.headers["Content-Type"].startswith("application/sdp")
            location = response.headers["Location"]
            assert location.startswith(f"/whep/{token}/")
            # the relay is the DTLS server: the client opens the handshake
            assert setup_of(response.text) == {"passive"}
            assert "a=candidate:" in response.text  # no trickle needed
            await client.pc.setRemoteDescription(RTCSessionDescription(response.text, "answer"))
            await asyncio.gather(client.wait_video_frames(24, timeout=30),
                                 client.wait_audio_frames(50, timeout=30))

            (session,) = relay.app[RELAY_KEY].sessions.values()
            assert session.audience is not None
            (viewer,) = session.audience.viewers.values()  # the share links' cap and fan-out
            assert isinstance(viewer, WhepViewer)
            roles = {t.receiver.transport._role for t in viewer.pc.getTransceivers()}
            assert roles == {"server"}
            async with httpx.AsyncClient(base_url=relay.url) as http:
                (listed,) = (await http.get("/api/v1/stats")).json()["sessions"]
                whep = listed["outputs"]["whep"]
                assert whep["clients"] == 1 and whep["frames_sent"] > 0, whep
                assert listed["viewers"] == 1
                metrics = (await http.get("/metrics")).text
                assert "scope_relay_outputs_whep_clients{" in metrics

                # no trickle: PATCH is 405, saying what the resource takes
                patch = await http.patch(location, content=b"a=end-of-candidates\r\n",
                                         headers={"Content-Type": "application/trickle-ice-sdpfrag"})
                assert patch.status_code == 405 and "DELETE" in patch.headers["Allow"]
                deleted = await http.delete(location)
                assert deleted.status_code == 200
                await wait_until(lambda: not session.audience.viewers)
                again = await http.delete(location)
                assert again.status_code == 404
                (listed,) = (await http.get("/api/v1/stats")).json()["sessions"]
                after = listed["outputs"]["whep"]
                assert after["clients"] == 0 and after["frames_sent"] >= whep["frames_sent"]
            assert owner.pc.connectionState == "connected"  # the session never noticed
        finally:
            await client.close()


async def test_whep_refusals_are_clear_and_leave_the_session_running():
    async with cloud_server() as cloud, relay_server(cloud, max_viewers=1) as relay, \
            connected(relay.url, {"pipeline_ids": ["test-tone"]}, video=False) as owner:
        token = await share_token(relay.url, str(owner.session_id))
        pc = RTCPeerConnection(rtc_configuration())
        pc.addTransceiver("audio", direction="recvonly")
        try:
            await pc.setLocalDescription(await pc.createOffer())
            offer = pc.localDescription.sdp
            async with httpx.AsyncClient(base_url=relay.url, timeout=60) as http:
                # not declared SDP: a form post from any page could be that, so it is refused
                plain = await http.post(f"/whep/{token}", content=offer.encode(),
                                        headers={"Content-Type": "text/plain"})
                assert plain.status_code == 415 and plain.json()["code"] == "UNSUPPORTED_MEDIA_TYPE"
                # a browser page of another origin (tools send no Origin)
                foreign = await whep_post(relay.url, token, offer, Origin="http://evil.example")
                assert foreign.status_code == 403, foreign.text
                wrong = await whep_post(relay.url, "not-the-token", offer)
                assert wrong.status_code == 404 and wrong.json()["code"] == "UNKNOWN_SHARE"
                garbage = await whep_post(relay.url, token, "v=0\r\nnonsense")
                assert garbage.status_code == 400 and garbage.json()["code"] == "INVALID_SDP"
                first = await whep_post(relay.url, token, offer)
                assert first.status_code == 201, first.text
                second = await whep_post(relay.url, token, offer)  # the viewers' cap: 1
                assert second.status_code == 429 and second.json()["code"] == "TOO_MANY_VIEWERS"
            await owner.wait_audio_frames(25)  # the session plays on
        finally:
            await pc.close()


async def test_dtls_server_role_reach_on_real_peers():
    """The reach itself (rtc/aiortc_internals.py): an ``actpass`` offer answered
    ``passive``; an ``active`` offer left alone (aiortc already makes us the server)."""
    offerer = RTCPeerConnection(rtc_configuration())  # no STUN server (aiortc adds one)
    answerer = RTCPeerConnection(rtc_configuration())
    try:
        offerer.addTransceiver("audio", direction="recvonly")
        offerer.createDataChannel("x")
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(offerer.localDescription)
        assert answer_as_dtls_server(answerer) == 1  # audio and SCTP share one bundled transport
        await answerer.setLocalDescription(await answerer.createAnswer())
        assert setup_of(answerer.localDescription.sdp) == {"passive"}
        assert answer_as_dtls_server(answerer) == 0
    finally:
        await offerer.close()
        await answerer.close()


# --- GStreamer's webrtcbin as the WHEP client ------------------------------------------------
SYSTEM_PYTHON = "/usr/bin/python3"
GST_CHECK = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstWebRTC', '1.0');"
             "from gi.repository import Gst; Gst.init(None);"
             "assert Gst.ElementFactory.find('webrtcbin') and Gst.ElementFactory.find('nicesrc')")


def gstreamer_available() -> bool:
    if not os.path.exists(SYSTEM_PYTHON) or shutil.which("gst-inspect-1.0") is None:
        return False
    return subprocess.run([SYSTEM_PYTHON, "-c", GST_CHECK], capture_output=True).returncode == 0


needs_gstreamer = pytest.mark.skipif(
    not gstreamer_available(),
    reason="GStreamer webrtcbin not installed (scripts/setup.sh --system)")

#: Runs with the system python3 (the venv has no gi): a recvonly webrtcbin, its offer POSTed
#: once gathering completes, decoded frames and audio buffers counted; prints JSON.
GST_WHEP_CLIENT = textwrap.dedent("""
    import json, os, sys, urllib.request
    import gi
    gi.require_version("Gst", "1.0"); gi.require_version("GstWebRTC", "1.0")
    gi.require_version("GstSdp", "1.0")
    from gi.repository import Gst, GstWebRTC, GstSdp, GLib
    Gst.init(None)
    url, seconds = sys.argv[1], float(sys.argv[2])
    counts = {"video": 0, "audio": 0, "width": 0, "rate": 0, "dtls": ""}
    pipe = Gst.Pipeline.new()
    webrtc = Gst.ElementFactory.make("webrtcbin")
    webrtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
    # the relay under test gathers on 127.0.0.1 only (SCOPE_RELAY_ICE_LOOPBACK); libnice
    # leaves loopback out unless told. ``ice`` stays referenced to the end: PyGObject 3.42
    # drops one reference too many when this wrapper goes (hence os._exit below)
    ice = webrtc.get_property("ice-agent")
    ice.emit("add-local-ip-address", "127.0.0.1")
    pipe.add(webrtc)
    for caps in ("application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000",
                 "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000"):
        webrtc.emit("add-transceiver", GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY,
                    Gst.Caps.from_string(caps))
    loop = GLib.MainLoop()

    def counted(kind):
        def on_buffer(sink):
            sample = sink.emit("pull-sample")
            s = sample.get_caps().get_structure(0)
            counts[kind] += 1
            if kind == "video":
                counts["width"] = s.get_value("width")
            else:
                counts["rate"] = s.get_value("rate")
            return Gst.FlowReturn.OK
        return on_buffer

    def on_pad(_, pad):
        if pad.direction != Gst.PadDirection.SRC:
            return
        caps = pad.get_current_caps() or pad.query_caps(None)
        kind = caps.get_structure(0).get_value("media")
        # explicit depayloaders and decoders: a bin starting "decodebin ! ..." would ghost the
        # first unlinked sink pad, which is the converter's (decodebin's src comes later)
        bin_ = Gst.parse_bin_from_description(
            "rtpvp8depay ! vp8dec ! videoconvert ! video/x-raw,format=I420 "
            "! appsink name=s emit-signals=true"
            if kind == "video" else
            "rtpopusdepay ! opusdec ! audioconvert ! audioresample "
            "! appsink name=s emit-signals=true", True)
        pipe.add(bin_)
        bin_.get_by_name("s").connect("new-sample", counted(kind))
        bin_.sync_state_with_parent()
        pad.link(bin_.get_static_pad("sink"))

    webrtc.connect("pad-added", on_pad)

    def post_offer():
        offer = webrtc.get_property("local-description").sdp.as_text()
        request = urllib.request.Request(url, data=offer.encode(), method="POST",
                                         headers={"Content-Type": "application/sdp"})
        with urllib.request.urlopen(request, timeout=30) as response:
            counts["status"] = response.status
            counts["location"] = response.headers["Location"]
            answer = response.read().decode()
        counts["dtls"] = [l for l in answer.splitlines() if l.startswith("a=setup:")][0]
        _, sdp = GstSdp.SDPMessage.new_from_text(answer)
        desc = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, sdp)
        webrtc.emit("set-remote-description", desc, Gst.Promise.new())

    def on_gathering(*_):
        if webrtc.get_property("ice-gathering-state") == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            GLib.idle_add(lambda: post_offer() and False)

    webrtc.connect("notify::ice-gathering-state", on_gathering)

    def on_offer(promise):
        # the reply must stay referenced while its offer is read: a temporary Gst.Structure
        # is freed at once by PyGObject 3.42 and the offer read from it is garbage
        reply = promise.get_reply()
        offer = reply.get_value("offer")
        webrtc.emit("set-local-description", offer, Gst.Promise.new())

    def negotiate(_):
        webrtc.emit("create-offer", None, Gst.Promise.new_with_change_func(on_offer))

    webrtc.connect("on-negotiation-needed", negotiate)
    pipe.set_state(Gst.State.PLAYING)
    GLib.timeout_add(int(seconds * 1000), loop.quit)
    loop.run()
    counts["connection"] = webrtc.get_property("connection-state").value_nick
    pipe.set_state(Gst.State.NULL)
    print(json.dumps(counts), flush=True)
    os._exit(0)
""")


@needs_gstreamer
async def test_gstreamer_webrtcbin_pulls_the_session_with_whep():
    """An independent WebRTC stack (libnice, libsrtp, an RSA-signed DTLS certificate)."""
    async with cloud_server() as cloud, relay_server(cloud) as relay, \
            connected(relay.url, {"pipeline_ids": ["av-sync"]}) as owner:
        token = await share_token(relay.url, str(owner.session_id))
        process = await asyncio.create_subprocess_exec(
            SYSTEM_PYTHON, "-c", GST_WHEP_CLIENT, f"{relay.url}/whep/{token}", "6",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()[-2000:]
        result = json.loads(out.decode().strip().splitlines()[-1])
        print("GStreamer WHEP client:", result)
        assert result["status"] == 201 and result["dtls"] == "a=setup:passive"
        assert result["connection"] == "connected", result  # ICE and DTLS with libnice
        assert result["video"] >= 24 * 3, result  # 6 s of 24 fps, minus the start
        assert result["width"] == 320 and result["audio"] >= 50, result


async def test_on_a_lan_the_share_token_opens_whep_and_ts_but_not_whip_or_ndi():
    """Beyond loopback the relay wants its token; a share token is enough to watch."""
    from test_relay_token import client, lan_relay, start_session

    async with cloud_server() as cloud, lan_relay(cloud) as relay:
        owner = BrowserPeer()
        watcher = BrowserPeer()
        try:
            async with client(relay, source=None) as local:  # this machine: no token needed
                started = await start_session(local, owner, {"pipeline_ids": ["av-sync"]})
                assert started.status_code == 200, started.text
                token = started.json()["shareToken"]
            async with client(relay) as neighbour:  # 127.0.0.3, no token
                await watcher.pc.setLocalDescription(await watcher.pc.createOffer())
                whep = await neighbour.post(f"/whep/{token}", headers=SDP,
                                            content=watcher.pc.localDescription.sdp.encode())
                assert whep.status_code == 201, whep.text
                async with neighbour.stream("GET", f"/ts/{token}") as ts:
                    assert ts.status_code == 200
                    first = await ts.aiter_bytes().__anext__()
                    assert first[:1] == b"\x47"
                whip = await neighbour.post(f"/whip/{owner.session_id}", headers=SDP,
                                            content=watcher.pc.localDescription.sdp.encode())
                assert whip.status_code == 401 and whip.json()["code"] == "UNAUTHORIZED"
                ndi = await neighbour.post("/api/v1/outputs", json={
                    "sessionId": owner.session_id, "kind": "ndi"})
                assert ndi.status_code == 401
                deleted = await neighbour.delete(whep.headers["Location"])
                assert deleted.status_code == 200
        finally:
            await watcher.close()
            await owner.close()
