"""Small shared utilities: owned background tasks, Prometheus metrics, serving an app."""

from .metrics import metrics_handler, session_gauges
from .serve import Served, serve
from .tasks import OwnedTasks, RunOnce

__all__ = ["OwnedTasks", "RunOnce", "Served", "metrics_handler", "serve", "session_gauges"]
