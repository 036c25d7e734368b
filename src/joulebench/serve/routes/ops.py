"""Operational routes: ``/health`` (200 when the engine can serve, 503 otherwise) and
Prometheus ``/metrics``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter
from fastapi.params import Depends
from fastapi.responses import JSONResponse, PlainTextResponse

from joulebench.exposition import CONTENT_TYPE
from joulebench.serve.engine import ServingEngine
from joulebench.serve.errors import Route
from joulebench.serve.protocol import OpenAIError
from joulebench.serve.routes.common import unauthorized


def router(engine: ServingEngine, dependencies: Sequence[Depends]) -> APIRouter:
    api = APIRouter(route_class=Route, tags=["ops"])

    @api.get(
        "/health",
        responses={
            503: {
                "description": "the engine cannot serve now (the reason is in the body)",
                "content": {"application/json": {}},
            }
        },
    )
    async def health() -> Any:
        state = engine.health()
        body = {**state, **engine.describe(), "status": state["status"]}
        return JSONResponse(body, status_code=200 if state["status"] == "ok" else 503)

    @api.get(
        "/metrics",
        dependencies=list(dependencies),
        response_class=PlainTextResponse,
        responses=unauthorized(OpenAIError),
    )
    async def metrics() -> PlainTextResponse:
        text = await asyncio.to_thread(engine.render_metrics)
        return PlainTextResponse(text, media_type=CONTENT_TYPE)

    return api
