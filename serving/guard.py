"""What stands between the network and the service: API keys, body size, quiet logs.

Plain ASGI middlewares (BentoML mounts them around every route, its own `/metrics`,
`/readyz` and docs included), a log line per failed answer, the wording of validation
errors and a logging filter. They know nothing of churn.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

Scope = dict
Message = dict
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Liveness only: a load balancer or orchestrator asks these without a key.
OPEN_PATHS = frozenset({"/healthz", "/livez"})


async def _json_error(send: Send, status: int, message: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ApiKeyMiddleware:
    """Lets a request through only with `Authorization: Bearer <one of the keys>`.

    Every configured key is compared, in constant time, whatever the outcome of the
    others, so the response time does not tell how much of a guess was right.
    """

    def __init__(self, app: ASGIApp, keys: Callable[[], list[str]], open_paths: frozenset[str] = OPEN_PATHS):
        self.app = app
        # read once, when the server builds its app; an empty list lets nobody in
        self._keys = [key.encode() for key in keys()]
        self._open_paths = open_paths

    def _authorized(self, scope: Scope) -> bool:
        header = next((v for k, v in scope.get("headers", []) if k == b"authorization"), b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token:
            return False
        matches = [hmac.compare_digest(token.strip(), key) for key in self._keys]
        return any(matches)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._open_paths or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        await _json_error(
            send,
            401,
            "missing or invalid API key: send the header 'Authorization: Bearer <key>'",
            [(b"www-authenticate", b"Bearer")],
        )


class BodyLimitMiddleware:
    """Refuses request bodies over `max_bytes` with 413, before the service parses them.

    The body is read here (it is small by construction) and handed on unchanged, so that
    a chunked upload without Content-Length is bounded too.
    """

    def __init__(self, app: ASGIApp, max_bytes: Callable[[], int]):
        self.app = app
        self.max_bytes = max_bytes()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope.get("headers", []) if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message]), send)
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._too_large(send)
                return
            more = message.get("more_body", False)
        await self.app(scope, _replay([{"type": "http.request", "body": b"".join(chunks), "more_body": False}], receive), send)

    async def _too_large(self, send: Send) -> None:
        await _json_error(send, 413, f"request body is larger than the limit of {self.max_bytes} bytes")


class JsonOnlyMiddleware:
    """Refuses a request body that is not JSON with 415, before the framework picks a parser.

    The API takes JSON only; BentoML would otherwise try its multipart or other decoders
    on a mislabelled body and fail with a 500.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") in {"POST", "PUT", "PATCH"}:
            declared = next((v for k, v in scope.get("headers", []) if k == b"content-type"), b"application/json")
            media_type = declared.split(b";")[0].strip().lower()
            if media_type != b"application/json":
                shown = media_type.decode("latin-1")[:64]
                await _json_error(send, 415, f"request body must be JSON (Content-Type: application/json); got '{shown}'")
                return
        await self.app(scope, receive, send)


class StatusLogMiddleware:
    """One log line per answer that went wrong: 400 at WARNING (the client's fault), 5xx at ERROR.

    The line names the method, path, status, time taken and the answer's `error` message
    (which names the field or store), so that a 503 of a store or a 504 of a request that
    ran out of time is in the log. Other 4xx (no or wrong key, unknown path, body too large)
    are counted in `/metrics` only: they are what a scanner produces by the thousand.
    """

    def __init__(self, app: ASGIApp, logger: logging.Logger):
        self.app = app
        self.logger = logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status, body = 0, b""

        async def watched(message: Message) -> None:
            nonlocal status, body
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and _logged_level(status) and len(body) < 4096:
                body += message.get("body", b"")
            await send(message)

        await self.app(scope, receive, watched)
        level = _logged_level(status)
        if level:
            took = (time.perf_counter() - began) * 1000
            self.logger.log(
                level, "%s %s answered %d in %.0f ms: %s", scope.get("method"), scope["path"][:200], status, took,
                _error_of(body),
            )


def _logged_level(status: int) -> int:
    return logging.ERROR if status >= 500 else logging.WARNING if status == 400 else 0


def _error_of(body: bytes) -> str:
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        error = None
    text = error if isinstance(error, str) else body.decode("utf-8", "replace")
    return " ".join(text.split())[:500]


def validation_message(errors: Sequence[Mapping[str, Any]], limit: int = 5) -> str:
    """Pydantic's validation errors in one line, each naming its field, the rule and the value.

    `outcomes[0].revenue: Input should be a finite number (got inf)`; a FastAPI query
    parameter reads `query parameter limit: ...`. Values that are lists or objects are not
    echoed (they can be large); scalars are, shortened.
    """
    parts = [f"{_where(e.get('loc', ()))}: {e.get('msg', 'invalid')}{_got(e)}" for e in errors[:limit]]
    more = f"; and {len(errors) - limit} more" if len(errors) > limit else ""
    return "; ".join(parts) + more


def _where(loc: Sequence[Any]) -> str:
    if loc and loc[0] in ("query", "path", "header") and len(loc) > 1:
        return f"{loc[0]} parameter {_dotted(loc[1:])}"
    if loc and loc[0] == "body":
        loc = loc[1:]
    return _dotted(loc) or "request body"


def _dotted(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


# a missing field's input is the whole object, malformed JSON's the whole body: neither is worth a log line
_NOT_ECHOED = frozenset({"missing", "json_invalid"})


def _got(error: Mapping[str, Any]) -> str:
    if "input" not in error or isinstance(error["input"], (dict, list, tuple)) or error.get("type") in _NOT_ECHOED:
        return ""
    value = error["input"]
    shown = json.dumps(value) if isinstance(value, (bool, int, float)) or value is None else repr(value)
    return f" (got {shown[:60]}{'...' if len(shown) > 60 else ''})"


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    """A `receive` that yields `messages` first, then defers to `then` (disconnects)."""
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is None:
            return {"type": "http.disconnect"}
        return await then()

    return receive


class NoTracebackFilter(logging.Filter):
    """Turns a log record's traceback into one line: exception type and message.

    The framework logs every failed request with its stack trace; a trace can carry
    request data and internals, and the issue says none may reach a log line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {_first_line(exc)}"
            record.args = None
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def quiet_tracebacks(logger_names: Iterable[str]) -> None:
    """Attach `NoTracebackFilter` to these loggers, the root logger and all their handlers."""
    flt = NoTracebackFilter()
    for logger in [logging.getLogger(), *(logging.getLogger(name) for name in logger_names)]:
        logger.addFilter(flt)
        for handler in logger.handlers:
            handler.addFilter(flt)
