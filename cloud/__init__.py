"""The cloud app (GPU, torch): control channel, REST API, pipelines and media sessions.

``create_app(CloudConfig(...))`` is the public factory the CLI and the embedded demo use.
"""

from .app import CloudConfig, CloudState, create_app

__all__ = ["CloudConfig", "CloudState", "create_app"]
