"""Retrying storage calls through transient faults: the policy (pure) and the loop that runs it.

A storage call that fails with a *transient* error (the connection was refused or reset, a
timeout, throttling, an HTTP 5xx) is tried again after an exponentially growing wait, until the
policy's time budget is spent; then it fails with ``StorageError`` naming the call, the tries and
the last error. Anything else (a missing file, a permission error) fails at once. s3fs and
botocore retry a little on their own below this; this layer rides out outages of seconds to a
minute.
"""

from __future__ import annotations

import errno
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from ember.errors import StorageError

logger = logging.getLogger("ember.train")

T = TypeVar("T")

# Names of exception classes (anywhere in an exception's MRO) that mean "the request did not get
# through, try again", from the libraries fsspec's filesystems use: botocore, aiohttp, urllib3,
# requests, http.client. Matched by name so that none of them has to be imported.
TRANSIENT_CLASS_NAMES = frozenset({
    "ConnectionError", "EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError",
    "ConnectTimeoutError", "HTTPClientError", "ProxyConnectionError", "ResponseStreamingError",
    "ClientConnectionError", "ClientConnectorError", "ServerDisconnectedError",
    "ServerTimeoutError", "ClientPayloadError", "ClientOSError", "IncompleteRead",
    "RemoteDisconnected", "ProtocolError", "ChunkedEncodingError", "Timeout", "FSTimeoutError",
})
# Error codes that S3-compatible services and Google Cloud Storage answer when throttling or
# briefly unavailable.
TRANSIENT_ERROR_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "ThrottledException", "RequestTimeout",
    "RequestTimeoutException", "RequestLimitExceeded", "TooManyRequestsException",
    "ServiceUnavailable", "InternalError", "BandwidthLimitExceeded", "EC2ThrottledException",
    "PriorRequestNotComplete", "ProvisionedThroughputExceededException",
})
TRANSIENT_ERRNOS = frozenset({
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EPIPE,
    errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.EAGAIN,
})
# Errors that say something definite about the path, and ours (already retried where that
# helps): never worth another try.
_DEFINITE = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
             NotADirectoryError, StorageError)


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often to retry a storage call that failed with a transient error.

    The n-th retry waits ``first_delay_s * 2**(n-1)``, at most ``max_delay_s``, scaled by a
    jitter factor between 0.5 and 1 (so that many workers hit by one outage do not retry in
    step); no retry starts past ``timeout_s`` after the first try began. ``timeout_s=0``: no
    retries.
    """

    timeout_s: float = 60.0
    first_delay_s: float = 0.5
    max_delay_s: float = 8.0

    def __post_init__(self) -> None:
        if self.timeout_s < 0 or self.first_delay_s <= 0 or self.max_delay_s < self.first_delay_s:
            raise ValueError(
                f"RetryPolicy(timeout_s={self.timeout_s}, first_delay_s={self.first_delay_s}, "
                f"max_delay_s={self.max_delay_s}) needs timeout_s >= 0 and "
                "0 < first_delay_s <= max_delay_s")

    def delay(self, failures: int, elapsed_s: float, jitter: float = 1.0) -> float | None:
        """Seconds to wait before the next try, after ``failures`` failed tries and
        ``elapsed_s`` seconds since the first try began; ``None``: give up. ``jitter`` in
        [0, 1] picks the wait between half and all of the backoff."""
        if failures < 1:
            raise ValueError(f"failures={failures} must be >= 1 (delay is asked after a failure)")
        backoff = min(self.max_delay_s, self.first_delay_s * 2.0 ** min(failures - 1, 60))
        wait = backoff * (0.5 + 0.5 * min(1.0, max(0.0, jitter)))
        if elapsed_s + wait > self.timeout_s:
            return None
        return wait


def is_transient(exc: BaseException) -> bool:
    """Whether a storage call that raised ``exc`` may succeed if tried again: a connection or
    timeout error, or an answer that says "throttled" / "unavailable" (HTTP 429 or 5xx)."""
    if isinstance(exc, _DEFINITE):
        return False
    return any(_transient_one(e) for e in _chain(exc))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 16:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _transient_one(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
        return True
    if any(cls.__name__ in TRANSIENT_CLASS_NAMES for cls in type(exc).__mro__):
        return True
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore's ClientError
        code = (response.get("Error") or {}).get("Code")
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        if code in TRANSIENT_ERROR_CODES or _transient_status(status):
            return True
    elif response is not None and _transient_status(getattr(response, "status_code", None)):
        return True  # requests' HTTPError
    return any(_transient_status(getattr(exc, name, None)) for name in ("status", "code"))


def _transient_status(status: Any) -> bool:
    return isinstance(status, int) and not isinstance(status, bool) and (
        status == 429 or 500 <= status <= 599)


def call_with_retries(
    fn: Callable[[], T],
    what: str,
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    jitter: Callable[[], float] = random.random,
    before_retry: Callable[[], None] | None = None,
) -> T:
    """``fn()``, tried again after transient errors as ``policy`` says (each retry logged).

    Raises ``StorageError`` naming ``what`` once the policy gives up, and for errors from a
    storage library that are not ``OSError`` (botocore's, for one); ``OSError`` subclasses that
    say something definite (``FileNotFoundError``, ``PermissionError``...) pass through as
    they are.
    """
    start = clock()
    failures = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                if isinstance(exc, OSError):
                    raise
                raise StorageError(f"{what} failed: {type(exc).__name__}: {exc}") from exc
            failures += 1
            elapsed = clock() - start
            wait = policy.delay(failures, elapsed, jitter())
            if wait is None:
                raise StorageError(
                    f"{what} failed {failures} time(s) over {elapsed:.1f} s with a transient "
                    f"error, the last: {type(exc).__name__}: {exc}. The storage did not answer "
                    "in time: check that it is reachable, or give it longer with "
                    f"FailureConfig(storage_timeout_s=...) (now {policy.timeout_s:g})") from exc
            logger.warning("%s failed (%s: %s); retrying in %.1f s (retry %d, %.1f s of %g s "
                           "spent)", what, type(exc).__name__, exc, wait, failures, elapsed,
                           policy.timeout_s)
            if before_retry is not None:
                before_retry()
            sleep(wait)
