"""The storage retry policy (pure) and the loop that runs it, with a fake clock and sleep."""

from __future__ import annotations

import errno
import logging

import pytest

from ember.errors import CorruptCheckpointError, StorageError
from ember.train._retry import RetryPolicy, call_with_retries, is_transient


def test_delays_double_up_to_the_cap_and_stop_at_the_deadline():
    policy = RetryPolicy(timeout_s=30, first_delay_s=0.5, max_delay_s=4)
    assert [policy.delay(n, 0.0) for n in range(1, 7)] == [0.5, 1, 2, 4, 4, 4]
    assert policy.delay(3, 27.9) == 2  # ends at 29.9: still inside the budget
    assert policy.delay(3, 28.1) is None  # would start past 30 s
    assert RetryPolicy(timeout_s=0).delay(1, 0.0) is None  # no retries at all


def test_jitter_spreads_a_wait_between_half_and_all_of_it():
    policy = RetryPolicy(timeout_s=100, first_delay_s=1, max_delay_s=8)
    assert policy.delay(4, 0.0, jitter=0.0) == 4
    assert policy.delay(4, 0.0, jitter=1.0) == 8
    assert policy.delay(4, 0.0, jitter=0.5) == 6


@pytest.mark.parametrize("make", [
    lambda: RetryPolicy(timeout_s=-1),
    lambda: RetryPolicy(first_delay_s=0),
    lambda: RetryPolicy(first_delay_s=2, max_delay_s=1),
])
def test_bad_policies_are_refused(make):
    with pytest.raises(ValueError, match="RetryPolicy"):
        make()


def _botocore_errors():
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    def client_error(code, status):
        return ClientError({"Error": {"Code": code, "Message": "m"},
                            "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")

    transient = [EndpointConnectionError(endpoint_url="http://x"),
                 ConnectTimeoutError(endpoint_url="http://x"),
                 ReadTimeoutError(endpoint_url="http://x"),
                 client_error("SlowDown", 503), client_error("Throttling", 400),
                 client_error("InternalError", 500), client_error("Whatever", 502)]
    lasting = [NoCredentialsError(), client_error("AccessDenied", 403),
               client_error("NoSuchBucket", 404)]
    return transient, lasting


def test_transient_errors_are_told_from_lasting_ones():
    transient, lasting = _botocore_errors()
    wrapped = OSError(errno.EIO, "s3fs translated it")
    wrapped.__cause__ = transient[3]  # s3fs turns a ClientError into an OSError, chained
    transient += [ConnectionRefusedError(), ConnectionResetError(), TimeoutError(),
                  OSError(errno.ECONNRESET, "reset"), wrapped]
    lasting += [FileNotFoundError("gone"), PermissionError("no"), ValueError("bad"),
                StorageError("already retried"), CorruptCheckpointError("damaged")]
    # a missing file whose cause happens to be a connection error is still a missing file
    missing = FileNotFoundError("gone")
    missing.__cause__ = ConnectionResetError()
    lasting.append(missing)

    assert [e for e in transient if not is_transient(e)] == []
    assert [e for e in lasting if is_transient(e)] == []


class FakeTime:
    def __init__(self):
        self.now = 100.0
        self.sleeps = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_retries_until_success_and_logs_each_retry(caplog):
    time = FakeTime()
    outcomes = [ConnectionResetError("reset"), ConnectionRefusedError("refused"), "done"]

    def call():
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    with caplog.at_level(logging.WARNING, logger="ember.train"):
        result = call_with_retries(call, "uploading 'w.bin'", RetryPolicy(timeout_s=10),
                                   sleep=time.sleep, clock=time.clock, jitter=lambda: 1.0)
    assert result == "done" and time.sleeps == [0.5, 1.0]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and "uploading 'w.bin' failed (ConnectionResetError" in messages[0]


def test_gives_up_with_a_storage_error_naming_the_call_and_the_fix():
    time = FakeTime()
    calls = []

    def call():
        calls.append(time.now)
        raise ConnectionRefusedError("connection refused")

    with pytest.raises(StorageError, match=r"listing 's3://b/run' failed 4 time\(s\) over "
                                           r"3\.5 s.*connection refused.*storage_timeout_s"
                       ) as info:
        call_with_retries(call, "listing 's3://b/run'", RetryPolicy(timeout_s=5),
                          sleep=time.sleep, clock=time.clock, jitter=lambda: 1.0)
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    assert calls == [100.0, 100.5, 101.5, 103.5]  # the next wait (4 s) would end past 5 s


def test_lasting_errors_fail_at_once():
    time = FakeTime()
    _, (no_credentials, *_) = _botocore_errors()

    def missing():
        raise FileNotFoundError("s3://b/run/x")

    def foreign():
        raise no_credentials

    with pytest.raises(FileNotFoundError):  # an OSError that says what is wrong: as it is
        call_with_retries(missing, "reading x", RetryPolicy(), sleep=time.sleep,
                          clock=time.clock)
    with pytest.raises(StorageError, match="reading x failed: NoCredentialsError") as info:
        call_with_retries(foreign, "reading x", RetryPolicy(), sleep=time.sleep,
                          clock=time.clock)
    assert info.value.__cause__ is no_credentials
    assert time.sleeps == []
