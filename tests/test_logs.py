"""The JSON log formatter: one object a line, ``extra=`` fields as keys, and
the request id of the RPC being answered."""

from __future__ import annotations

import contextvars
import logging

import orjson

from gateway.ops.logs import REQUEST_ID, JsonFormatter


def render(**extra: object) -> dict[str, object]:
    record = logging.makeLogRecord(
        {"name": "gateway.t", "levelno": logging.INFO, "levelname": "INFO", "msg": "hi %s"}
    )
    record.args = ("there",)
    for key, value in extra.items():
        setattr(record, key, value)
    doc: dict[str, object] = orjson.loads(JsonFormatter().format(record))
    return doc


def test_a_line_is_one_json_object_with_the_extra_fields() -> None:
    doc = render(index_version=7)
    assert doc["msg"] == "hi there" and doc["level"] == "info" and doc["index_version"] == 7
    assert "request_id" not in doc
    assert str(doc["ts"]).endswith("Z")


def test_lines_logged_while_answering_an_rpc_carry_its_request_id() -> None:
    def in_rpc() -> dict[str, object]:
        REQUEST_ID.set("rid-1")
        return render()

    assert contextvars.copy_context().run(in_rpc)["request_id"] == "rid-1"
    assert REQUEST_ID.get() is None  # the RPC's context only
