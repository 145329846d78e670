"""The HTTP client's behaviour that needs no server: arguments, typed errors, no answer."""

from __future__ import annotations

import pytest

import arbiter_events as ae
from arbiter_events._errors import server_error
from conftest import free_port


def test_smoke_no_server_is_a_connection_error():
    client = ae.Client(f"http://127.0.0.1:{free_port()}", "t", timeout=2)
    with pytest.raises(ae.ConnectionFailedError, match="no answer"):
        client.stats()
    assert client.healthz() is False


@pytest.mark.parametrize("status, body, cls", [
    (400, {"error": "bad_request", "parameter": "after", "message": "not a seq"}, ae.BadRequestError),
    (401, {"error": "unauthorized"}, ae.UnauthorizedError),
    (403, {"error": "forbidden"}, ae.ForbiddenError),
    (404, {"error": "not_found"}, ae.NotFoundError),
    (409, {"error": "conflict", "message": "cursor goes backwards"}, ae.ConflictError),
    (413, {"error": "body_too_large"}, ae.PayloadTooLargeError),
    (413, {"error": "too_many_events", "limit": 500}, ae.TooManyEventsError),
    (429, {"error": "queue_full", "retry_from": 7}, ae.QueueFullError),
    (500, {}, ae.ServerError),
])
def test_error_answers_are_typed(status, body, cls):
    error = server_error(status, body, "POST /v1/events")
    assert type(error) is cls and error.status == status and error.kind == body.get("error")
    assert str(error).startswith(f"POST /v1/events: http {status}")
    if cls is ae.TooManyEventsError:
        assert error.limit == 500
    if cls is ae.QueueFullError:
        assert error.retry_from == 7
    if cls is ae.BadRequestError:
        assert error.parameter == "after" and "not a seq" in str(error)


def test_record_checks_its_arguments():
    client = ae.Client(f"http://127.0.0.1:{free_port()}", "t", timeout=2)
    with pytest.raises(ValueError, match="format"):
        client.record([], format="xml")
    with pytest.raises(ValueError, match="batch_size"):
        client.record([], batch_size=0)
    with pytest.raises(TypeError):
        client.record([42])
    assert client.record([]).requests == 0  # nothing to send: no request


def test_the_token_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("ARBITER_EVENTS_EXPORT_TOKEN", "from-env")
    assert ae.Client("http://127.0.0.1:1")._token == "from-env"
    monkeypatch.delenv("ARBITER_EVENTS_EXPORT_TOKEN")
    monkeypatch.setenv("ARBITER_EVENTS_RECORD_TOKEN", "record-env")
    assert ae.Client("http://127.0.0.1:1")._token == "record-env"
    assert ae.Client("http://127.0.0.1:1", " given \n")._token == "given"


def test_events_are_sent_in_their_json_form(golden_records):
    first = ae.typed(golden_records[6])
    assert isinstance(first, ae.RoutingDecision)
    from arbiter_events._client import _event_json

    assert _event_json(first) == first.to_event()
    assert _event_json({"type": "custom", "name": "x", "attributes": {}})["name"] == "x"
