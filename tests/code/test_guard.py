"""API keys, body limit and traceback-free logs, on a bare ASGI app (no server needed)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from churn.errors import ConfigError
from churn.settings import load_settings
from serving.guard import (
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    JsonOnlyMiddleware,
    NoTracebackFilter,
    StatusLogMiddleware,
    validation_message,
)

KEY = "unit-test-key-0123456789"


async def _echo(scope, receive, send):
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def _call(app, path="/score", headers=(), chunks=(b"",), method="POST"):
    scope = {"type": "http", "method": method, "path": path, "headers": [(k.lower(), v) for k, v in headers]}
    pending = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent = []

    async def receive():
        return pending.pop(0)

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.parametrize(
    "header,status",
    [
        (None, 401),
        (b"Bearer " + KEY.encode(), 200),
        (b"bearer " + KEY.encode(), 200),
        (b"Bearer " + KEY.encode()[:-1], 401),
        (b"Bearer " + KEY.encode() + b"x", 401),
        (b"Basic " + KEY.encode(), 401),
        (b"Bearer", 401),
        (b"Bearer other-key-0123456789ab", 200),
    ],
)
def test_api_key_middleware(header, status):
    app = ApiKeyMiddleware(_echo, keys=lambda: [KEY, "other-key-0123456789ab"])
    got, body = _call(app, headers=[(b"authorization", header)] if header else [])
    assert got == status
    assert KEY.encode() not in body


def test_health_is_open_and_no_keys_lets_nobody_in():
    app = ApiKeyMiddleware(_echo, keys=lambda: [])
    assert _call(app, path="/healthz")[0] == 200
    assert _call(app, headers=[(b"authorization", b"Bearer ")])[0] == 401


@pytest.mark.parametrize(
    "chunks,declared,status",
    [([b"x" * 100], None, 200), ([b"x" * 1025], None, 413), ([b"x" * 600, b"x" * 600], None, 413),
     ([b"x" * 10], b"5000", 413)],
)
def test_body_limit(chunks, declared, status):
    app = BodyLimitMiddleware(_echo, max_bytes=lambda: 1024)
    headers = [(b"content-length", declared)] if declared else []
    got, body = _call(app, headers=headers, chunks=chunks)
    assert got == status
    if status == 200:
        assert body == b"".join(chunks)  # passed on unchanged
    else:
        assert b"larger than the limit of 1024 bytes" in body


def test_no_traceback_filter_keeps_one_line():
    try:
        raise ValueError("customer_ids: bad\nsecond line")
    except ValueError:
        record = logging.getLogger("t").makeRecord("t", logging.ERROR, __file__, 1, "Exception on %s", ("/score",),
                                                   exc_info=__import__("sys").exc_info())
    assert NoTracebackFilter().filter(record)
    assert record.exc_info is None
    assert record.getMessage() == "Exception on /score: ValueError: customer_ids: bad"


def test_short_key_is_refused_without_echoing_it():
    with pytest.raises(ConfigError, match=r"serving.api_keys: keys at positions \[1\] are shorter than 16") as info:
        load_settings(serving={"api_keys": [KEY, "tiny-secret"]})
    assert "tiny-secret" not in str(info.value) and KEY not in str(info.value)


@pytest.mark.parametrize(
    "content_type,status",
    [(None, 200), (b"application/json", 200), (b"application/json; charset=utf-8", 200),
     (b"multipart/form-data", 415), (b"text/plain", 415), (b"application/vnd.bentoml+pickle", 415)],
)
def test_json_only(content_type, status):
    headers = [(b"content-type", content_type)] if content_type else []
    got, body = _call(JsonOnlyMiddleware(_echo), headers=headers, chunks=[b"{}"])
    assert got == status
    if status == 415:
        assert b"must be JSON" in body


def test_json_only_leaves_get_alone():
    assert _call(JsonOnlyMiddleware(_echo), headers=[(b"content-type", b"text/plain")], method="GET")[0] == 200


@pytest.mark.parametrize(
    "keys,position",
    [(["    " * 5], 0), ([KEY, " " + KEY], 1), ([KEY + "\t"], 0), ([KEY, KEY + "\n"], 1)],
)
def test_a_key_of_spaces_or_with_surrounding_whitespace_is_refused(keys, position):
    with pytest.raises(ConfigError, match=rf"keys at positions \[{position}\] are blank or start or end with whitespace"):
        load_settings(serving={"api_keys": keys})


@pytest.mark.parametrize(
    "errors,message",
    [
        ([{"loc": ("outcomes", 0, "revenue"), "msg": "Input should be a finite number", "input": float("inf")}],
         "outcomes[0].revenue: Input should be a finite number (got Infinity)"),
        ([{"loc": ("customer_ids", 1), "msg": "Input should be a valid integer", "input": True}],
         "customer_ids[1]: Input should be a valid integer (got true)"),
        ([{"loc": ("query", "limit"), "msg": "Input should be greater than or equal to 1", "input": "0"}],
         "query parameter limit: Input should be greater than or equal to 1 (got '0')"),
        ([{"loc": (), "type": "json_invalid", "msg": "Invalid JSON: EOF", "input": '{"customer_ids": [1,'}],
         "request body: Invalid JSON: EOF"),
        ([{"loc": ("customer_ids",), "type": "missing", "msg": "Field required", "input": {"ids": [1]}}],
         "customer_ids: Field required"),
        ([{"loc": ("customer_ids",), "msg": "List should have at most 1000 items", "input": list(range(1001))}],
         "customer_ids: List should have at most 1000 items"),
        ([{"loc": ("campaign",), "msg": "String should match pattern", "input": "x" * 100}],
         "campaign: String should match pattern (got '" + "x" * 59 + "...)"),
        ([{"loc": (f"f{i}",), "msg": "bad"} for i in range(7)], "f0: bad; f1: bad; f2: bad; f3: bad; f4: bad; and 2 more"),
    ],
)
def test_validation_message_names_field_rule_and_value(errors, message):
    assert validation_message(errors) == message


def _answering(status, body=b'{"error": "online store unavailable: redis timed out"}'):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


@pytest.mark.parametrize(
    "status,level", [(200, None), (400, logging.WARNING), (401, None), (404, None), (413, None), (500, logging.ERROR),
                     (503, logging.ERROR), (504, logging.ERROR)],
)
def test_status_log_warns_of_400_and_errs_on_5xx(caplog, status, level):
    logger = logging.getLogger("test.status")
    with caplog.at_level(logging.DEBUG, logger="test.status"):
        assert _call(StatusLogMiddleware(_answering(status), logger))[0] == status
    records = [r for r in caplog.records if r.name == "test.status"]
    if level is None:
        assert records == []
    else:
        assert [r.levelno for r in records] == [level]
        assert records[0].getMessage().startswith(f"POST /score answered {status} in ")
        assert records[0].getMessage().endswith(": online store unavailable: redis timed out")
