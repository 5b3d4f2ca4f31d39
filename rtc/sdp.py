"""What an SDP offer must hold for either side to answer it, and aiortc's failures on a
bad one turned into a clear ``INVALID_SDP`` instead of an internal error."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from scope_relay.protocol.errors import InvalidSdp

#: Lines an offer cannot do without. aiortc accepts an offer with no DTLS fingerprint and
#: only fails at the handshake, holding a session (and a pipeline) until then.
REQUIRED_LINES = ("a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:")


def validate_offer_sdp(sdp: Any) -> str:
    if not isinstance(sdp, str) or not sdp.lstrip().startswith("v=0") or "\nm=" not in sdp:
        raise InvalidSdp("'sdp' must be an SDP offer (starting 'v=0', with m-lines)")
    missing = [line.rstrip(":") for line in REQUIRED_LINES if line not in sdp]
    if missing:
        raise InvalidSdp(f"offer SDP lacks {', '.join(missing)}")
    # aiortc takes repeated mids and only fails at its answer; the relay makes its answer
    # after the cloud has answered (the page's codec follows the cloud's), so refuse here
    mids = [line.strip()[6:] for line in sdp.splitlines() if line.startswith("a=mid:")]
    repeated = sorted({mid for mid in mids if mids.count(mid) > 1})
    if repeated:
        raise InvalidSdp(f"offer SDP repeats a=mid:{', a=mid:'.join(repeated)}")
    return sdp


@contextlib.contextmanager
def refusing_bad_sdp(step: str) -> Iterator[None]:
    """Any failure of aiortc inside is the offer's fault: an ``InvalidSdp`` naming ``step``."""
    try:
        yield
    except InvalidSdp:
        raise
    except Exception as exc:  # aiortc raises assorted errors on odd SDP
        detail = str(exc) or type(exc).__name__
        raise InvalidSdp(f"offer SDP rejected ({step}): {detail}") from None
