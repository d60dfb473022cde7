"""``ember/core/local/_transport.py``: length-prefixed frames between the driver and a worker."""

from __future__ import annotations

import itertools
import pickle
import socket
import threading
import time

from hypothesis import given
from hypothesis import strategies as st

from ember.core.local._transport import DriverChannel, WorkerChannel, _frame, _FrameReader


@given(st.lists(st.binary(max_size=300), max_size=10), st.data())
def test_frames_are_reassembled_however_the_stream_is_cut(payloads, data):
    stream = b"".join(_frame(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    reader = _FrameReader()

    frames = []
    start = 0
    for cut in [*cuts, len(stream)]:
        frames += reader.feed(stream[start:cut])
        start = cut

    assert frames == payloads


def test_incomplete_frame_waits_for_the_rest():
    reader = _FrameReader()
    frame = _frame(b"hello")

    assert reader.feed(frame[:-1]) == []
    assert reader.feed(frame[-1:]) == [b"hello"]


def test_messages_cross_a_socket_pair_in_order():
    driver_end, worker_end = socket.socketpair()
    driver = DriverChannel(driver_end)
    worker = WorkerChannel(worker_end)
    try:
        assert driver.send_many([("task", 1), ("task", 2)])
        assert [pickle.loads(worker.recv(timeout=5)) for _ in range(2)] == [("task", 1), ("task", 2)]
        worker.send_many([("done", 1, None, None, 0.0)])
        frames = []
        while not frames:
            frames = driver.read()
        assert [pickle.loads(f) for f in frames] == [("done", 1, None, None, 0.0)]
    finally:
        driver.close()
        worker_end.close()


def test_large_message_is_sent_in_parts_without_blocking_the_driver():
    driver_end, worker_end = socket.socketpair()
    driver = DriverChannel(driver_end)
    worker = WorkerChannel(worker_end)
    payload = b"x" * (8 << 20)  # far more than a socket buffer holds
    try:
        complete = driver.send_many([payload])
        assert complete is False  # the rest waits for the socket to drain

        received = []
        reader = threading.Thread(target=lambda: received.append(worker.recv(timeout=30)))
        reader.start()
        deadline = time.monotonic() + 30
        while not driver.flush() and time.monotonic() < deadline:
            time.sleep(0.001)
        reader.join(30)

        assert pickle.loads(received[0]) == payload
    finally:
        driver.close()
        worker_end.close()


def test_closed_peer_reads_as_end_of_stream():
    driver_end, worker_end = socket.socketpair()
    driver = DriverChannel(driver_end)
    worker = WorkerChannel(worker_end)

    driver.close()

    assert worker.recv(timeout=5) is None
    worker_end.close()


def test_messages_of_every_size_reach_the_driver_whole():
    driver_end, worker_end = socket.socketpair()
    driver = DriverChannel(driver_end)
    worker = WorkerChannel(worker_end)
    sent = [b"", b"x" * 10, b"y" * (1 << 16), b"z" * (3 << 20), b"w" * 100]
    try:
        writer = threading.Thread(target=lambda: worker.send_many([(m,) for m in sent]))
        writer.start()
        frames: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(frames) < len(sent) and time.monotonic() < deadline:
            more = driver.read()
            assert more is not None
            frames += more
        writer.join(30)

        assert [pickle.loads(f)[0] for f in frames] == sent
    finally:
        driver.close()
        worker_end.close()


def test_messages_keep_their_content_through_the_wire_format():
    from ember.core.local._protocol import EMPTY_ARGS, decode, encode

    small = (pickle.dumps(None, protocol=5), (), ())
    with_args = (pickle.dumps(((1,), {}), protocol=5), (), ())
    in_shm = (b"data", (("segment", 0, 8, 64),), ())
    messages = [
        ("call", 7, "ping", EMPTY_ARGS, (), [8], None, 16),
        ("call", 7, "grüße", EMPTY_ARGS, (), [8], None, -1),
        ("call", 7, "ping", with_args, (), [8], None, 16),
        ("call", 7, "ping", EMPTY_ARGS, ((small, False),), [8], None, 16),
        ("call", 7, "ping", EMPTY_ARGS, (), [8, 9], None, 16),
        ("call", 7, "ping", EMPTY_ARGS, (), [], 10, 16),
        ("call", 1 << 70, "ping", EMPTY_ARGS, (), [8], None, 16),  # beyond the short layout
        ("done", 7, (small,), None, 0.25),
        ("done", 7, (in_shm,), None, 0.25),
        ("done", 7, ((small[0], (), (3,)),), None, 0.25),
        ("done", 7, (small, small), None, 0.25),
        ("done", 7, None, small, 0.25),
        ("refs", [(1, 1)]),
        ("call", (1, 2, "ping", EMPTY_ARGS, [], [3], None)),  # a worker's call to an actor
    ]
    for message in messages:
        assert decode(encode(message)) == message
    # The two messages of a plain call travel in fewer bytes than their pickles.
    for message in messages[0], messages[7]:
        assert len(encode(message)) < len(pickle.dumps(message, protocol=5))


def test_spin_poll_returns_the_first_true_look_and_gives_up_after_its_time():
    from ember.core.local._transport import spin_poll

    looks = iter([None, [], [(3, 1)]])
    assert spin_poll(lambda: next(looks), 1.0) == [(3, 1)]

    start = time.perf_counter()
    assert spin_poll(lambda: [], 0.002) is None
    assert 0.002 <= time.perf_counter() - start < 0.5


def test_a_spinning_worker_end_gets_quick_and_late_frames_and_the_end_of_stream():
    driver_end, worker_end = socket.socketpair()
    driver = DriverChannel(driver_end)
    worker = WorkerChannel(worker_end)
    worker.spin = 0.05  # long enough that a frame sent from another thread lands inside it

    threading.Timer(0.001, driver.send_many, [[("call", 1)]]).start()
    assert pickle.loads(worker.recv()) == ("call", 1)

    threading.Timer(0.3, driver.send_many, [[("call", 2)]]).start()  # after the spin
    assert pickle.loads(worker.recv()) == ("call", 2)

    driver.send_many([("call", 3), ("call", 4)])  # two frames in one read
    assert [pickle.loads(worker.recv()) for _ in range(2)] == [("call", 3), ("call", 4)]

    driver.close()
    assert worker.recv() is None
    worker_end.close()


def test_spin_gate_keeps_spinning_while_it_pays_and_backs_off_when_it_does_not():
    from ember.core.local._transport import SpinGate

    gate = SpinGate()
    for _ in range(100):  # every spin catches its message: always spin
        assert gate.should_spin()
        gate.caught(True)

    pattern = []
    for _ in range(200):  # every spin misses: the gaps between tries double up to 64
        if gate.should_spin():
            pattern.append(1)
            gate.caught(False)
        else:
            pattern.append(0)
    tries = [i for i, tried in enumerate(pattern) if tried]
    assert [b - a - 1 for a, b in itertools.pairwise(tries)][:8] == [1, 2, 4, 8, 16, 32, 64, 64]

    while not gate.should_spin():
        pass
    gate.caught(True)  # one catch: back to spinning every time
    assert all(gate.should_spin() for _ in range(10))
