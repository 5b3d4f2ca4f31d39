"""What the cloud app and the local relay must agree on, and nothing else.

Control-channel messages (:mod:`.messages`), reserved parameter keys (:mod:`.parameters`),
capability flags (:mod:`.capabilities`), the error catalogue (:mod:`.errors`) and the media
contract (:mod:`.media`). Standard library only: no torch, numpy, aiortc or aiohttp here.
"""

from . import capabilities, errors, media, messages, parameters
from .capabilities import Capabilities, chain_capabilities
from .errors import ProtocolError

__all__ = ["Capabilities", "ProtocolError", "capabilities", "chain_capabilities", "errors",
           "media", "messages", "parameters"]
