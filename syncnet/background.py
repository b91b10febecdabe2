"""Running an iterator in a background thread, a few items ahead of its consumer."""

import queue
import threading
from collections.abc import Callable, Iterator


class ReadAhead:
    """Iterates over `items` produced by a daemon thread, at most `depth` items ahead; the
    producer's exception is raised here. Leaving the loop early? Call `stop()` (or use it as a
    context manager, which does), and the producer ends at its next item.

    `replaces_waiting(item)`: when True for a new item, it replaces the item waiting to be
    consumed (counted in `dropped`) instead of waiting for room: a live stream stays near its live
    edge when the consumer falls behind (with depth 1).
    """

    _END = object()

    def __init__(
        self, items: Iterator, depth: int = 1, replaces_waiting: Callable[[object], bool] | None = None, name: str = "syncnet-read-ahead"
    ):
        self.waiting = queue.Queue(maxsize=depth)
        self.stopped = threading.Event()
        self.dropped = 0
        self.replaces_waiting = replaces_waiting
        threading.Thread(target=self._produce, args=(items,), name=name, daemon=True).start()

    def _produce(self, items):
        try:
            for item in items:
                if self.replaces_waiting is not None and self.replaces_waiting(item):
                    try:
                        self.waiting.get_nowait()  # only this thread puts, so the put below cannot block
                        self.dropped += 1
                    except queue.Empty:
                        pass
                if not self._hand_over(item):
                    return
            self._hand_over(self._END)
        except BaseException as error:  # the consumer raises it
            self._hand_over(error)
        finally:
            if hasattr(items, "close"):  # a generator left early closes what it opened (files, decoders)
                items.close()

    def _hand_over(self, item) -> bool:
        while not self.stopped.is_set():
            try:
                self.waiting.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def stop(self):
        """Let the producer end (at its next item)."""
        self.stopped.set()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def __iter__(self) -> Iterator:
        """The items, until they end or `stop()` is called (checked every 0.2 s)."""
        while not self.stopped.is_set():
            try:
                item = self.waiting.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
