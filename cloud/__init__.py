"""The cloud app (GPU, torch): control channel, REST API, pipelines and media sessions.

``create_app(CloudConfig(...))`` is the public factory the CLI and the embedded demo use.
The package loads lazily, so ``scope_relay.cloud.pipelines`` (the pipeline author's API)
imports without the server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scope_relay.cloud.app import CloudConfig, CloudState, create_app

__all__ = ["CloudConfig", "CloudState", "create_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("scope_relay.cloud.app"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
