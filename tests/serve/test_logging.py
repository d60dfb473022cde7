"""``LoggingConfig`` and the replica's ``ember.serve`` logger (records carry the request id)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from ember.serve._logging import LOGGER_NAME, LoggingConfig, configure_replica_logging
from ember.serve.context import _RequestContext, _serve_request_context


@pytest.fixture
def serve_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger(LOGGER_NAME)
    saved = (list(logger.handlers), list(logger.filters), logger.level, logger.propagate)
    try:
        yield logger
    finally:
        for handler in logger.handlers:
            if handler not in saved[0]:
                handler.close()
        logger.handlers, logger.filters, logger.level, logger.propagate = (
            saved[0], saved[1], saved[2], saved[3])


def test_logging_config_is_checked() -> None:
    assert LoggingConfig.from_any({"log_level": "debug"}).level == logging.DEBUG
    assert LoggingConfig(encoding="json").encoding == "JSON"
    with pytest.raises(ValueError, match="encoding"):
        LoggingConfig(encoding="XML")
    with pytest.raises(ValueError, match="log_level"):
        LoggingConfig(log_level="LOUD")
    with pytest.raises(ValueError, match="unknown logging_config keys"):
        LoggingConfig.from_any({"level": "INFO"})


@pytest.mark.parametrize("encoding", ["TEXT", "JSON"])
def test_replica_log_lines_carry_the_request_id(
    serve_logger: logging.Logger, tmp_path: Path, encoding: str
) -> None:
    config = LoggingConfig(encoding=encoding, log_level="INFO", logs_dir=str(tmp_path))
    logger = configure_replica_logging(config, "app#Model#0")
    token = _serve_request_context.set(_RequestContext(request_id="req-7"))
    try:
        logger.info("hello %s", "there")
        logger.debug("not at INFO")
    finally:
        _serve_request_context.reset(token)
    for handler in logger.handlers:
        handler.flush()
    (log,) = tmp_path.glob("*.log")
    lines = log.read_text().splitlines()
    assert len(lines) == 1
    if encoding == "JSON":
        entry = json.loads(lines[0])
        assert (entry["request_id"], entry["message"]) == ("req-7", "hello there")
    else:
        assert "req-7" in lines[0] and lines[0].endswith("hello there")
