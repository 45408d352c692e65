"""The decision service's HTTP API (aiohttp, the same stack as the local model server's REST front end):

    POST /v1/decisions   one raw transaction (data-contract columns)  -> the decision
    POST /v1/labels      {"transaction_id", "is_fraudulent", "reported_at"} -> recorded
    GET  /v1/alerts      the latest alerts (embedded store: in memory; Redis: the alerts stream)
    GET  /healthz        200 when the state store answers
    GET  /metrics        Prometheus metrics (decision/metrics.py)

Errors are `{"error": "..."}`: 400 not JSON, 422 a transaction or label that breaks the contract (the field is
named, nothing is changed), 404 a label for an unknown transaction, 503 the state store (or, for a label, the
labels database) is unreachable: nothing was changed, retry.
"""
from __future__ import annotations

import json
import logging

from aiohttp import web

from fraud.errors import DataContractError, DataSourceError
from fraud.sources import display  # URLs without their password

from decision import metrics as M
from decision.service import DecisionService
from decision.state import StateUnavailable

log = logging.getLogger("decision")
MAX_BODY_BYTES = 1024 * 1024


def _error(status: int, message: str) -> web.Response:
    M.REJECTED.labels(status=str(status)).inc()
    return web.json_response({"error": message}, status=status)


async def _json(request: web.Request):
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _Refused(413, f"request body larger than {MAX_BODY_BYTES} bytes") from None
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Refused(400, f"the body is not JSON: {exc}") from None


class _Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def application(service: DecisionService) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)

    async def guarded(handler, request):
        try:
            return await handler(request)
        except _Refused as exc:
            return _error(exc.status, str(exc))
        except DataContractError as exc:
            return _error(422, str(exc))
        except LookupError as exc:
            return _error(404, str(exc).strip("'\""))
        except (StateUnavailable, DataSourceError) as exc:
            return _error(503, str(exc))
        except Exception as exc:  # a bug on our side: report it, keep serving
            log.exception("Internal error on %s %s", request.method, request.path)
            return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    async def decisions(request):
        body = await _json(request)
        return web.json_response(await service.decide(body))

    async def labels(request):
        body = await _json(request)
        if not isinstance(body, dict) or "transaction_id" not in body or "is_fraudulent" not in body:
            raise _Refused(422, "a label needs 'transaction_id' and 'is_fraudulent' (0 or 1), optionally "
                                "'reported_at'")
        return web.json_response(await service.label(str(body["transaction_id"]), body["is_fraudulent"],
                                                     body.get("reported_at")))

    async def alerts(request):
        return web.json_response({"alerts": await service.store.alerts()})

    async def health(request):
        await service.store.ping()
        return web.json_response({"status": "ok", "state": display(getattr(service.store, "url", "memory://"))})

    async def metrics(request):
        return web.Response(body=M.exposition(), headers={"Content-Type": "text/plain; version=0.0.4"})

    for method, path, handler in (("POST", "/v1/decisions", decisions), ("POST", "/v1/labels", labels),
                                  ("GET", "/v1/alerts", alerts), ("GET", "/healthz", health),
                                  ("GET", "/metrics", metrics)):
        app.router.add_route(method, path, lambda request, h=handler: guarded(h, request))
    return app
