"""A session's output into the performer's tools, straight from the relay: WHEP (WebRTC
pull), WHIP (WebRTC push in, as the session's camera and microphone) and MPEG-TS over
HTTP. Each output reads the session's decoded, re-timed frames from its
:class:`~scope_relay.local.sessions.fanout.OutputFanout`, like any viewer, so it never
costs a second cloud session and a failing output never disturbs the session."""
