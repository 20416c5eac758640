"""The service as its clients see it: keys, bad input, metrics, paging, logs; a real `bentoml serve`.

One server on the engine's SQLite stores for the request tests; the outage tests live in
`test_service_faults.py` with their own Redis and PostgreSQL link.
"""

from __future__ import annotations

import json
import time

import httpx
import pandas as pd
import pytest

from serving.service import MAX_IDS

from tests.e2e.servers import API_KEY, AUTH, bentoml_service, service_env


@pytest.fixture(scope="module")
def api(engine, tmp_path_factory):
    """(base URL, server log path, known customer ids) of a service on the engine's stores."""
    log = tmp_path_factory.mktemp("service") / "serve.log"
    env = service_env(engine.settings, tmp_path_factory.mktemp("bentoml_home"))  # the default body limit
    known = pd.read_parquet(engine.interventions.scores_path)["customer_id"].head(20).tolist()
    with bentoml_service(env, log) as base:
        yield base, log, known


def _post(base: str, path: str, body, headers=AUTH) -> httpx.Response:
    if isinstance(body, (bytes, str)):
        return httpx.post(f"{base}{path}", content=body, headers={**headers, "content-type": "application/json"}, timeout=30)
    return httpx.post(f"{base}{path}", json=body, headers=headers, timeout=30)


ENDPOINTS = [
    ("POST", "/score"),
    ("POST", "/interventions"),
    ("POST", "/outcomes"),
    ("GET", "/interventions?campaign=any"),
    ("GET", "/ready"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/docs.json"),
    ("GET", "/"),
]


@pytest.mark.parametrize("method,path", ENDPOINTS)
@pytest.mark.parametrize("header", [None, "Bearer wrong-key-wrong-key-0000", f"Basic {API_KEY}", "Bearer"])
def test_every_endpoint_but_health_needs_a_valid_key(api, method, path, header):
    base, _, known = api
    headers = {"Authorization": header} if header else {}
    response = httpx.request(method, f"{base}{path}", json={"customer_ids": known[:1]}, headers=headers, timeout=30)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "API key" in response.json()["error"]
    assert API_KEY not in response.text


@pytest.mark.parametrize("path", ["/healthz", "/livez"])
def test_health_needs_no_key(api, path):
    assert httpx.get(f"{api[0]}{path}", timeout=10).status_code == 200


def test_with_the_key_every_endpoint_answers(api):
    base, _, known = api
    assert _post(base, "/score", {"customer_ids": known[:2]}).status_code == 200
    ready = httpx.get(f"{base}/ready", headers=AUTH, timeout=30)
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "models": ready.json()["models"], "online_store": "ok", "ledger": "ok"}
    assert httpx.get(f"{base}/readyz", headers=AUTH, timeout=30).status_code == 200
    spec = httpx.get(f"{base}/docs.json", headers=AUTH, timeout=30).json()
    assert {"/score", "/interventions", "/outcomes", "/ready"} <= set(spec["paths"])
    assert {"post", "get"} <= set(spec["paths"]["/interventions"])


def test_the_spec_documents_the_key_and_every_status_the_service_answers(api):
    spec = httpx.get(f"{api[0]}/docs.json", headers=AUTH, timeout=30).json()
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert spec["security"] == [{"bearer": []}]
    assert spec["paths"]["/healthz"]["get"]["security"] == []
    error = {"$ref": "#/components/schemas/ErrorBody"}
    documented = {
        ("/score", "post"): {"200", "400", "401", "404", "413", "415", "500", "503", "504"},
        ("/interventions", "post"): {"200", "400", "401", "404", "413", "415", "500", "503", "504"},
        ("/outcomes", "post"): {"200", "400", "401", "404", "409", "413", "415", "500", "503", "504"},
        ("/interventions", "get"): {"200", "400", "401", "503", "504"},
        ("/metrics", "get"): {"200", "401"},
    }
    for (path, method), statuses in documented.items():
        operation = spec["paths"][path][method]
        assert set(operation["responses"]) == statuses, (path, method)
        assert operation["responses"]["401"]["content"]["application/json"]["schema"] == error
        if method == "post":
            assert operation["requestBody"]["required"] is True
            assert operation["responses"]["400"]["content"]["application/json"]["schema"] == error
    assert spec["components"]["schemas"]["ErrorBody"]["required"] == ["error"]


@pytest.mark.parametrize("path,allowed", [("/interventions", "GET, POST"), ("/score", "POST"), ("/ready", "GET")])
def test_a_method_the_path_does_not_serve_gets_405_allowing_every_method_it_does(api, path, allowed):
    for method in ("DELETE", "OPTIONS", "PUT"):
        response = httpx.request(method, f"{api[0]}{path}", headers=AUTH, timeout=30)
        assert response.status_code == 405
        assert response.headers["allow"] == allowed


BAD_BODIES = {
    "malformed JSON": ('{"customer_ids": [1, 2', 400, ""),
    "wrong type of the list": ({"customer_ids": "17"}, 400, "customer_ids"),
    "wrong type of an id": ({"customer_ids": [{"id": 1}]}, 400, "customer_ids[0]: Value error, a customer id must be"),
    "empty list": ({"customer_ids": []}, 400, "customer_ids"),
    "oversized list": ({"customer_ids": list(range(1, MAX_IDS + 2))}, 400, "customer_ids"),
    "empty id": ({"customer_ids": ["7590-VHVEG", ""]}, 400, "customer_ids[1]: Value error, customer id '' is empty"),
    "overlong id": ({"customer_ids": ["x" * 129]}, 400, "has 129 characters, more than 128"),
    "control character in an id": ({"customer_ids": ["a\u0007b"]}, 400, "customer id 'a\\x07b' holds a control character"),
    "integer beyond 64 bits": ({"customer_ids": [2**63]}, 400, "an integer customer id must be within"),
    "missing field": ({"ids": [1]}, 400, "customer_ids"),
    "body over the size limit": ({"customer_ids": list(range(10**9, 10**9 + 40_000))}, 413, "larger than the limit"),
    "true as an id": (
        '{"customer_ids": [true]}', 400, "customer_ids[0]: Value error, a customer id must be a string or an integer (got true)"
    ),
    "false as an id": ('{"customer_ids": [3, false]}', 400, "customer_ids[1]: Value error, a customer id must be"),
    "a float as an id": ('{"customer_ids": [3.0]}', 400, "customer_ids[0]: Value error, a customer id must be"),
}


@pytest.mark.parametrize("path", ["/score", "/interventions"])
@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_bad_input_gets_4xx_naming_the_field(api, path, case):
    body, status, needle = BAD_BODIES[case]
    response = _post(api[0], path, body)
    assert response.status_code == status, response.text
    assert list(response.json()) == ["error"]  # one message, as documented
    assert needle in response.json()["error"]


@pytest.mark.parametrize("content_type", ["multipart/form-data", "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_json_gets_415(api, content_type):
    response = httpx.post(
        f"{api[0]}/score", content=b'{"customer_ids": [1]}', headers={**AUTH, "content-type": content_type}, timeout=30
    )
    assert response.status_code == 415
    assert "must be JSON" in response.json()["error"]


def test_a_campaign_is_a_string_or_absent_not_null(api):
    response = _post(api[0], "/interventions", {"customer_ids": [5], "campaign": None})
    assert response.status_code == 400 and "campaign" in response.json()["error"], response.text


def test_a_repeated_id_is_answered_once(api):
    """123 and "123" are one customer (JSON Schema cannot say so): each customer is answered once, in the order asked."""
    base, _, known = api
    answer = _post(base, "/score", {"customer_ids": [known[0], str(known[0]), known[1], known[0]]})
    assert answer.status_code == 200, answer.text
    assert [s["customer_id"] for s in answer.json()["scores"]] == [str(known[0]), str(known[1])]


def test_unknown_ids(api):
    base, _, known = api
    only_unknown = _post(base, "/score", {"customer_ids": [10_000_000, 10_000_001]})
    assert only_unknown.status_code == 404
    assert "customer_ids" in only_unknown.json()["error"] and "10000001" in only_unknown.json()["error"]
    # with known ids beside it, an unknown id is reported per id and the others are scored
    mixed = _post(base, "/score", {"customer_ids": [known[0], 10_000_000]}).json()
    assert [s["customer_id"] for s in mixed["scores"]] == [str(known[0])]
    assert [e["customer_id"] for e in mixed["errors"]] == ["10000000"]
    # nothing is recorded for an unknown customer
    decided = _post(base, "/interventions", {"customer_ids": [10_000_002], "campaign": "unknown-only"})
    assert decided.status_code == 404
    listing = httpx.get(f"{base}/interventions", params={"campaign": "unknown-only"}, headers=AUTH, timeout=30)
    assert listing.json()["decisions"] == []


@pytest.mark.parametrize(
    "params,needle",
    [({}, "campaign"), ({"campaign": "x", "limit": 0}, "limit"), ({"campaign": "bad campaign!"}, "campaign"),
     ({"campaign": "x", "after": ""}, "after"), ({"campaign": "x", "after": "a\x01"}, "after")],
)
def test_bad_list_queries_get_400_naming_the_field(api, params, needle):
    response = httpx.get(f"{api[0]}/interventions", params=params, headers=AUTH, timeout=30)
    assert response.status_code == 400  # as the POST APIs answer, not FastAPI's 422
    assert list(response.json()) == ["error"]
    assert f"query parameter {needle}:" in response.json()["error"]


def test_campaign_list_pages_through_every_decision(api):
    base, _, known = api
    ids = sorted(str(c) for c in known[:7])  # by text, as the list pages
    assert _post(base, "/interventions", {"customer_ids": known[:7], "campaign": "paging"}).status_code == 200
    seen, after, pages = [], None, 0
    while True:
        params = {"campaign": "paging", "limit": 3, **({"after": after} if after is not None else {})}
        page = httpx.get(f"{base}/interventions", params=params, headers=AUTH, timeout=30).json()
        seen += [d["customer_id"] for d in page["decisions"]]
        pages += 1
        after = page["next_after"]
        if after is None:
            break
    assert seen == ids
    assert pages == 3


def test_metrics_count_requests_and_scores_per_model_version(api):
    base, _, known = api
    before = _scores_served(base)
    response = _post(base, "/score", {"customer_ids": known[:4]})
    version = response.json()["scores"][0]["model_version"]
    text = httpx.get(f"{base}/metrics", headers=AUTH, timeout=30).text
    assert _scores_served(base).get(version, 0) - before.get(version, 0) == 4
    assert 'endpoint="/score"' in text and "bentoml_service_request_duration_seconds_bucket" in text


def test_paths_the_service_does_not_serve_share_one_metrics_label(api):
    """A scanner's made-up paths add no series to /metrics (the 20,000-path run with memory: test_service_load.py)."""
    base = api[0]
    with httpx.Client(timeout=30) as client:
        # the series of unknown paths (401 and 404) and of static files, once
        client.get(f"{base}/scan-warm-up")
        client.post(f"{base}/scan-warm-up", headers=AUTH, json={})
        client.get(f"{base}/static_content/scan-warm-up", headers=AUTH)
        before = httpx.get(f"{base}/metrics", headers=AUTH, timeout=30).text
        for i in range(500):
            client.get(f"{base}/scan-{i}/x?y={i}")  # 401: no key
            client.post(f"{base}/scan-key-{i}", headers=AUTH, json={})  # 404: a key, but no such path
            client.get(f"{base}/static_content/scan-{i}.js", headers=AUTH)  # 404 under BentoML's static files
        after = httpx.get(f"{base}/metrics", headers=AUTH, timeout=30).text
    assert "scan-" not in after
    assert _requests(after, "other", "401") - _requests(before, "other", "401") == 500
    assert _requests(after, "other", "404") - _requests(before, "other", "404") == 500
    assert _requests(after, "/static_content", "404") - _requests(before, "/static_content", "404") == 500
    assert abs(len(after) - len(before)) < 0.01 * len(before)  # counts grew, not series
    # the known routes keep their own label
    assert _post(base, "/score", {"customer_ids": api[2][:1]}).status_code == 200
    assert _requests(httpx.get(f"{base}/metrics", headers=AUTH, timeout=30).text, "/score", "200") >= 1


def _requests(metrics: str, endpoint: str, status: str) -> float:
    prefix = "bentoml_service_request_total{"
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith(prefix) and f'endpoint="{endpoint}"' in line and f'http_response_code="{status}"' in line
    )


def _scores_served(base: str) -> dict[str, float]:
    text = httpx.get(f"{base}/metrics", headers=AUTH, timeout=30).text
    out = {}
    for line in text.splitlines():
        if line.startswith("churn_scores_served_total{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('model_version="')[1].split('"')[0]] = float(value)
    return out


def test_no_key_or_traceback_in_the_log(api):
    base, log, _ = api
    # a request with the key, a failing one with a key-like wrong token: neither may reach the log
    _post(base, "/score", '{"customer_ids": [1,', headers={"Authorization": f"Bearer {API_KEY}"})
    _post(base, "/score", {"customer_ids": [1]}, headers={"Authorization": f"Bearer {API_KEY[::-1]}"})
    # the client's mistake is logged once, as a warning naming what was wrong
    line = _logged(log, "request body: Invalid JSON")[-1]
    assert "[WARNING]" in line and "POST /score answered 400 in" in line
    text = log.read_text()
    assert API_KEY not in text and API_KEY[::-1] not in text
    assert "Traceback" not in text


def test_a_client_error_is_a_warning_not_an_error(api):
    base, log, _ = api
    _post(base, "/score", {"customer_ids": ["9d1c", ""]})
    httpx.get(f"{base}/interventions", params={"campaign": "x", "limit": "many-8e2f"}, headers=AUTH, timeout=30)
    for needle in ("customer_ids[1]: Value error, customer id '' is empty (got '')", "(got 'many-8e2f')"):
        logged = _logged(log, needle)
        assert all("[WARNING]" in line and "[ERROR]" not in line for line in logged), logged


def _logged(log, needle: str, within: float = 10) -> list[str]:
    """The server log's lines with `needle`, once there is one (the worker's output reaches the file a little later)."""
    deadline = time.monotonic() + within
    while not (lines := [line for line in log.read_text().splitlines() if needle in line]):
        assert time.monotonic() < deadline, f"no log line with {needle!r} after {within:g} s"
        time.sleep(0.2)
    return lines


@pytest.mark.parametrize("revenue", ["1e999", "-1e999", "Infinity", "-Infinity", "NaN"])
def test_outcomes_refuse_a_revenue_that_is_not_a_finite_number(engine, api, revenue):
    base, _, known = api
    assert _post(base, "/interventions", {"customer_ids": known[:1], "campaign": "finite"}).status_code == 200
    body = (
        f'{{"outcomes": [{{"campaign": "finite", "customer_id": {known[0]}, "churned": false, '
        f'"revenue": {revenue}, "horizon_end": "{engine.settings.now.isoformat()}"}}]}}'
    )
    response = _post(base, "/outcomes", body)
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith("outcomes[0].revenue: Input should be a finite number")


def test_the_documented_1000_outcomes_fit_the_default_body_limit(engine, api):
    """1,000 outcomes at their largest (128-character campaign id), indented: recorded, not refused as too large."""
    base = api[0]
    campaign = "c" * 128
    ids = pd.read_parquet(engine.interventions.scores_path)["customer_id"].head(MAX_IDS).tolist()
    assert _post(base, "/interventions", {"customer_ids": ids, "campaign": campaign}).status_code == 200
    outcomes = [
        {"campaign": campaign, "customer_id": c, "churned": k % 2 == 0, "revenue": 1234567.8912345678,
         "horizon_end": engine.settings.now.isoformat(timespec="microseconds")}
        for k, c in enumerate(ids)
    ]
    body = json.dumps({"outcomes": outcomes}, indent=2)
    assert len(body) > 64_000 * 3  # far over the old limit
    response = _post(base, "/outcomes", body)
    assert response.status_code == 200, response.text[:300]
    assert response.json() == {"received": MAX_IDS, "recorded": MAX_IDS}


def test_outcomes_are_recorded_once_and_must_name_a_decision(engine, api):
    base, _, known = api
    ids = sorted(known[:3])
    assert _post(base, "/interventions", {"customer_ids": ids, "campaign": "outcomes"}).status_code == 200
    # the service's clock is the engine's (pinned): a horizon that ended then is known, a later one is not
    ended = engine.settings.now.isoformat()
    body = {
        "outcomes": [
            {"campaign": "outcomes", "customer_id": c, "churned": c == ids[0], "revenue": 12.5, "horizon_end": ended}
            for c in ids
        ]
    }
    future = {**body["outcomes"][0], "horizon_end": (engine.settings.now + pd.Timedelta(days=1)).isoformat()}
    early = _post(base, "/outcomes", {"outcomes": [future]})
    assert early.status_code == 409  # valid, but not knowable yet
    assert "horizon_end after now" in early.json()["error"] and "nothing was recorded" in early.json()["error"]
    first = _post(base, "/outcomes", body)
    assert first.status_code == 200, first.text
    assert first.json() == {"received": 3, "recorded": 3}
    assert _post(base, "/outcomes", body).json() == {"received": 3, "recorded": 0}

    stranger = {**body["outcomes"][0], "campaign": "never-run"}
    refused = _post(base, "/outcomes", {"outcomes": [body["outcomes"][1], stranger]})
    assert refused.status_code == 404  # no such decision
    assert "never-run" in refused.json()["error"] and "nothing was recorded" in refused.json()["error"]

    negative = _post(base, "/outcomes", {"outcomes": [{**body["outcomes"][0], "revenue": -1}]})
    assert negative.status_code == 400 and "revenue" in negative.text


def test_ids_are_strings_and_an_integer_is_the_customer_of_its_text(engine, api):
    """Text ids through /score, /interventions, /outcomes and the campaign list; the simulator's integers as text."""
    base, _, known = api
    as_text = [str(c) for c in known[10:13]]
    scored = _post(base, "/score", {"customer_ids": [as_text[0], known[11], "7590-VHVEG", f"0{known[12]}"]})
    assert scored.status_code == 200, scored.text
    assert [s["customer_id"] for s in scored.json()["scores"]] == as_text[:2]
    # an id the simulator's integer entity cannot hold is an unknown customer, as any unknown id
    assert scored.json()["errors"] == [
        {"customer_id": "7590-VHVEG", "error": "unknown customer: the online store has no features for this id"},
        {"customer_id": f"0{known[12]}", "error": "unknown customer: the online store has no features for this id"},
    ]
    # the same customer asked by its integer and by its text scores alike
    by_int = _post(base, "/score", {"customer_ids": [known[10]]}).json()["scores"][0]
    assert by_int == scored.json()["scores"][0]
    only_text = _post(base, "/score", {"customer_ids": ["7590-VHVEG"]})
    assert only_text.status_code == 404 and "7590-VHVEG: unknown customer" in only_text.json()["error"]

    decided = _post(base, "/interventions", {"customer_ids": as_text, "campaign": "text-ids"})
    assert decided.status_code == 200, decided.text
    assert sorted(d["customer_id"] for d in decided.json()["decisions"]) == sorted(as_text)
    # asked again by integers: the same recorded decisions
    again = _post(base, "/interventions", {"customer_ids": known[10:13], "campaign": "text-ids"}).json()
    assert again["decisions"] == decided.json()["decisions"]
    listing = httpx.get(f"{base}/interventions", params={"campaign": "text-ids", "after": as_text[0][:-1]}, headers=AUTH, timeout=30)
    assert [d["customer_id"] for d in listing.json()["decisions"]] == sorted(c for c in as_text if c > as_text[0][:-1])
    outcome = {"campaign": "text-ids", "churned": False, "revenue": 1.0, "horizon_end": engine.settings.now.isoformat()}
    recorded = _post(base, "/outcomes", {"outcomes": [{**outcome, "customer_id": as_text[0]}, {**outcome, "customer_id": known[11]}]})
    assert recorded.json() == {"received": 2, "recorded": 2}
    assert _post(base, "/outcomes", {"outcomes": [{**outcome, "customer_id": known[10]}]}).json()["recorded"] == 0


def test_the_spec_says_an_id_is_a_string_or_an_integer_and_answers_strings(api):
    spec = httpx.get(f"{api[0]}/docs.json", headers=AUTH, timeout=30).json()
    inputs = [s for s in _schemas(spec) if s.get("description", "").startswith("A customer id")]
    assert len(inputs) >= 2, "no customer id schemas in /score's list and an outcome"
    for schema in inputs:
        assert {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1} in schema["anyOf"]
        string = next(s for s in schema["anyOf"] if s.get("type") == "string")
        assert (string["minLength"], string["maxLength"]) == (1, 128)
    answered = [
        schema["properties"]["customer_id"]
        for name, schema in spec["components"]["schemas"].items()
        if name in ("ExplainedScore", "Decision", "CustomerError")
    ]
    assert len(answered) == 3 and all(field["type"] == "string" for field in answered)
    after = next(p for p in spec["paths"]["/interventions"]["get"]["parameters"] if p["name"] == "after")
    assert "string" in json.dumps(after["schema"]) and "integer" not in json.dumps(after["schema"])


def _schemas(node):
    """Every schema object under `node` that carries anyOf (the spec's nested dicts and lists)."""
    if isinstance(node, dict):
        if "anyOf" in node:
            yield node
        for value in node.values():
            yield from _schemas(value)
    elif isinstance(node, list):
        for value in node:
            yield from _schemas(value)
