"""syncnet.background.ReadAhead: a producer thread a bounded number of items ahead."""

import threading
import time

import pytest

from syncnet.background import ReadAhead


def test_items_arrive_in_order_and_the_producer_stays_within_depth():
    produced = []

    def items():
        for number in range(20):
            produced.append(number)
            yield number

    seen = []
    for number in ReadAhead(items(), depth=3):
        time.sleep(0.005)
        # the producer has made at most: what was consumed, 3 waiting, 1 blocked on a full queue
        assert len(produced) <= len(seen) + 1 + 3 + 1
        seen.append(number)
    assert seen == list(range(20))


def test_the_producers_error_is_raised_to_the_consumer():
    def items():
        yield 1
        raise ValueError("frame 1: bad")

    consumed = []
    with pytest.raises(ValueError, match="frame 1: bad"):
        for item in ReadAhead(items()):
            consumed.append(item)
    assert consumed == [1]


def test_stop_ends_the_producer_and_closes_its_generator():
    closed = threading.Event()

    def items():
        try:
            number = 0
            while True:
                yield number
                number += 1
        finally:
            closed.set()

    read_ahead = ReadAhead(items(), depth=2)
    for number in read_ahead:
        if number == 5:
            break
    read_ahead.stop()
    assert closed.wait(timeout=2)


def test_a_newer_item_replaces_the_waiting_one_when_asked():
    started = threading.Event()

    def items():
        yield from range(10)
        started.set()

    read_ahead = ReadAhead(items(), depth=1, replaces_waiting=lambda number: number > 0)
    assert started.wait(timeout=2)  # everything produced before anything was consumed
    assert list(read_ahead) == [9] and read_ahead.dropped == 9


def test_leaving_a_with_block_stops_the_producer():
    closed = threading.Event()

    def items():
        try:
            yield from range(1000)
        finally:
            closed.set()

    with ReadAhead(items()) as read_ahead:
        assert next(iter(read_ahead)) == 0
    assert closed.wait(timeout=2)
