"""Structured JSON logs, one object a line (orjson). Configured by the CLI
only (``configure_logging``), never at import time. Fields passed with
``extra=`` become keys of the object; a line logged while answering an RPC
carries that RPC's ``request_id`` (set by ``gateway.ops.interceptors``).

What goes in a log line: at info level and above, never claim contents
(practitioner codes, line items, amounts): those are health-insurance data;
ids of requests, versions, counts and timings are fine.

gRPC has two loggers. Its Python side logs through ``logging`` (``grpc.*``,
and ``absl`` where absl-py is installed): ``configure_logging`` sends them to
the JSON handler like every other logger. Its C core writes lines of its own
format straight to file descriptor 2, where they cannot be made JSON:
``quiet_grpc_core`` turns them off (``GRPC_VERBOSITY=NONE``) before gRPC is
imported, unless the operator set ``GRPC_VERBOSITY`` to see them (e.g.
``GRPC_VERBOSITY=debug`` to diagnose a TLS handshake). What they would say
that matters reaches us anyway as Python errors: a failed bind is one
("port 50051 on 0.0.0.0 is in use"), and a client's failed call is the
client's error.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import time
from collections.abc import MutableMapping

import orjson

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

# The id of the RPC being answered in this task (asyncio tasks copy the context).
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            doc["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


# The Python loggers of gRPC and absl; they must reach the JSON handler.
GRPC_LOGGERS = ("grpc", "absl")


def quiet_grpc_core(environ: MutableMapping[str, str] | None = None) -> None:
    """Silence gRPC core's own stderr lines unless ``GRPC_VERBOSITY`` is set.
    Call before ``grpc`` is imported: the core reads the variable once, then."""
    (os.environ if environ is None else environ).setdefault("GRPC_VERBOSITY", "NONE")


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in GRPC_LOGGERS:
        # Through the root's handler only (grpc adds a NullHandler; absl can
        # add its own plain-text one).
        logger = logging.getLogger(name)
        logger.handlers[:] = [h for h in logger.handlers if type(h) is logging.NullHandler]
        logger.propagate = True
