"""Structured logs: JSON lines carrying the ids passed as `extra`."""

from __future__ import annotations

import json
import logging

from paperwire.logs import JsonFormatter


def test_json_lines_carry_extra_fields():
    record = logging.LogRecord("consumers.matcher", logging.INFO, __file__, 1, "match %s", ("x",), None)
    record.user = "ada"
    record.paper_id = "2611.90001"
    entry = json.loads(JsonFormatter().format(record))
    assert entry["msg"] == "match x" and entry["level"] == "INFO" and entry["logger"] == "consumers.matcher"
    assert entry["user"] == "ada" and entry["paper_id"] == "2611.90001"
    assert entry["ts"].endswith("+00:00")
