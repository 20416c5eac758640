"""The service's HTTP app: BentoML's, with the edge the service promises its clients and operators.

BentoML 1.4 builds a service's Starlette app in `ServiceAppFactory`; `ChurnService.to_asgi`
(serving/service.py) builds it here instead, in each worker, with these changes:

- Request metrics labelled by route. BentoML labels `bentoml_service_request_*` with the
  raw request path, so every path a client makes up adds series to `/metrics` and memory
  to the worker for good (a scanner's 20,000 paths: a scrape timed out and the worker grew
  from 354 MB to 2.4 GB). Here a path the app does not serve is labelled `other`, a path
  under a mount (BentoML's static files) by the mount; the route itself is unchanged.
- A body that does not validate is a 400 `{"error": ...}` whose message names the field,
  the rule and the value (`guard.validation_message`), and a client's mistake is logged at
  WARNING; BentoML answered `{"error": "1 validation error for Input", "detail": [...]}`
  and logged it as an ERROR.
- One log line per 400 and per 5xx answer (`guard.StatusLogMiddleware`), outside BentoML's
  timeout, so that a 503 (a store down) and a 504 (out of time) are in the log.
- The settings are read before the worker starts: an invalid setting (a malformed
  `CHURN_SERVING__API_KEYS`) stops the worker with one log line, where the server otherwise
  ran on without its middlewares and answered 500 with a long traceback to every request.
- A 405 lists every method of its path in `Allow` (`/interventions` is served by two routes).
- `/docs.json` documents what the service answers (`conform_spec`): the bearer key, every
  status and the `{"error"}` body, so that clients and schemathesis (`--checks all`, in
  `make test-load`) can rely on it.
"""

from __future__ import annotations

import copy
import json
import logging
from typing import TYPE_CHECKING, Any

from _bentoml_impl.server.app import ServiceAppFactory
from bentoml._internal.server.http.instruments import RunnerTrafficMetricsMiddleware
from pydantic import ValidationError
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Mount, Route

from churn.errors import ConfigError
from churn.settings import load_settings
from serving.guard import StatusLogMiddleware, validation_message

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request

logger = logging.getLogger("serving.app")

# the metrics label of every path the app does not serve
OTHER_PATHS = "other"
# where the real path waits while BentoML's metrics middleware sees the label
_REAL_PATH = "churn.real_path"


def build_app(service: Any, is_main: bool) -> Starlette:
    """The worker's ASGI app for `service` (what `Service.to_asgi` returns), or exit with the settings' error."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        logger.error("the service cannot start: %s", exc)
        raise SystemExit(1) from None
    if not settings.serving.api_keys:
        logger.error("the service cannot start: serving.api_keys is empty (set CHURN_SERVING__API_KEYS)")
        raise SystemExit(1)
    service.inject_config()
    return ChurnAppFactory(service, is_main=is_main)()


class Routes:
    """What the built app serves, asked of its router: a request's metrics label, and a path's allowed methods.

    The routes are matched as the router matches them, not listed: the mounted FastAPI app
    keeps the service's GET routes in an included router, which lists none of them.
    """

    def __init__(self) -> None:
        self.app: Starlette | None = None

    def label(self, scope: dict) -> str:
        """The route's path for a path the app serves (any method), a mount's path under a mount, else `other`."""
        for route in self.app.routes if self.app is not None else ():
            match, _ = route.matches(scope)
            if match is not Match.NONE:
                is_static = isinstance(route, Mount) and not hasattr(route.app, "routes")
                return route.path if is_static or isinstance(route, Route) else scope["path"]
        return OTHER_PATHS

    def allowed(self, scope: dict) -> list[str]:
        """The methods some route of the app answers on this path."""
        routes = self.app.routes if self.app is not None else ()
        return [
            method for method in _METHODS
            if any(route.matches({**scope, "method": method})[0] is Match.FULL for route in routes)
        ]


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


class RouteLabelledMetrics(RunnerTrafficMetricsMiddleware):
    """BentoML's request metrics with the route's label for `endpoint` in place of the raw path."""

    def __init__(self, app: Any, routes: Routes, **options: Any):
        super().__init__(_RealPath(app), **options)
        self._routes = routes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            label = self._routes.label(scope)
            if label != scope["path"]:
                scope = {**scope, "path": label, _REAL_PATH: scope["path"]}
        await super().__call__(scope, receive, send)


class _RealPath:
    """Gives the app behind the metrics middleware the request's own path back."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if _REAL_PATH in scope:
            scope = {key: value for key, value in scope.items() if key != _REAL_PATH} | {"path": scope[_REAL_PATH]}
        await self.app(scope, receive, send)


class AllowEveryMethod:
    """A 405 lists every method of the path in `Allow`, also where two routes serve it.

    `/interventions` is BentoML's POST and the mounted app's GET: the router answers a third
    method with the `Allow` of whichever route it tried first.
    """

    def __init__(self, app: Any, routes: Routes):
        self.app = app
        self._routes = routes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_allowing(message: dict) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                allowed = ", ".join(self._routes.allowed(scope)).encode()
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                message = {**message, "headers": [*headers, (b"allow", allowed)]}
            await send(message)

        await self.app(scope, receive, send_allowing)


class ChurnAppFactory(ServiceAppFactory):
    """BentoML's app factory with bounded metric labels, field-naming 400s, status logs and a conforming spec."""

    def __init__(self, service: Any, is_main: bool = False):
        super().__init__(service, is_main=is_main)
        self.routes_served = Routes()

    def __call__(self) -> Starlette:
        app = super().__call__()
        self.routes_served.app = app
        return app

    @property
    def middlewares(self) -> list[Middleware]:
        built = [
            Middleware(RouteLabelledMetrics, *m.args, routes=self.routes_served, **m.kwargs)
            if m.cls is RunnerTrafficMetricsMiddleware
            else m
            for m in super().middlewares
        ]
        # outermost but for the metrics: it sees the 504 of BentoML's timeout and every guard's answer
        at = 1 if built and built[0].cls is RouteLabelledMetrics else 0
        built.insert(at, Middleware(StatusLogMiddleware, logger=logger))
        built.append(Middleware(AllowEveryMethod, routes=self.routes_served))
        return built

    async def api_endpoint(self, name: str, request: Request) -> Response:
        try:
            return await super().api_endpoint(name, request)
        except ValidationError as exc:
            if exc.title != self.service.apis[name].input_spec.__name__:
                # not the request's body but a model the service built: its bug, a 500 (BentoML would say 400)
                raise RuntimeError(f"{name}: the service built an invalid {exc.title}: {exc.error_count()} errors") from exc
            return JSONResponse({"error": validation_message(exc.errors())}, status_code=400)

    async def openapi_spec_view(self, req: Request) -> Response:
        response = await super().openapi_spec_view(req)
        if response.status_code != 200:
            return response
        return JSONResponse(conform_spec(json.loads(response.body)))


# Liveness: answered without a key.
_OPEN_PATHS = frozenset({"/healthz", "/livez"})
_ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}
# what each authenticated operation can answer besides its success, beyond what its own spec says
_POST_ANSWERS = {
    "400": "Bad input: the message names the field, the rule and the value.",
    "404": "None of the customer ids is known (or, for outcomes, no decision is recorded for one).",
    "413": "The body is larger than serving.max_body_bytes.",
    "415": "The body is not JSON.",
    "500": "An unexpected error (logged).",
    "503": "A store is down: the message names it.",
    "504": "The request ran out of time.",
}
_GET_ANSWERS = {
    "400": "A bad query parameter: the message names it, the rule and the value.",
    "503": "The ledger is down.",
    "504": "The request ran out of time.",
}
_OUTCOME_ANSWERS = {"409": "An outcome whose horizon_end is after now: it cannot be known yet; nothing was recorded."}


def conform_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI spec BentoML generates, made to say what the service answers.

    Every operation but liveness needs the bearer key (declared as a security scheme) and
    may answer 401; the POST APIs need their body and answer 400/404/413/415/500/503/504
    with the service's `{"error": ...}` (BentoML documents its own error models, with a
    `detail` the service never sends); `GET /interventions` answers 400, not FastAPI's 422.
    """
    spec = copy.deepcopy(spec)
    components = spec.setdefault("components", {})
    components.setdefault("schemas", {})["ErrorBody"] = _error_body_schema()
    components["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "One of serving.api_keys."}
    }
    spec["security"] = [{"bearer": []}]
    for path, item in spec.get("paths", {}).items():
        for method, operation in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            responses = operation.setdefault("responses", {})
            if path in _OPEN_PATHS:
                operation["security"] = []
                continue
            answers = {"401": "No key, or not one of the service's keys."}
            if method == "post":
                operation.get("requestBody", {})["required"] = True
                answers |= _POST_ANSWERS | (_OUTCOME_ANSWERS if path == "/outcomes" else {})
            elif path == "/interventions":
                responses.pop("422", None)
                answers |= _GET_ANSWERS
            for status, description in answers.items():
                responses[status] = {"description": description, "content": {"application/json": {"schema": _ERROR_BODY}}}
            if path == "/readyz":  # BentoML's probe: no body either way
                responses["503"] = {"description": "Not ready: a store or the models are not there."}
    return spec


def _error_body_schema() -> dict[str, Any]:
    from serving.service import ErrorBody

    return ErrorBody.model_json_schema()
