"""The FastAPI app: OpenAI and TGI endpoints, health, models and Prometheus metrics.

Routes live in :mod:`joulebench.serve.routes` (one router per protocol, plus ops); every error
goes through :mod:`joulebench.serve.errors`, in the shape of the route's protocol. Bodies over
``max_body_bytes`` get 413 before they are parsed.

Every response carries its attributed energy: ``usage.energy`` (OpenAI) or ``details.energy``
(TGI), plus ``x-energy-j``, ``x-energy-method`` and ``x-queue-ms`` headers on non-streaming
responses. Streaming responses put the energy in the last event (the usage chunk when
``stream_options.include_usage`` is set, and the finishing chunk always), since HTTP trailers are
not reliably delivered; their ``x-energy-method`` header is sent up front. The label is one
string everywhere (header and ``energy.label``, streamed or not, OpenAI or TGI):
``timeline-token-work;meter=<meter method>`` (see :mod:`joulebench.serve.energy`).
"""

from __future__ import annotations

import hmac

from joulebench.errors import at_least
from joulebench.extras import require
from joulebench.serve.energy import energy_label
from joulebench.serve.engine import Rejected, ServingEngine
from joulebench.serve.validate import DEFAULT_MAX_BODY_MIB

fastapi = require("fastapi", "serve", "the embedded server")
from fastapi import Depends, FastAPI, Request  # noqa: E402

from joulebench.serve import errors  # noqa: E402
from joulebench.serve.routes import openai, ops, tgi  # noqa: E402
from joulebench.serve.routes.common import Generation  # noqa: E402


def create_app(
    engine: ServingEngine,
    *,
    api_key: str | None = None,
    max_body_bytes: int = int(DEFAULT_MAX_BODY_MIB * 2**20),
) -> FastAPI:
    """Build the app over a started :class:`ServingEngine`."""
    at_least(max_body_bytes, 1, "max_body_bytes", error=ValueError)
    # bodies without a content-type are parsed as JSON too (curl -d, old clients)
    app = FastAPI(title="joulebench serve", version="1", strict_content_type=False)
    errors.install(app)

    async def check_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        given = (
            given[7:]
            if given.lower().startswith("bearer ")
            else request.headers.get("x-api-key", "")
        )
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            raise Rejected(401, "missing or wrong API key: send 'Authorization: Bearer <key>'")

    guarded = [Depends(check_key)]
    gen = Generation(engine)
    label = energy_label(engine.meter_info.method_label)
    app.include_router(openai.router(gen, label, guarded))
    app.include_router(tgi.router(gen, label, guarded))
    app.include_router(ops.router(engine, guarded))
    app.add_middleware(errors.BodyLimit, max_bytes=max_body_bytes)
    errors.document(app)
    return app
