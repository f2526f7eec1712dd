"""Logging set-up for paperwire processes: readable text for people, or JSON lines for a log
pipeline (``PAPERWIRE_LOG_FORMAT=json``). Fields passed as ``extra={"user": ..., "paper_id": ...}``
become JSON keys, so an operator can follow one paper or one reader through every stage."""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
NOISY = ("kafka", "aiosmtpd", "mail.log", "sentence_transformers", "httpx", "urllib3")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """``%(asctime)s %(levelname)s %(name)s: %(message)s``, the stdlib's text, with each second's
    date and time written once: ``time.strftime`` per record was ~2.5 % of the mailer's CPU at
    ~1,200 logged emails a second (py-spy)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second[0]:
            self._second = (second, time.strftime(self.default_time_format, self.converter(record.created)))
        return self.default_msec_format % (self._second[1], record.msecs)


def setup(fmt: str = "text", verbose: bool = False) -> None:
    # Neither format shows where a call was made from, nor its thread or process: the logging
    # HOWTO's "Optimization" switches, so each record skips collecting them (a stack walk and
    # three lookups; with the timestamps above, ~6 % of the mailer's CPU, one line per email).
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
