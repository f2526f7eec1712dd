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


def test_text_lines_are_the_stdlib_formatters_with_each_seconds_time_written_once():
    from paperwire.logs import TextFormatter

    ours, stdlib = TextFormatter(), logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Within one second, across seconds, back again, and at its edges: the same text every time.
    for created in (1_700_000_000.0, 1_700_000_000.25, 1_700_000_000.999, 1_700_000_001.0, 1_700_000_000.5, 0.001):
        record = logging.LogRecord("alerts.deliver", logging.INFO, __file__, 1, "sent user=%s", ("ada",), None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert ours.format(record) == stdlib.format(record)
    assert ours.formatTime(record, "%H") == stdlib.formatTime(record, "%H")
