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
- `/docs.json` documents what the service answers (`conform_spec`), so that clients and
  schemathesis can rely on it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from _bentoml_impl.server.app import ServiceAppFactory
from bentoml._internal.server.http.instruments import RunnerTrafficMetricsMiddleware
from pydantic import ValidationError
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

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


class RouteLabels:
    """The metrics label of a request path: the path of a route the app serves, a mount's path, or `other`."""

    def __init__(self) -> None:
        self.paths: frozenset[str] = frozenset()
        self.mounts: tuple[str, ...] = ()

    def learn(self, app: Starlette) -> None:
        """Read the routes of the built app, those of a mounted app (FastAPI) included."""
        paths, mounts = set(), []
        for route in app.routes:
            if isinstance(route, Mount) and hasattr(route.app, "routes"):  # a mounted app: its own routes
                paths |= {route.path + child.path for child in route.app.routes if isinstance(child, Route)}
            elif isinstance(route, Mount):  # static files: one label for the lot
                mounts.append(route.path)
            elif isinstance(route, Route):
                paths.add(route.path)
        self.paths, self.mounts = frozenset(paths), tuple(mounts)

    def __call__(self, path: str) -> str:
        if path in self.paths:
            return path
        return next((mount for mount in self.mounts if path.startswith(mount + "/")), OTHER_PATHS)


class RouteLabelledMetrics(RunnerTrafficMetricsMiddleware):
    """BentoML's request metrics with the route's label for `endpoint` in place of the raw path."""

    def __init__(self, app: Any, labels: RouteLabels, **options: Any):
        super().__init__(_RealPath(app), **options)
        self._labels = labels

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            label = self._labels(scope["path"])
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


class ChurnAppFactory(ServiceAppFactory):
    """BentoML's app factory with bounded metric labels, field-naming 400s, status logs and a conforming spec."""

    def __init__(self, service: Any, is_main: bool = False):
        super().__init__(service, is_main=is_main)
        self.route_labels = RouteLabels()

    def __call__(self) -> Starlette:
        app = super().__call__()
        self.route_labels.learn(app)  # the middlewares are built at the first request, after this
        return app

    @property
    def middlewares(self) -> list[Middleware]:
        built = [
            Middleware(RouteLabelledMetrics, *m.args, labels=self.route_labels, **m.kwargs)
            if m.cls is RunnerTrafficMetricsMiddleware
            else m
            for m in super().middlewares
        ]
        # outermost but for the metrics: it sees the 504 of BentoML's timeout and every guard's answer
        at = 1 if built and built[0].cls is RouteLabelledMetrics else 0
        built.insert(at, Middleware(StatusLogMiddleware, logger=logger))
        return built

    async def api_endpoint(self, name: str, request: Request) -> Response:
        try:
            return await super().api_endpoint(name, request)
        except ValidationError as exc:
            if exc.title != self.service.apis[name].input_spec.__name__:
                raise  # not the request's body: a bug of the service, BentoML's 500
            return JSONResponse({"error": validation_message(exc.errors())}, status_code=400)
