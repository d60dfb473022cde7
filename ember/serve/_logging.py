"""Logging in replicas: ``LoggingConfig`` (Ray's shape) and how a replica applies it.

Every replica stamps the request id (and its application, deployment and replica id) on the
records of the ``ember.serve`` logger. A ``LoggingConfig`` (``@serve.deployment(
logging_config=...)`` or ``serve.run(..., logging_config=...)``) also gives that logger a handler
of its own: text or JSON lines on stderr, or in ``logs_dir``, at ``log_level``; with
``enable_access_log`` each request then leaves one INFO line (method, route, status, time).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field, fields
from typing import Any

from ember.serve.context import RequestIdFilter

LOGGER_NAME = "ember.serve"
_ENCODINGS = ("TEXT", "JSON")
_TEXT_FORMAT = ("%(levelname)s %(asctime)s %(application)s %(deployment)s %(replica)s "
                "%(request_id)s -- %(message)s")


@dataclass(frozen=True)
class LoggingConfig:
    """How replicas log: ``encoding`` ("TEXT" or "JSON"), ``log_level`` (a level name or
    number), ``logs_dir`` (a folder for the log files; default stderr), ``enable_access_log``
    (one line per request) and ``additional_log_standard_attrs`` (more ``LogRecord``
    attributes to include, e.g. ``["name"]``)."""

    encoding: str = "TEXT"
    log_level: int | str = "INFO"
    logs_dir: str | None = None
    enable_access_log: bool = True
    additional_log_standard_attrs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if str(self.encoding).upper() not in _ENCODINGS:
            raise ValueError(f"LoggingConfig(encoding={self.encoding!r}) must be one of "
                             f"{', '.join(_ENCODINGS)}")
        object.__setattr__(self, "encoding", str(self.encoding).upper())
        if isinstance(self.log_level, str) and not isinstance(
                logging.getLevelName(self.log_level.upper()), int):
            raise ValueError(f"LoggingConfig(log_level={self.log_level!r}) is not a level name "
                             "(DEBUG, INFO, WARNING, ERROR, CRITICAL) or a number")

    @classmethod
    def from_any(cls, value: Any) -> LoggingConfig:
        """A ``LoggingConfig`` from itself or from a dict of its fields (as Ray takes)."""
        if isinstance(value, LoggingConfig):
            return value
        if isinstance(value, dict):
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise ValueError(f"unknown logging_config keys {unknown}; known: "
                                 f"{', '.join(sorted(known))}")
            return cls(**value)
        raise TypeError(f"logging_config must be a LoggingConfig or a dict, got {value!r}")

    @property
    def level(self) -> int:
        """``log_level`` as a ``logging`` level number.

        >>> LoggingConfig(log_level="WARNING").level
        30
        """
        if isinstance(self.log_level, int):
            return self.log_level
        return int(logging.getLevelName(self.log_level.upper()))


class _JsonFormatter(logging.Formatter):
    def __init__(self, extra: list[str]) -> None:
        super().__init__()
        self._extra = extra

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "levelname": record.levelname, "asctime": self.formatTime(record),
            "message": record.getMessage(),
            **{key: getattr(record, key, "") for key in
               ("application", "deployment", "replica", "request_id", *self._extra)},
        }
        if record.exc_info:
            entry["exc_text"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


_installed: logging.Handler | None = None


def configure_replica_logging(config: LoggingConfig | None, replica_id: str) -> logging.Logger:
    """Set up the ``ember.serve`` logger of this replica process; returns it."""
    global _installed
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(f, RequestIdFilter) for f in logger.filters):
        logger.addFilter(RequestIdFilter())
    if config is None:
        return logger
    if _installed is not None:
        logger.removeHandler(_installed)
        _installed.close()
    handler: logging.Handler
    if config.logs_dir is not None:
        os.makedirs(config.logs_dir, exist_ok=True)
        name = "replica_" + "".join(c if c.isalnum() else "_" for c in replica_id) + ".log"
        handler = logging.FileHandler(os.path.join(config.logs_dir, name))
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    if config.encoding == "JSON":
        handler.setFormatter(_JsonFormatter(list(config.additional_log_standard_attrs)))
    else:
        extra = "".join(f" %({a})s" for a in config.additional_log_standard_attrs)
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT.replace(" --", extra + " --")))
    logger.addHandler(handler)
    logger.setLevel(config.level)
    logger.propagate = False
    _installed = handler
    return logger
