"""Small shared utilities: owned background tasks, Prometheus metrics, serving an app,
giving freed memory back."""

from .memory import release_freed_memory
from .metrics import metrics_handler, session_gauges
from .serve import Served, serve
from .tasks import OwnedTasks, RunOnce

__all__ = ["OwnedTasks", "RunOnce", "Served", "metrics_handler", "release_freed_memory", "serve",
           "session_gauges"]
