"""The cloud REST API as one router, served over HTTP and through ``api`` messages alike."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from scope_relay.cloud.hosting.manager import PipelineManager
from scope_relay.protocol.errors import InvalidMessage, MethodNotAllowed, NotFound, ProtocolError


@dataclass
class ApiResult:
    status: int
    data: dict[str, Any]
    error: str | None = None
    code: str | None = None

    @classmethod
    def failure(cls, exc: ProtocolError) -> ApiResult:
        return cls(exc.status, {"detail": exc.message}, exc.message, exc.code)


Handler = Callable[[Any], Awaitable[dict[str, Any]]]


class ApiRouter:
    def __init__(self, manager: PipelineManager, stats: Callable[[], dict[str, Any]]):
        self.manager = manager
        self._stats = stats
        self._routes: dict[str, dict[str, Handler]] = {
            "/health": {"GET": self._health},
            "/api/v1/pipelines": {"GET": self._pipelines},
            "/api/v1/pipelines/schemas": {"GET": self._schemas},
            "/api/v1/pipeline/load": {"POST": self._load},
            "/api/v1/pipeline/status": {"GET": self._status},
            "/api/v1/stats": {"GET": self._stats_route},
        }

    def add_route(self, path: str, method: str, handler: Handler) -> None:
        """Serve ``method path`` with ``handler`` (an async function of the request body
        returning a JSON object; a :class:`ProtocolError` it raises becomes the reply)."""
        self._routes.setdefault(path.rstrip("/") or "/", {})[method.upper()] = handler

    def paths(self) -> dict[str, list[str]]:
        return {path: list(methods) for path, methods in self._routes.items()}

    async def handle(self, method: str, path: str, body: Any = None) -> ApiResult:
        path = path.split("?", 1)[0].rstrip("/") or "/"
        methods = self._routes.get(path)
        if methods is None:
            return ApiResult.failure(NotFound(f"no API route {path}"))
        handler = methods.get(method.upper())
        if handler is None:
            message = f"{method} not allowed on {path}; allowed: {', '.join(methods)}"
            return ApiResult.failure(MethodNotAllowed(message))
        try:
            return ApiResult(200, await handler(body))
        except ProtocolError as exc:
            return ApiResult.failure(exc)

    async def _health(self, body: Any) -> dict[str, Any]:
        return {"status": "ok"}

    async def _pipelines(self, body: Any) -> dict[str, Any]:
        """The pipelines, and (``failed``) the plugins that did not load, with their causes."""
        await self.manager.refresh()
        registry = self.manager.registry
        return {"pipelines": registry.describe(), "failed": registry.describe_failures()}

    async def _schemas(self, body: Any) -> dict[str, Any]:
        await self.manager.refresh()
        return self.manager.registry.schemas()

    async def _load(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise InvalidMessage("body must be an object like {\"pipeline_ids\": [...]}")
        load_params = body.get("load_params") or {}
        if not isinstance(load_params, dict):
            raise InvalidMessage("load_params must be an object")
        state = await self.manager.load(body.get("pipeline_ids"), load_params)
        return self.manager.status() | {"message": f"pipeline chain {state.status}"}

    async def _status(self, body: Any) -> dict[str, Any]:
        return self.manager.status()

    async def _stats_route(self, body: Any) -> dict[str, Any]:
        return self._stats()
